"""SGEMM on the GPU: shared-memory tiles, 2-D register blocking, batches, transposes, split-K.

No CPU twin: the CPU layers call NumPy's ``matmul`` (OpenBLAS), which already runs near the
machine's peak. numba.cuda has no cuBLAS binding, so on the GPU the GEMM is ours to write.
Every convolution (§3.5, as im2col + GEMM) and fully connected layer reduces to one of

    C = A @ B        conv forward  W @ cols,           fc backward dx = dy @ W
    C = A^T @ B      conv backward dcols = W^T @ dy,   fc backward dW = dy^T @ x
    C = A @ B^T      conv backward dW = dy @ cols^T,   fc forward  y  = x @ W^T

so this file handles every combination of ``trans_a`` / ``trans_b`` (A^T @ B^T too), on
matrices of any size (edges of partial tiles are zero-filled when loaded and masked when
stored). A transpose costs nothing: it only changes which index a thread reads.

How the kernel is built (the CUDA-C "SGEMM ladder": a naive kernel reaches a few percent of
cuBLAS, shared-memory tiling ~13%, 2-D register blocking ~69%, warp tiling ~94%):

1. Tiling. A block computes one ``BM x BN`` tile of C. It walks along K in steps of ``BK``:
   the block copies an ``BM x BK`` slab of A and a ``BK x BN`` slab of B into shared memory
   (each thread loads a few elements, consecutive threads read consecutive addresses), then
   every thread reads them from shared memory instead of global memory.
2. Register blocking. Each thread accumulates a ``TM x TN`` micro-tile of C in registers.
   Per step along K it reads ``TM`` values of A and ``TN`` values of B from shared memory
   into registers and does ``TM * TN`` fused multiply-adds: 64 FMAs per 16 shared loads with
   ``TM = TN = 8`` instead of 1 FMA per 2 loads.
3. Interleaved micro-tiles. Thread ``(ty, tx)`` owns rows ``ty + i * BM/TM`` and columns
   ``tx + j * BN/TN`` (not a contiguous 8x8 patch): neighbouring threads read neighbouring
   shared-memory words (no bank conflicts) and write neighbouring addresses of C (coalesced).

Batches. ``a``, ``b`` and ``c`` may carry a leading batch axis of the same size ``B``:
``c[g] = op(a[g]) @ op(b[g])``, one independent GEMM per ``g`` (the grid's third axis). A
grouped convolution (§3.2) is such a batch: group ``g``'s weights ``(F/G, C/G*KH*KW)`` times
its rows of the im2col matrix ``(C/G*KH*KW, N*OH*OW)``. 2-D arrays are a batch of one.

Split-K. AlexNet's weight gradients have small outputs and huge K (conv1's dW is 96 x 363,
each entry a sum over 128 images x 3025 positions = 387,200 products: 3 tiles) and the fc
layers at batch 128 have 8-72 output tiles; a GPU with 132 SMs would sit mostly idle. A
``GemmPlan`` then splits the K loop over ``S`` blocks per tile that write partial sums to a
workspace, and a second kernel adds the ``S`` partials in a fixed order (deterministic: no
atomics).

Data layout: float32, C-contiguous. ``a`` is ``(B, M, K)`` (``(B, K, M)`` when ``trans_a``),
``b`` is ``(B, K, N)`` (``(B, N, K)`` when ``trans_b``), ``c`` is ``(B, M, N)``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import THREADS_PER_BLOCK, blocks_for, check_device_array


class GemmTile(NamedTuple):
    """Tile geometry: a block computes ``block_m x block_n`` of C, stepping ``block_k`` along K;
    each thread owns ``thread_m x thread_n`` outputs. Threads per block:
    ``(block_m / thread_m) * (block_n / thread_n)``."""

    block_m: int
    block_n: int
    block_k: int
    thread_m: int
    thread_n: int

    @property
    def threads(self) -> int:
        return (self.block_m // self.thread_m) * (self.block_n // self.thread_n)


# Largest first. 128x128 with 8x8 per thread is the classic register-blocked configuration:
# 256 threads, 8.25 KiB of shared memory, 146-160 registers per thread for sm_90 (ptxas, no
# spills), so one block per SM. 64x64 (4x4 per thread) and 32x32 pad less when M or N is
# small or just past a multiple of 128; 32x32 (64 threads) also keeps the simulator fast.
TILE_128 = GemmTile(128, 128, 8, 8, 8)
TILE_64 = GemmTile(64, 64, 8, 4, 4)
TILE_32 = GemmTile(32, 32, 8, 4, 4)
TILES = (TILE_128, TILE_64, TILE_32)

# A tile whose zero padding would waste more than this fraction of its FMAs is passed over
# for a smaller one.
MAX_TILE_WASTE = 0.3
# Split-K aims at this many blocks per SM, and gives each slice at least this many K steps.
TARGET_BLOCKS_PER_SM = 2
MIN_K_STEPS_PER_SLICE = 16
MAX_GRID_Z = 65535


@functools.cache
def _gemm_kernel(trans_a: bool, trans_b: bool, tile: GemmTile):
    """Compile-time specialisation: the transposes and tile sizes are closure constants, so
    the loops below unroll and the untaken ``if TRANS_A`` branch disappears."""
    BM, BN, BK, TM, TN = tile
    THREADS_M = BM // TM  # threads along a column of the tile
    THREADS_N = BN // TN  # threads along a row of the tile
    THREADS = THREADS_M * THREADS_N
    A_LOADS = BM * BK // THREADS  # elements of the A slab each thread copies
    B_LOADS = BK * BN // THREADS
    # Padded slab rows: copying row-major A (or B^T) writes down a column of the k-major
    # slab; with rows of exactly BM words those 8 writes would share a bank (8-way conflict).
    # (Precomputed here: a shared array's shape must be a constant, not an expression.)
    A_ROW = BM + 4
    B_ROW = BN + 4
    TRANS_A, TRANS_B = trans_a, trans_b
    assert BM * BK % THREADS == 0 and BK * BN % THREADS == 0, tile

    @cuda.jit
    def gemm_tile(a, b, c, k_steps):
        """c[s, g, tile] = (slice s of the K loop of) op(a[g]) @ op(b[g]) for one BM x BN tile.

        Grid: (ceil(N / BN), ceil(M / BM), B * slices); block: THREADS threads (1-D).
        a: (B, M, K) or (B, K, M); b: (B, K, N) or (B, N, K); c: (slices, B, M, N).
        """
        tid = cuda.threadIdx.x
        tx = tid % THREADS_N
        ty = tid // THREADS_N
        n0 = cuda.blockIdx.x * BN
        m0 = cuda.blockIdx.y * BM
        slices = c.shape[0]
        batch = c.shape[1]
        g = cuda.blockIdx.z % batch  # which matrix of the batch
        s = cuda.blockIdx.z // batch  # which slice of the K loop
        m_size = c.shape[2]
        n_size = c.shape[3]
        k_size = a.shape[1] if TRANS_A else a.shape[2]

        # Stored k-major ([k][m], [k][n]) so the inner loop reads rows of both.
        # (One shared array per source line: the CUDA simulator aliases two on one line.)
        a_slab = cuda.shared.array((BK, A_ROW), np.float32)
        b_slab = cuda.shared.array((BK, B_ROW), np.float32)
        acc = cuda.local.array((TM, TN), np.float32)
        a_reg = cuda.local.array(TM, np.float32)
        b_reg = cuda.local.array(TN, np.float32)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = np.float32(0.0)

        # Slice s takes its contiguous share of the ceil(K / BK) steps along K.
        for step in range(s * k_steps // slices, (s + 1) * k_steps // slices):
            k0 = step * BK
            # Global -> shared: consecutive threads take consecutive addresses of the
            # stored matrix (along K for A, along M for A^T; along N for B, K for B^T).
            for load in range(A_LOADS):
                e = tid + load * THREADS
                if TRANS_A:
                    kk = e // BM
                    mm = e % BM
                else:
                    mm = e // BK
                    kk = e % BK
                value = np.float32(0.0)  # zero-fill past the edges of A
                if m0 + mm < m_size and k0 + kk < k_size:
                    if TRANS_A:
                        value = a[g, k0 + kk, m0 + mm]
                    else:
                        value = a[g, m0 + mm, k0 + kk]
                a_slab[kk, mm] = value
            for load in range(B_LOADS):
                e = tid + load * THREADS
                if TRANS_B:
                    nn = e // BK
                    kk = e % BK
                else:
                    kk = e // BN
                    nn = e % BN
                value = np.float32(0.0)
                if n0 + nn < n_size and k0 + kk < k_size:
                    if TRANS_B:
                        value = b[g, n0 + nn, k0 + kk]
                    else:
                        value = b[g, k0 + kk, n0 + nn]
                b_slab[kk, nn] = value
            cuda.syncthreads()

            # Shared -> registers -> TM x TN outer product per k.
            for kk in range(BK):
                for i in range(TM):
                    a_reg[i] = a_slab[kk, ty + i * THREADS_M]
                for j in range(TN):
                    b_reg[j] = b_slab[kk, tx + j * THREADS_N]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += a_reg[i] * b_reg[j]
            cuda.syncthreads()  # before the next step overwrites the slabs

        for i in range(TM):
            m = m0 + ty + i * THREADS_M
            if m < m_size:
                for j in range(TN):
                    n = n0 + tx + j * THREADS_N
                    if n < n_size:
                        c[s, g, m, n] = acc[i, j]

    return gemm_tile


@cuda.jit
def _sum_slices_kernel(partials, out):
    """out[i] = sum_s partials[s, i]: adds the split-K partial sums in a fixed order.

    partials: (S, L) float32; out: (L,) float32. One thread per output element.
    """
    i = cuda.grid(1)
    if i < out.shape[0]:
        total = np.float32(0.0)
        for s in range(partials.shape[0]):
            total += partials[s, i]
        out[i] = total


@functools.cache
def multiprocessor_count() -> int:
    """Streaming multiprocessors of the current device (1 under the CUDA simulator)."""
    return int(getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", 1))


def choose_tile(m: int, n: int) -> GemmTile:
    """The largest tile whose zero padding wastes at most ``MAX_TILE_WASTE`` of its work."""
    best, best_waste = TILES[-1], 2.0
    for tile in TILES:
        padded = (
            math.ceil(m / tile.block_m) * tile.block_m * math.ceil(n / tile.block_n) * tile.block_n
        )
        waste = 1.0 - (m * n) / padded
        if waste <= MAX_TILE_WASTE:
            return tile
        if waste < best_waste:
            best, best_waste = tile, waste
    return best


def _dims(shape: tuple, transposed: bool, name: str) -> tuple[int, int, int]:
    """(batch, rows, cols) of the operand ``op(x)`` as the product sees it."""
    if len(shape) not in (2, 3) or 0 in shape:
        raise ValueError(
            f"gemm: {name} must be a non-empty matrix (2 axes) or batch of "
            f"matrices (3 axes), got shape {tuple(shape)}"
        )
    batch, rows, cols = (1, *shape) if len(shape) == 2 else shape
    return (batch, cols, rows) if transposed else (batch, rows, cols)


class GemmPlan:
    """One GEMM of fixed shapes, ``c[g] = op(a[g]) @ op(b[g])``, ready to run again and again.

    Parameters
    ----------
    a_shape : (M, K) or (B, M, K); with ``trans_a``: (K, M) or (B, K, M)
    b_shape : (K, N) or (B, K, N); with ``trans_b``: (N, K) or (B, N, K)
    tile : a ``GemmTile`` (default ``choose_tile(M, N)``)
    split_k : number of slices of the K loop (default: enough blocks to keep every SM busy)

    ``out_shape`` is ``(M, N)`` for 2-D operands, else ``(B, M, N)``. The plan chooses the
    tile and the split once and owns the split-K workspace (allocated on the first call, then
    reused): a layer builds its plans once and calls them every step.
    """

    def __init__(
        self,
        a_shape,
        b_shape,
        trans_a: bool = False,
        trans_b: bool = False,
        tile: GemmTile | None = None,
        split_k: int | None = None,
    ) -> None:
        self.a_shape, self.b_shape = tuple(a_shape), tuple(b_shape)
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)
        ba, m, ka = _dims(self.a_shape, self.trans_a, "a")
        bb, kb, n = _dims(self.b_shape, self.trans_b, "b")
        if ka != kb:
            raise ValueError(
                f"gemm: inner dimensions differ: op(a) is {m} x {ka} but op(b) is "
                f"{kb} x {n} (a {self.a_shape}, trans_a={self.trans_a}; "
                f"b {self.b_shape}, trans_b={self.trans_b})"
            )
        if len(self.a_shape) != len(self.b_shape) or ba != bb:
            raise ValueError(
                f"gemm: a {self.a_shape} and b {self.b_shape} must both be "
                f"matrices or both batches of the same size"
            )
        self.batch, self.m, self.n, self.k = ba, m, n, ka
        self.out_shape = (m, n) if len(self.a_shape) == 2 else (ba, m, n)
        self.tile = tile if tile is not None else choose_tile(m, n)
        self.k_steps = math.ceil(ka / self.tile.block_k)
        self.grid = (math.ceil(n / self.tile.block_n), math.ceil(m / self.tile.block_m), ba)
        self.slices = self._choose_split() if split_k is None else int(split_k)
        if not 1 <= self.slices <= self.k_steps or ba * self.slices > MAX_GRID_Z:
            raise ValueError(
                f"gemm: split_k={self.slices} must lie in [1, {self.k_steps}] "
                f"(the steps of {self.tile.block_k} along K={ka}) with "
                f"batch * split_k <= {MAX_GRID_Z}"
            )
        self._kernel = _gemm_kernel(self.trans_a, self.trans_b, self.tile)
        self._workspace = None

    def _choose_split(self) -> int:
        blocks = self.grid[0] * self.grid[1] * self.grid[2]
        target = TARGET_BLOCKS_PER_SM * multiprocessor_count()
        if blocks >= target:
            return 1
        most = max(1, self.k_steps // MIN_K_STEPS_PER_SLICE)
        return max(1, min(math.ceil(target / blocks), most, MAX_GRID_Z // self.batch))

    @property
    def flops(self) -> int:
        """Floating-point operations of one call (2 per multiply-add)."""
        return 2 * self.batch * self.m * self.n * self.k

    def __call__(self, a, b, c, stream=0):
        """Run on float32 device arrays of the planned shapes; writes and returns ``c``."""
        check_device_array(a, "gemm", "a", shape=self.a_shape)
        check_device_array(b, "gemm", "b", shape=self.b_shape)
        check_device_array(c, "gemm", "c", shape=self.out_shape)
        a3 = a.reshape(self.batch, *self.a_shape[-2:])
        b3 = b.reshape(self.batch, *self.b_shape[-2:])
        if self.slices == 1:
            target = c.reshape(1, self.batch, self.m, self.n)
        else:
            if self._workspace is None:
                self._workspace = cuda.device_array(
                    (self.slices, self.batch, self.m, self.n), dtype=np.float32, stream=stream
                )
            target = self._workspace
        grid = (self.grid[0], self.grid[1], self.batch * self.slices)
        self._kernel[grid, self.tile.threads, stream](a3, b3, target, self.k_steps)
        if self.slices > 1:
            size = self.batch * self.m * self.n
            _sum_slices_kernel[blocks_for(size), THREADS_PER_BLOCK, stream](
                self._workspace.reshape(self.slices, size), c.reshape(size)
            )
        return c

    def __repr__(self) -> str:
        t = self.tile
        return (
            f"GemmPlan(batch={self.batch}, op(a)={self.m}x{self.k}, "
            f"op(b)={self.k}x{self.n}, trans_a={self.trans_a}, trans_b={self.trans_b}, "
            f"tile={t.block_m}x{t.block_n}x{t.block_k} ({t.thread_m}x{t.thread_n} per "
            f"thread), split_k={self.slices})"
        )


def gemm(
    a,
    b,
    c=None,
    trans_a: bool = False,
    trans_b: bool = False,
    tile: GemmTile | None = None,
    split_k: int | None = None,
    stream=0,
):
    """``c = op(a) @ op(b)`` (batched: ``c[g] = op(a[g]) @ op(b[g])``) on device arrays: the
    products of the convolutional and fully connected layers (§3.5). Grid: one block of
    ``tile.threads`` threads per ``tile.block_m x tile.block_n`` tile of ``c`` (times the
    batch and the K slices), each thread ``tile.thread_m x tile.thread_n`` outputs.

    a : float32 device array (M, K) or (B, M, K); (K, M) / (B, K, M) when ``trans_a``
    b : float32 device array (K, N) or (B, K, N); (N, K) / (B, N, K) when ``trans_b``
    c : float32 device array (M, N) or (B, M, N) to overwrite, or None to allocate one
    Returns ``c``. Builds a one-off ``GemmPlan`` (and its split-K workspace): fine for tests
    and scripts; code that repeats the same product should keep a plan.
    """
    plan = GemmPlan(a.shape, b.shape, trans_a, trans_b, tile, split_k)
    if c is None:
        c = cuda.device_array(plan.out_shape, dtype=np.float32, stream=stream)
    return plan(a, b, c, stream)
