"""The paper's two-GPU model-parallel split (§3.2), on any two devices: ``TwoTowerAlexNet``.

**What the paper did, and why.** A GTX 580 had 3 GB of memory, too little for the network
that 1.2 million training images could support, so Krizhevsky et al. spread one network over
two GPUs. Each GPU (here: each *tower*) holds half of the kernels (or neurons) of every
layer, and the GPUs talk only in certain layers: the kernels of conv3 read all of conv2's
maps, but those of conv4 read only the conv3 maps on their own GPU; conv2 and conv5 are
likewise "own GPU only", while conv3, fc6, fc7 and fc8 read both GPUs' outputs (conv1 reads
the whole image on both). The connectivity pattern is a trade-off they tuned so that the
cross-GPU traffic stayed an acceptable fraction of the computation. Compared with a net that
has half as many kernels in each convolutional layer on one GPU, the two-GPU net lowered the
top-1 / top-5 error rates by 1.7 / 1.2 points, and trained slightly faster. (The comparison
is with a *smaller* one-GPU net; the split itself changes no arithmetic, see below.)

**Connectivity** (the paper's network; "mini" and "tiny" have the same shape, fewer
channels; each tower keeps the single-device layer names, in the order of
``AlexNet.layers``)::

                      image (N, 3, 227, 227): both towers read all of it
                 .-------------------'-------------------.
      tower 0 (device 0)                        tower 1 (device 1)
      conv1  48 of the 96 filters               conv1  the other 48
      relu1, norm1 (own 48 maps), pool1         relu1, norm1 (own 48 maps), pool1
      conv2  128 filters on own 48 maps         conv2  128 filters on own 48 maps
      relu2, norm2 (own 128), pool2             relu2, norm2 (own 128), pool2
                 '----------- gather: 256 maps ----------'
      conv3  192 filters on all 256 maps        conv3  192 filters on all 256 maps
      conv4  192 on own 192 maps                conv4  192 on own 192 maps
      conv5  128 on own 192, pool5, flatten     conv5  128 on own 192, pool5, flatten
                 '---------- gather: 9216 features --------'
      fc6    2048 units on all 9216, drop6      fc6    2048 units on all 9216, drop6
                 '---------- gather: 4096 features --------'
      fc7    2048 units on all 4096, drop7      fc7    2048 units on all 4096, drop7
                 '---------- gather: 4096 features --------'
      fc8    500 classes on all 4096            fc8    500 classes on all 4096
                 '---- concatenate: logits (N, 1000) ------'

Between two gathers each tower runs on its own (a *stage*): the paper's network has five
stages, so one forward pass needs four gathers and one final concatenation.

**Why it equals grouped convolution.** The single-device ``AlexNet`` emulates the split:
conv2, conv4 and conv5 have ``groups=2`` and both LRNs ``groups=2``. A grouped convolution's
filters ``[g*F/2, (g+1)*F/2)`` read only the channels ``[g*C/2, (g+1)*C/2)``, which are
exactly the maps of tower ``g``, so tower ``g``'s ungrouped conv2 with the single-device
weights ``W[g*F/2:(g+1)*F/2]`` (shape (F/2, C/2, KH, KW), unchanged) computes the same
numbers; a ``groups=2`` LRN never lets a window cross from one half into the other, so it is
each tower's ``groups=1`` LRN on its half. For the layers that read both towers (conv1, conv3,
fc6, fc7, fc8) tower ``g`` holds the rows ``W[g*F/2:(g+1)*F/2]`` and reads the gathered input
(the towers' outputs concatenated along channels, tower 0 first), which is the single-device
input itself, because the single-device channels are ordered tower 0's then tower 1's. (After
``Flatten``, a tower's features are a contiguous block of the single-device vector for the
same reason: flattening is channel-major.) Every parameter is therefore split along its first
axis and none is duplicated: ``state_dict()`` concatenates the towers' pieces back into the
single-device arrays, and checkpoints are shared between the two models.

**Backward.** A layer that reads both towers makes each tower's output depend on the whole
gathered input ``X``, so the gradient reaching ``X`` is a sum over towers::

    dL/dX = sum_t  dL/dX |via tower t  =  sum_t  W_t^T dY_t        (= W^T dY on one device)

Each tower back-propagates its own stage to a full-size ``dX_t``; tower ``t``'s share of the
previous stage's output gradient is ``sum_u dX_u[:, columns of t]`` (a reduce-scatter; on two
GPUs, one peer-to-peer read each way). For conv1 the "input" is the image, and
``dx = dX_0 + dX_1``. Odd widths are split as evenly as possible (fc8 with 5 classes: 3 + 2
rows), which is exact for every layer that reads both towers; layers that stay on their own
tower (grouped convolutions, grouped LRN) need the halves to be equal.

**Devices** (``minialexnet.parallel.devices``, passed in by name or as objects): two CPU
threads by default (``"cpu:0,cpu:1"``), each tower's stage submitted to a persistent
two-worker thread pool (``minialexnet.parallel.runner``; OpenBLAS and Numba release the GIL),
or ``mode="sequential"`` (one tower after the other, the same numbers) for teaching and
debugging. On a 2-core machine expect no speed-up: OpenBLAS and Numba already use both cores
for one tower's work, and two towers at once oversubscribe them (with
``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1`` each tower gets one core, as each GPU was one
device). The split pays off where the devices are really separate: two GPUs.

**GPUs**: ``"cuda:0,cuda:1"`` puts one tower on each GPU (``minialexnet.gpu.devices``),
``"cuda:0,cuda:0"`` both on one GPU with a stream each. This class then keeps every
activation on the GPUs but speaks NumPy at its edges (host logits, host dx) and leaves the
update to ``minialexnet.optim.SGD``, which cannot update device arrays. The GPU engine
``minialexnet.gpu.CudaTwoTowerAlexNet`` drives a ``TwoTowerAlexNet`` on GPU towers through
``forward_stages`` / ``backward_stages`` and adds the loss, backward and the §5 update on the
devices, as ``CudaAlexNet`` does on one GPU.

Dropout draws from one generator per tower, reseeded from ``self.rng`` at every training
forward pass, so the model's ``rng`` alone fixes every mask (and a resumed run repeats them).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import numpy as np

from minialexnet.checks import check_array
from minialexnet.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Tanh,
)
from minialexnet.model import AlexNet
from minialexnet.parallel.devices import CPUDevice, Device, parse_devices
from minialexnet.parallel.runner import TowerRunner

#: The paper's split; the grouped layers of ``AlexNet`` (groups=2) fix it.
NUM_TOWERS = 2


def split_sizes(total: int, parts: int, what: str) -> list[int]:
    """Cut ``total`` units into ``parts`` consecutive blocks as evenly as possible, the larger
    blocks first: ``split_sizes(1000, 2) == [500, 500]``, ``split_sizes(5, 2) == [3, 2]``."""
    if total < parts:
        raise ValueError(
            f"{what} has {total} unit(s), fewer than the {parts} towers: every "
            f"tower needs at least one; give it at least {parts}"
        )
    base, extra = divmod(total, parts)
    return [base + (1 if t < extra else 0) for t in range(parts)]


def _offsets(sizes: list[int]) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive blocks of the given sizes: [3, 2] -> [(0, 3), (3, 5)]."""
    stops = np.cumsum(sizes).tolist()
    return [(stop - size, stop) for size, stop in zip(sizes, stops)]


