"""reuse_freed_memory: large arrays come from malloc's heap, which keeps them once freed."""

import json
import platform

import pytest
from helpers import run_python

LIBC, LIBC_VERSION = platform.libc_ver()
# mallinfo2, which the test reads, came with glibc 2.33.
GLIBC = (
    platform.system() == "Linux"
    and LIBC == "glibc"
    and tuple(int(v) for v in LIBC_VERSION.split(".")[:2]) >= (2, 33)
)

# glibc's own account (mallinfo2): while a 64 MiB array is alive, is it one of malloc's
# mmapped blocks (hblkhd) or part of its heap; once freed, does the heap keep it (fordblks)?
WHERE_A_LARGE_ARRAY_LIVES = """
import ctypes, json
import numpy as np
from minialexnet.allocator import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
took = reuse_freed_memory() if REUSE else None
array = np.ones(16 << 20, dtype=np.float32)
alive = libc.mallinfo2()
del array
freed = libc.mallinfo2()
print(json.dumps({"took": took, "mmapped": alive.hblkhd, "kept": freed.fordblks}))
"""


def where_a_large_array_lives(reuse: bool) -> dict:
    code = WHERE_A_LARGE_ARRAY_LIVES.replace("REUSE", repr(reuse))
    return json.loads(run_python(code).strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="reads glibc >= 2.33's mallinfo2")
def test_a_freed_large_array_stays_in_the_heap_for_the_next_one():
    size = 64 << 20
    default = where_a_large_array_lives(reuse=False)
    assert default["mmapped"] >= size  # its own mmap, unmapped when freed
    assert default["kept"] < size
    reused = where_a_large_array_lives(reuse=True)
    assert reused["took"] is True
    assert reused["mmapped"] < size  # served from the heap ...
    assert reused["kept"] >= size  # ... and kept there once freed


def test_the_engine_asks_for_it_and_elsewhere_it_changes_nothing(monkeypatch):
    from minialexnet import allocator, engine

    calls = []
    monkeypatch.setattr(engine, "reuse_freed_memory", lambda: calls.append(1) or True)
    engine.CPUEngine(_tiny_model())
    assert calls == [1]
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert allocator.reuse_freed_memory() is False


def _tiny_model():
    import numpy as np

    from minialexnet.model import AlexNet

    return AlexNet(3, "tiny", rng=np.random.default_rng(0))