class Tower:
    """One device's share of every layer (§3.2), cut into stages at the gather points.

    ``stages[s]`` is an ``OrderedDict`` name -> layer (the single-device names: ``conv1``,
    ``relu1``, ...); stage 0 starts at conv1, each later stage at a layer that reads both
    towers (conv3, fc6, fc7, fc8). ``layers`` lists every layer of the tower in order.
    """

    def __init__(self, index: int, device: Device, stages: list) -> None:
        self.index = index
        self.device = device
        self.stages = stages
        self.layers = OrderedDict(
            (name, layer) for stage in stages for name, layer in stage.items()
        )

    def forward_stage(self, s: int, pieces: list, train: bool):
        """Gather ``pieces`` (every tower's output of stage s-1 in tower order, or ``[x]``
        for stage 0) along axis 1 on this device, run stage ``s``; returns this tower's
        output, e.g. (N, 128, 13, 13) after conv2/pool2 of the paper's network."""
        x = self.device.concatenate(pieces)
        for layer in self.stages[s].values():
            x = layer.forward(x, train=train)
        return x

    def backward_stage(self, s: int, grads: list, start: int, stop: int, need_dx: bool = True):
        """This tower's output gradient is ``sum_u grads[u][:, start:stop]`` (every tower's
        gradient w.r.t. the gathered input of stage s+1, or ``[dlogits]``); back-propagate it
        through stage ``s`` and return the gradient w.r.t. the stage's whole gathered input.

        ``need_dx=False`` (a training step, stage 0: nobody needs the image's gradient)
        asks the stage's first layer (conv1, which takes ``backward(dy, need_dx)`` on the CPU
        and the GPU) to skip its input gradient; the result is then None."""
        dy = self.device.sum_slices(grads, start, stop)
        layers = list(self.stages[s].values())
        for layer in reversed(layers[1:]):
            dy = layer.backward(dy)
        return layers[0].backward(dy) if need_dx else layers[0].backward(dy, need_dx=False)

    def __repr__(self) -> str:
        return f"Tower({self.index}, {self.device}, {len(self.layers)} layers)"


class TwoTowerAlexNet:
    """AlexNet split over two devices as in §3.2 (see the module docstring); the model protocol.

    ``TwoTowerAlexNet(num_classes, variant, rng, devices=..., mode=..., **options)`` builds a
    fresh ``AlexNet(num_classes, variant, rng, **options)`` and splits it;
    ``TwoTowerAlexNet.from_model(model, devices=..., mode=...)`` splits an existing one (its
    weights are copied: the two models are independent afterwards).

    Parameters
    ----------
    devices : ``"cpu:0,cpu:1"`` (default), ``"cpu"``, a list of names or of
        ``minialexnet.parallel.Device`` objects (two)
    mode : ``"threads"`` (the towers' stages run at the same time) or ``"sequential"``
        (one tower after the other in the calling thread; identical results)
    rng : the generator that seeds the towers' dropout (default: the model's ``rng``)

    The same protocol as ``AlexNet``, so ``minialexnet.optim.SGD`` and a training loop drive
    it unchanged: ``forward(x, train)`` -> logits (N, num_classes) from x (N, 3, S, S)
    float32 (float64 after ``astype``); ``backward(dlogits)`` -> dx (N, 3, S, S);
    ``named_parameters()`` yields ``("tower0.conv1.W", W, dW)``, ``("tower1.conv1.W", ...)``.
    ``state_dict()`` / ``load_state_dict()`` speak the *single-device* names (``conv1.W``),
    so checkpoints are shared with ``AlexNet``; ``merge`` / ``split`` convert any dict of
    per-tower arrays (parameters, gradients, SGD momentum buffers) to single-device names
    and back. Attributes as ``AlexNet``: ``config`` (the single-device model's),
    ``num_classes``, ``input_size``, ``rng``; plus ``towers``, ``devices``, ``mode``.

    Call ``close()`` (or use ``with``) to stop the worker threads early; otherwise they stop
    when the model is garbage-collected or Python exits.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "paper",
        rng: np.random.Generator | None = None,
        *,
        devices="cpu:0,cpu:1",
        mode: str = "threads",
        **options,
    ) -> None:
        self._split(AlexNet(num_classes, variant, rng, **options), devices, mode, rng)

    @classmethod
    def from_model(
        cls,
        model,
        devices="cpu:0,cpu:1",
        mode: str = "threads",
        rng: np.random.Generator | None = None,
    ) -> TwoTowerAlexNet:
        """Split a single-device ``AlexNet`` (any variant, float32 or float64) into towers."""
        net = cls.__new__(cls)
        net._split(model, devices, mode, rng)
        return net

    # -- construction ---------------------------------------------------------------------

    def _split(self, model, devices, mode, rng) -> None:
        if not hasattr(model, "layers") or not hasattr(model, "config"):
            raise TypeError(
                f"TwoTowerAlexNet.from_model expects a minialexnet.model.AlexNet, "
                f"got {type(model).__name__}"
            )
        self.devices = parse_devices(devices)
        if len(self.devices) != NUM_TOWERS:
            raise ValueError(
                f"the split of §3.2 runs on exactly {NUM_TOWERS} devices, got "
                f"{len(self.devices)}: {[str(d) for d in self.devices]}; write "
                f"e.g. devices='cpu:0,cpu:1'"
            )
        self.config = dict(model.config)
        self.variant = model.variant
        self.num_classes = model.num_classes
        self.input_size = model.input_size
        self.rng = rng if rng is not None else model.rng
        self.mode = mode
        self.runner = TowerRunner(
            mode,
            workers=NUM_TOWERS,
            guard_numba=any(isinstance(d, CPUDevice) for d in self.devices),
        )
        stages, in_shapes, self._params, self._rows, self._stage_widths = _split_layers(
            model, NUM_TOWERS
        )
        self.towers = [
            Tower(
                t,
                device,
                [
                    OrderedDict(
                        (name, device.adopt(layer, in_shapes[t][name]))
                        for name, layer in stage.items()
                    )
                    for stage in stages[t]
                ],
            )
            for t, device in enumerate(self.devices)
        ]
        # tower parameter name -> (tower index, layer name, key), e.g. "tower1.fc8.W" ->
        # (1, "fc8", "W")
        self._where = {
            part: (t, layer, key)
            for layer, key, _, parts in self._params.values()
            for t, (part, _, _) in enumerate(parts)
        }
        self._logits_shape = None

    # -- the model protocol ---------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (N, num_classes) of images x (N, 3, S, S), ``S = input_size``; float32
        (float64 after ``astype``). Every tower reads all of x; ``train=True`` turns dropout on,
        each tower drawing its masks from its own generator."""
        check_array(x, "TwoTowerAlexNet", 4, "(N, 3, H, W)", channels=3)
        if x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"this AlexNet ({self.config['variant']!r}) takes "
                f"{self.input_size}x{self.input_size} crops, got images of "
                f"{x.shape[2]}x{x.shape[3]}; crop or resize the input first"
            )
        pieces = self.forward_stages(x, train)
        logits = np.concatenate(
            [tower.device.to_host(piece) for tower, piece in zip(self.towers, pieces)], axis=1
        )
        self._logits_shape = logits.shape
        return logits

    __call__ = forward

    def backward(self, dlogits: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Back-propagate dL/dlogits (N, num_classes); sets every tower layer's grads and
        returns dL/dx (N, 3, S, S), the sum of both towers' conv1 input gradients (None with
        ``need_dx=False``: a training step, where conv1 then skips its input gradient)."""
        if self._logits_shape is None:
            raise RuntimeError(
                "TwoTowerAlexNet.backward called before forward: run "
                "forward(x) first, then backward(dlogits)"
            )
        check_array(dlogits, "TwoTowerAlexNet.backward", 2, "(N, num_classes)")
        if dlogits.shape != self._logits_shape:
            raise ValueError(
                f"TwoTowerAlexNet.backward expects dlogits of the logits' shape "
                f"{self._logits_shape}, got {dlogits.shape}"
            )
        grads = self.backward_stages(dlogits, need_dx)
        if not need_dx:
            return None
        dx = np.array(self.towers[0].device.to_host(grads[0]), copy=True)
        for tower, g in zip(self.towers[1:], grads[1:]):
            dx += tower.device.to_host(g)
        return dx

    def forward_stages(self, x, train: bool) -> list:
        """Every stage in turn, the towers of a stage at once (``self.runner``); returns each
        tower's output of the last stage (its piece of the logits), on its device. ``x``: the
        images, on the host or (a GPU engine's) device. ``forward`` and the GPU engine
        (``minialexnet.gpu.CudaTwoTowerAlexNet``, which keeps the logits on the GPUs) call it."""
        if train:
            self._reseed_dropout()
        pieces = [x]
        for s in range(len(self._stage_widths)):
            pieces = self.runner.map(
                [
                    partial(tower.device.run, partial(tower.forward_stage, s, pieces, train))
                    for tower in self.towers
                ]
            )
        return pieces

    def backward_stages(self, dlogits, need_dx: bool = True) -> list:
        """The stages in reverse order from ``dlogits`` (host or device); returns each tower's
        gradient w.r.t. the image (None with ``need_dx=False``, see ``Tower.backward_stage``)."""
        grads = [dlogits]
        for s in reversed(range(len(self._stage_widths))):
            grads = self.runner.map(
                [
                    partial(
                        tower.device.run,
                        partial(tower.backward_stage, s, grads, start, stop, need_dx or s > 0),
                    )
                    for tower, (start, stop) in zip(self.towers, _offsets(self._stage_widths[s]))
                ]
            )
        return grads

    def named_parameters(self):
        """Yield ``(name, param, grad)``: per single-device parameter in forward order, each
        tower's piece, e.g. ``("tower0.conv1.W", W (48, 3, 11, 11), dW)``. The arrays are the
        layers' own, so ``SGD`` updates them in place; ``grad`` is zeros before a backward."""
        for layer_name, key, _, parts in self._params.values():
            for tower, (part, _, _) in zip(self.towers, parts):
                layer = tower.layers[layer_name]
                yield part, layer.params[key], layer.grads.get(key)

    def merge(self, arrays: dict) -> OrderedDict[str, np.ndarray]:
        """Single-device arrays from per-tower host arrays: ``{"tower0.conv1.W": (48, ...),
        "tower1.conv1.W": (48, ...)}`` -> ``{"conv1.W": (96, ...)}`` (concatenated along axis 0,
        tower order). Works for parameters, gradients and SGD momentum buffers alike."""
        self._check_names(arrays, list(self._where), "per-tower (tower0.conv1.W, ...)")
        merged = OrderedDict()
        for single, (_, _, shape, parts) in self._params.items():
            for part, start, stop in parts:
                if np.shape(arrays[part]) != (stop - start, *shape[1:]):
                    raise ValueError(
                        f"{part} has shape {np.shape(arrays[part])}; this split "
                        f"expects {(stop - start, *shape[1:])} (rows {start}:"
                        f"{stop} of {single}, shape {shape})"
                    )
            merged[single] = np.concatenate(
                [np.asarray(arrays[part]) for part, _, _ in parts], axis=0
            )
        return merged

    def split(self, state: dict) -> OrderedDict[str, np.ndarray]:
        """The inverse of ``merge``: ``{"conv1.W": (96, ...)}`` -> each tower's rows, copied."""
        self._check_names(state, list(self._params), "single-device (conv1.W, ...)")
        parts_out = OrderedDict()
        for single, (_, _, shape, parts) in self._params.items():
            value = np.asarray(state[single])
            if value.shape != shape:
                raise ValueError(
                    f"state entry {single} has shape {value.shape}; this "
                    f"AlexNet ({self.config['variant']!r}, {self.num_classes} "
                    f"classes) expects {shape}"
                )
            for part, start, stop in parts:
                parts_out[part] = value[start:stop].copy()
        return parts_out

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """The single-device state dict (``"conv1.W"`` (96, 3, 11, 11), ...): the towers'
        pieces brought to the host and concatenated, equal to ``AlexNet.state_dict()`` of
        the merged network."""
        return self.merge(
            {name: self.device_of(name).to_host(p) for name, p, _ in self.named_parameters()}
        )

    def load_state_dict(self, state: dict) -> None:
        """Load a single-device state dict (an ``AlexNet``'s, or a checkpoint's ``params``)
        into the towers, in place; values are cast to the parameters' dtype."""
        own = {name: p for name, p, _ in self.named_parameters()}
        for name, value in self.split(state).items():
            self.device_of(name).assign(own[name], value)

    def to_model(self, rng: np.random.Generator | None = None):
        """A single-device ``AlexNet`` (float32) holding the merged weights (for evaluation,
        prediction, or to compare with the grouped network)."""
        model = AlexNet.from_config(self.config, rng=rng if rng is not None else self.rng)
        model.load_state_dict(self.state_dict())
        return model

    def astype(self, dtype) -> TwoTowerAlexNet:
        """Cast every tower's parameters (and gradients) to ``dtype`` in place; returns self."""
        for tower in self.towers:
            for layer in tower.layers.values():
                layer.astype(dtype)
        return self

    # -- description ----------------------------------------------------------------------

    def num_parameters(self) -> int:
        """Total parameters over both towers: the single-device count (none is duplicated)."""
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    def summary(self) -> str:
        """A table: every layer, what it reads, each tower's output shape and parameters."""
        header = (
            f"{'layer':<9} {'reads':<13} {'tower 0 output':<16} {'tower 1 output':<16} "
            f"{'params/tower':>14}"
        )
        lines = [repr(self), header, "-" * len(header)]
        for name, reads, shapes, params in self._rows:
            if reads == "both towers":
                lines.append(f"{'':<9} -- gather: each tower reads both towers' outputs --")
            lines.append(
                f"{name:<9} {reads:<13} {str(shapes[0]):<16} {str(shapes[1]):<16} "
                f"{' + '.join(f'{p:,}' for p in params):>14}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"total parameters {self.num_parameters():,} (the single-device count: "
            f"every parameter lives on exactly one tower)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        serialized = " (serialized: Numba workqueue)" if self.runner.serialized else ""
        return (
            f"TwoTowerAlexNet(num_classes={self.num_classes}, "
            f"variant={self.config['variant']!r}, devices="
            f"{','.join(str(d) for d in self.devices)!r}, mode={self.mode!r}){serialized}"
        )

    # -- lifetime and helpers -------------------------------------------------------------

    def close(self) -> None:
        """Stop the tower worker threads (a later forward starts them again)."""
        self.runner.close()

    def __enter__(self) -> TwoTowerAlexNet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reseed_dropout(self) -> None:
        """Give each tower a fresh generator for this pass, seeded from ``self.rng``: the
        towers draw independent masks concurrently, and ``self.rng``'s state (saved in
        checkpoints) still fixes every mask of a run. A layer that draws random numbers while
        running (``Dropout``, or a device's twin of it) keeps its generator in ``layer.rng``."""
        dropouts = [
            [layer for layer in tower.layers.values() if hasattr(layer, "rng")]
            for tower in self.towers
        ]
        if not any(dropouts):
            return
        seeds = self.rng.integers(0, 2**63, size=len(self.towers), dtype=np.int64)
        for layers, seed in zip(dropouts, seeds):
            generator = np.random.default_rng(int(seed))
            for layer in layers:
                layer.rng = generator

    def device_of(self, tower_name: str) -> Device:
        """The device holding a per-tower parameter, e.g. ``"tower1.fc8.W"`` -> tower 1's."""
        return self.towers[self._where[tower_name][0]].device

    def _check_names(self, arrays: dict, expected: list, kind: str) -> None:
        known = set(expected)
        missing = [name for name in expected if name not in arrays]
        unexpected = [name for name in arrays if name not in known]
        if missing or unexpected:
            raise ValueError(
                f"expected {kind} names of this TwoTowerAlexNet "
                f"({self.config['variant']!r}, {self.num_classes} classes): "
                f"missing {missing}, unexpected {unexpected}"
            )


def _split_layers(model, n: int):
    """Cut ``model.layers`` into ``n`` towers; the heart of the split.

    Walks the single-device layers in order, tracking how the current activation is divided
    among the towers (``widths``: each tower's share of axis 1; ``None`` for the image, which
    every tower reads whole). A layer that reads all channels or features (an ungrouped
    convolution, a fully connected layer) starts a new stage and splits its filters/units;
    a grouped convolution or LRN stays on each tower; other layers are copied per tower.

    Returns ``(stages, in_shapes, params, rows, stage_widths)``:

    - ``stages[t][s]``: ``OrderedDict`` name -> layer of tower ``t``'s stage ``s``, weights
      copied from ``model``;
    - ``in_shapes[t][name]``: the input shape of tower ``t``'s layer (no batch axis; the
      gathered shape for a layer that reads both towers), for ``Device.adopt``;
    - ``params``: single-device name -> ``(layer name, key, full shape, [(tower name, start,
      stop)])``, the rows of the parameter each tower holds;
    - ``rows``: ``(name, reads, per-tower output shapes, per-tower parameter counts)`` for
      ``summary()``;
    - ``stage_widths[s]``: each tower's share of axis 1 of stage ``s``'s output.
    """
    stages = [[] for _ in range(n)]
    in_shapes = [{} for _ in range(n)]
    params, rows, stage_widths = OrderedDict(), [], []
    shape = (3, model.input_size, model.input_size)  # single-device, no batch axis
    widths = None
    scratch_rng = np.random.default_rng(0)  # for the constructors; their weights are replaced
    for name, layer in model.layers.items():
        reads_all = isinstance(layer, Linear) or (isinstance(layer, Conv2D) and layer.groups == 1)
        if reads_all:
            if widths is not None:
                stage_widths.append(widths)
            for tower_stages in stages:
                tower_stages.append(OrderedDict())
        elif widths is None:
            raise ValueError(
                f"{name} ({layer!r}) is the first layer but does not read the "
                f"whole image; the split needs a first layer that every tower "
                f"reads whole (conv1 with groups=1)"
            )
        for t in range(n):
            in_shapes[t][name] = shape if reads_all else (widths[t], *shape[1:])
        out_shape = tuple(layer.output_shape(shape))
        towers, widths = _tower_layers(name, layer, widths, shape, n, scratch_rng)
        _split_parameters(name, layer, towers, widths, params)
        for t in range(n):
            stages[t][-1][name] = towers[t]
        tower_shapes = [(w, *out_shape[1:]) for w in widths]
        rows.append(
            (
                name,
                "both towers" if reads_all and rows else "the image" if reads_all else "own tower",
                tower_shapes,
                [sum(int(p.size) for p in tw.params.values()) for tw in towers],
            )
        )
        shape = out_shape
    stage_widths.append(widths)
    return stages, in_shapes, params, rows, stage_widths


def _tower_layers(name: str, layer, widths, shape: tuple, n: int, scratch_rng):
    """``(towers, widths)``: ``n`` copies of ``layer`` sized for the towers (weights not yet
    copied), and each tower's share of axis 1 of its output. ``widths`` and ``shape`` describe
    the layer's input (``widths=None``: the image, which every tower reads whole);
    ``scratch_rng`` feeds the constructors, whose weights are replaced."""
    if isinstance(layer, Conv2D):
        if layer.groups == 1:
            in_channels, groups = layer.in_channels, 1
            widths = split_sizes(layer.out_channels, n, name)
        elif layer.groups % n == 0:
            _require_equal(widths, name, f"a grouped convolution (groups={layer.groups})")
            in_channels, groups = layer.in_channels // n, layer.groups // n
            widths = [layer.out_channels // n] * n
        else:
            raise ValueError(
                f"{name} has groups={layer.groups}, which cannot be divided "
                f"between {n} towers; the split needs groups=1 (reads both "
                f"towers) or a multiple of {n} (stays on each tower)"
            )
        towers = [
            Conv2D(
                in_channels,
                w,
                (layer.kernel_h, layer.kernel_w),
                layer.stride,
                layer.padding,
                groups,
                rng=scratch_rng,
                algorithm=layer.algorithm,
            )
            for w in widths
        ]
    elif isinstance(layer, Linear):
        widths = split_sizes(layer.out_features, n, name)
        towers = [Linear(layer.in_features, w, rng=scratch_rng) for w in widths]
    elif isinstance(layer, LocalResponseNorm):
        if layer.groups % n:
            raise ValueError(
                f"{name} normalizes within {layer.groups} group(s) of channels, so its "
                f"windows cross the boundary between the towers' maps, which no tower "
                f"can see (§3.2 normalizes within each GPU's half); build the model with "
                f"LRN groups={n} (the paper's) or without LRN"
            )
        _require_equal(widths, name, f"a grouped LRN (groups={layer.groups})")
        towers = [
            LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k, layer.groups // n)
            for _ in range(n)
        ]
    elif isinstance(layer, Flatten):
        towers = [Flatten() for _ in range(n)]
        widths = [w * math.prod(shape[1:]) for w in widths]  # channel-major blocks
    elif isinstance(layer, MaxPool2D):
        towers = [MaxPool2D(layer.kernel_size, layer.stride, layer.padding) for _ in range(n)]
    elif isinstance(layer, Dropout):
        towers = [Dropout(layer.p) for _ in range(n)]  # generators set per pass
    elif isinstance(layer, (ReLU, Tanh)):
        towers = [type(layer)() for _ in range(n)]
    else:
        raise TypeError(
            f"the two-tower split does not know how to divide {name} "
            f"({type(layer).__name__}); teach _split_layers where its inputs "
            f"and parameters go"
        )

    return towers, widths


def _split_parameters(name: str, layer, towers: list, widths: list[int], params) -> None:
    """Give every tower its rows of each of ``layer``'s parameters (axis 0: filters or units,
    in tower order), and record in ``params`` which tower holds which rows."""
    for key, full in layer.params.items():
        parts = []
        for t, (start, stop) in enumerate(_offsets(widths)):
            towers[t].params[key] = np.array(full[start:stop], copy=True)
            towers[t].grads[key] = np.zeros_like(towers[t].params[key])
            parts.append((f"tower{t}.{name}.{key}", start, stop))
        params[f"{name}.{key}"] = (name, key, tuple(full.shape), parts)


def _require_equal(widths: list[int], name: str, what: str) -> None:
    """Layers that stay on their own tower need the towers' shares to be equal halves."""
    if len(set(widths)) != 1:
        total = sum(widths)
        raise ValueError(
            f"{name} is {what} and stays on each tower, so the {total} channels "
            f"reaching it must be divided equally between {len(widths)} towers, "
            f"but {total} does not divide evenly (the towers would hold "
            f"{widths}); give the layer before it a multiple of {len(widths)} "
            f"filters"
        )
