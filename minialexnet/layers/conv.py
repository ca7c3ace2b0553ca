"""Conv2D: the convolutional layer (§3.5); groups give the paper's two-GPU connectivity (§3.2)."""

from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.checks import check_array, check_pair, check_positive_int, check_same_shape
from minialexnet.layers import winograd, workspace
from minialexnet.layers.base import Layer
from minialexnet.shapes import conv_output_size

ALGORITHMS = ("im2col", "winograd", "auto")


class Conv2D(Layer):
    #: Bytes of im2col columns per chunk of images, and the fewest columns (windows) a chunk
    #: may have. Chunks about the size of the cache let the GEMM read columns im2col has just
    #: written there: on the 2-core AMD machine (benchmarks/conv_chunks.py, batch 32, two
    #: threads) 8 MiB instead of 64 MiB made conv1 and conv2 16% and 4% faster (one image per
    #: chunk). conv3-conv5 have few windows per image (13x13): their GEMMs need a few
    #: thousand columns to run at full rate, hence the floor (13 images: 16-20 MiB).
    chunk_bytes = 8 << 20
    min_chunk_columns = 2048

    """2-D convolution (cross-correlation, as in every deep-learning library) with groups.

    Shapes (float32 normally; float64 when ``minialexnet.gradcheck`` runs a copy)::

        x  (N, C, H, W)         W  (F, C/G, KH, KW)       b  (F,)
        y  (N, F, OH, OW)       OH = conv_output_size(H, KH, stride, padding), likewise OW

    Formula, with ``x_pad`` = x with ``padding`` zeros on all four sides::

        y[n, f, oh, ow] = b[f] + sum_{c in group(f), i, j} W[f, c, i, j]
                                                           * x_pad[n, c, oh*s + i, ow*s + j]

    where ``s`` is the stride and ``group(f)`` the input channels of filter f's group: with
    ``groups = G`` the F filters and C channels are cut into G consecutive blocks, and the
    filters of block g see only the channels of block g (``W[f, c]`` indexes c within the
    group). That is AlexNet's two-GPU connectivity (§3.2): conv2, conv4 and conv5 use G = 2, so
    each GPU's kernels read only the maps on the same GPU; conv1 and conv3 use G = 1.

    How it is computed (im2col + GEMM, ``minialexnet/kernels/*/im2col.py``): im2col copies
    every receptive field into one column of ``cols`` (C*KH*KW, N*OH*OW), rows in the order
    of ``W.reshape(F, -1)``. The whole layer is then one matrix multiply per group over the
    whole batch::

        Y_g = W_g @ cols_g      W_g (F/G, C/G*KH*KW),  cols_g (C/G*KH*KW, N*OH*OW)

    where ``cols_g`` is the g-th block of rows (rows are channel-major, so each group's
    channels are contiguous rows). ``Y`` (F, N*OH*OW) is reordered to (N, F, OH, OW) and the
    bias added.

    Backward, from ``dy`` reordered the same way to ``dY`` (F, N*OH*OW)::

        db     = dY.sum(axis=1)                                    (sum over n, oh, ow)
        dW_g   = dY_g @ cols_g.T                                   (F/G, C/G*KH*KW)
        dcols_g = W_g.T @ dY_g                                     (C/G*KH*KW, N*OH*OW)
        dx     = col2im(dcols)        each column added back onto the pixels it was copied from

    (The code evaluates ``dW_g`` as its transpose ``cols_g @ dY_g.T``: the same numbers, in
    the orientation that multi-threaded OpenBLAS ran fastest, with the long N*OH*OW axis as
    the inner dimension.)

    Parameters
    ----------
    in_channels, out_channels : C and F; both divisible by ``groups``
    kernel_size : int or (KH, KW)
    stride, padding : ints (the same on both axes); padding adds zeros
    groups : number of independent channel groups G (AlexNet: 1 or 2)
    rng : numpy Generator for the initial weights, N(0, 0.01^2) as in §5 (biases 0; the
        model sets the paper's biases of 1 where §5 asks for them)

    algorithm : ``"im2col"`` (default, any geometry), ``"winograd"`` or ``"auto"``.
        ``"winograd"``: Winograd F(2x2, 3x3) for 3x3 and F(4x4, 5x5) for 5x5 stride-1 layers
        (conv3-conv5 and conv2), ``minialexnet/layers/winograd.py``; the same numbers up to
        float rounding, with 2.25x (6.25x) fewer multiplies in the GEMMs. ``"auto"``: Winograd
        for each call where it is expected to be faster, else im2col (``algorithm_for``: the
        kernel has a transform, the layer is wide enough, ``winograd.worthwhile``, and the
        batch gives enough tiles, ``winograd.enough_tiles``); what ``AlexNet`` builds, so the
        paper's and BVLC's conv2-conv5 train at batch 32 through Winograd, while conv3-conv5
        of one photo's prediction and every layer of "mini" go through im2col
        (``benchmarks/compare_torch.py --im2col`` compares). Settable after construction
        (``layer.algorithm = "winograd"``).

    Memory: the batch goes through im2col + GEMM a few images at a time, so that ``cols``
    (C*KH*KW x images*OH*OW) stays within ``chunk_bytes`` (near the CPU's cache; at least one
    image) and is reused from chunk to chunk and from layer to layer (one workspace per
    thread, ``minialexnet/layers/workspace.py``), as are the other scratch matrices. Between
    forward and backward the layer keeps only a reference to x; backward rebuilds each
    chunk's columns (im2col is a copy, far cheaper than the GEMMs) instead of holding the
    whole batch's (conv2 at batch 128: 900 MB, and its gradient as much again). The arrays
    the layer returns are always fresh.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        rng: np.random.Generator | None = None,
        algorithm: str = "im2col",
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "Conv2D in_channels")
        self.out_channels = check_positive_int(out_channels, "Conv2D out_channels")
        self.kernel_h, self.kernel_w = check_pair(kernel_size, "Conv2D kernel_size")
        self.stride = check_positive_int(stride, "Conv2D stride")
        self.padding = check_positive_int(padding, "Conv2D padding", minimum=0)
        self.groups = check_positive_int(groups, "Conv2D groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2D groups={self.groups} must divide both in_channels={self.in_channels} "
                f"and out_channels={self.out_channels} (each group gets an equal share of "
                f"channels and filters); pick groups from the common divisors"
            )
        rng = rng if rng is not None else np.random.default_rng()
        shape = (self.out_channels, self.in_channels // self.groups, self.kernel_h, self.kernel_w)
        self.params = {
            "W": rng.normal(0.0, 0.01, size=shape).astype(np.float32),
            "b": np.zeros(self.out_channels, dtype=np.float32),
        }
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.algorithm = algorithm
        self._check_algorithm()  # a clear error now for a bad choice

    # ----------------------------------------------------------------------------- shapes
    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        try:
            return (
                conv_output_size(height, self.kernel_h, self.stride, self.padding),
                conv_output_size(width, self.kernel_w, self.stride, self.padding),
            )
        except ValueError as err:
            raise ValueError(f"{self!r} cannot take a {height}x{width} input: {err}") from None

    def output_shape(self, input_shape: tuple) -> tuple:
        """(F, OH, OW) for one example of shape (C, H, W)."""
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} expects an input shape (C={self.in_channels}, H, W) "
                f"without the batch axis, got {tuple(input_shape)}"
            )
        return (self.out_channels, *self._output_hw(input_shape[1], input_shape[2]))

    def macs(self, input_shape: tuple) -> int:
        """Multiply-accumulates per example: F * OH * OW * (C/G) * KH * KW."""
        f, oh, ow = self.output_shape(input_shape)
        return f * oh * ow * (self.in_channels // self.groups) * self.kernel_h * self.kernel_w

    # -------------------------------------------------------------------- forward/backward
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """y (N, F, OH, OW) of x's dtype from x (N, C, H, W); see the class docstring."""
        check_array(x, "Conv2D", 4, "(N, C, H, W)", channels=self.in_channels)
        n, _, height, width = x.shape
        out_h, out_w = self._output_hw(height, width)
        weights, bias = self._weights_as(x.dtype)
        # Only x is kept for backward (a reference, not a copy): the columns are rebuilt
        # there chunk by chunk, cheaper than holding C*KH*KW x N*OH*OW floats in between.
        self._cache = x
        if self.algorithm_for(x.shape) == "winograd":
            return winograd.forward(x, weights, bias, self.padding, self.groups)
        y = np.empty((n, self.out_channels, out_h, out_w), dtype=x.dtype)
        for start, stop in self._chunks(n, out_h * out_w, x.dtype):
            self._forward_chunk(x[start:stop], weights, bias, y[start:stop])
        return y

    def _forward_chunk(self, x, weights, bias, y) -> None:
        """y = conv(x) + b for a few images, through one cache-sized cols buffer."""
        n, _, out_h, out_w = y.shape
        positions = n * out_h * out_w  # one column of cols per window
        cols = kernels().im2col(
            x,
            self.kernel_h,
            self.kernel_w,
            self.stride,
            self.padding,
            out=self._buffer("cols", (self._rows_of_cols(), positions), x.dtype),
        )
        # One GEMM per group, Y_g = W_g @ cols_g (G, F/G, n*P). (Its transpose
        # cols_g^T @ W_g^T, with the long axis n*P as the rows, ran up to 2x faster on an
        # AMD EPYC machine; on the Intel test machine this orientation is 1.2-1.5x faster on
        # conv1, conv4 and conv5 and even on conv2-conv3, and its reorder below copies whole
        # contiguous planes: benchmarks/compare_torch.py measures the layers.)
        g, f_g = self.groups, self.out_channels // self.groups
        y_g = self._buffer("activations", (g, f_g, positions), x.dtype)
        np.matmul(self._grouped(weights), self._grouped(cols), out=y_g)
        # Reorder (G, F/G, n, P) -> (n, G, F/G, P) = (n, F, OH, OW), adding the bias on the way.
        np.add(
            y_g.reshape(g, f_g, n, out_h * out_w).transpose(2, 0, 1, 3),
            bias.reshape(g, f_g, 1),
            out=y.reshape(n, g, f_g, out_h * out_w),
        )

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dx (N, C, H, W) from dy (N, F, OH, OW); sets grads["W"] and grads["b"] (unless
        ``frozen``: then ``grads`` is ``{}`` and no weight gradient is computed).

        ``need_dx=False`` (the network's first layer in training: nobody needs the image's
        gradient) skips dx, one GEMM of three and col2im, and returns None."""
        x = self._cached()
        n = x.shape[0]
        out_h, out_w = self._output_hw(x.shape[2], x.shape[3])
        check_same_shape(dy, (n, self.out_channels, out_h, out_w), "Conv2D")
        check_array(dy, "Conv2D.backward", 4, "(N, F, OH, OW)")
        weights, bias = self._weights_as(x.dtype)
        if self.algorithm_for(x.shape) == "winograd":
            grads = None
            if not self.frozen:
                grads = {
                    "W": self._gradient_array("W", weights),
                    "b": self._gradient_array("b", bias),
                }
            dx = winograd.backward(dy, x, weights, self.padding, self.groups, need_dx, grads)
            self.grads = grads or {}
            return dx

        dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
        # dW^T summed over the chunks, per group (G, C/G*KH*KW, F/G); see _backward_chunk.
        grad_w_t = (
            None
            if self.frozen
            else np.zeros(
                (
                    self.groups,
                    self._rows_of_cols() // self.groups,
                    self.out_channels // self.groups,
                ),
                dtype=x.dtype,
            )
        )
        for start, stop in self._chunks(n, out_h * out_w, x.dtype):
            dx_chunk = None if dx is None else dx[start:stop]
            self._backward_chunk(x[start:stop], dy[start:stop], weights, grad_w_t, dx_chunk)
        if self.frozen:
            self.grads = {}
            return dx
        grad_w = self._gradient_array("W", weights)
        np.copyto(self._grouped(grad_w), grad_w_t.transpose(0, 2, 1))
        grad_b = self._gradient_array("b", bias)
        self.grads = {"W": grad_w, "b": np.sum(dy, axis=(0, 2, 3), dtype=x.dtype, out=grad_b)}
        return dx

    def _backward_chunk(self, x, dy, weights, grad_w_t, dx) -> None:
        """For a few images: add their dW^T into ``grad_w_t`` (``None``: frozen) and write
        their dx into ``dx`` (``None``: not needed)."""
        n = x.shape[0]
        dtype = x.dtype
        positions = n * dy.shape[2] * dy.shape[3]
        cols = kernels().im2col(
            x,
            self.kernel_h,
            self.kernel_w,
            self.stride,
            self.padding,
            out=self._buffer("cols", (self._rows_of_cols(), positions), dtype),
        )
        # dy (n, F, P) -> dY (F, n*P): filters as rows, columns ordered like those of cols
        # (for one image that is dy itself).
        if n == 1 and dy.flags.c_contiguous:
            dy_cols = dy.reshape(self.out_channels, positions)
        else:
            dy_cols = self._buffer("activations", (self.out_channels, positions), dtype)
            np.copyto(
                dy_cols.reshape(self.out_channels, n, -1),
                dy.reshape(n, self.out_channels, -1).transpose(1, 0, 2),
            )
        if grad_w_t is not None:  # a frozen layer (fine-tuning) skips one GEMM of three
            # dW_g = dY_g @ cols_g^T, summed over every window: computed as its transpose
            # cols_g @ dY_g^T (the same numbers), which multi-threaded OpenBLAS ran 1.5-3x
            # faster on AlexNet's layers (2-core machine).
            chunk_w_t = self._buffer("grad_w_t", grad_w_t.shape, dtype)
            np.matmul(
                self._grouped(cols), self._grouped(dy_cols).transpose(0, 2, 1), out=chunk_w_t
            )
            grad_w_t += chunk_w_t
        if dx is None:
            return
        # dcols_g = W_g^T @ dY_g, then col2im adds each column back onto its pixels.
        dcols = self._buffer("dcols", cols.shape, dtype)
        np.matmul(
            self._grouped(weights).transpose(0, 2, 1),
            self._grouped(dy_cols),
            out=self._grouped(dcols),
        )
        kernels().col2im(
            dcols, x.shape, self.kernel_h, self.kernel_w, self.stride, self.padding, out=dx
        )

    # ----------------------------------------------------------------------------- helpers
    def _chunks(self, n: int, positions: int, dtype) -> list[tuple[int, int]]:
        """[start, stop) image ranges whose cols matrix (C*KH*KW, images*OH*OW) fits in
        ``chunk_bytes``, but with at least ``min_chunk_columns`` columns (and one image)."""
        image_bytes = self._rows_of_cols() * positions * np.dtype(dtype).itemsize
        step = max(self.chunk_bytes // image_bytes, -(-self.min_chunk_columns // positions))
        step = max(1, min(n, step))
        return [(start, min(start + step, n)) for start in range(0, n, step)]

    def algorithm_for(self, x_shape: tuple) -> str:
        """``"im2col"`` or ``"winograd"``: how a call on x of ``x_shape`` (N, C, H, W) is
        computed. With ``algorithm="auto"`` this is decided per call, from the geometry and
        the batch; backward makes the same choice as forward (it sees the same x)."""
        self._check_algorithm()
        if self.algorithm != "auto":
            return self.algorithm
        kernel = self.kernel_h
        faster = (
            winograd.supports(kernel, self.kernel_w, self.stride)
            and winograd.worthwhile(self.in_channels, self.out_channels, self.groups, kernel)
            and winograd.enough_tiles(x_shape, kernel, self.padding)
        )
        return "winograd" if faster else "im2col"

    def _check_algorithm(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"{self!r}: unknown algorithm {self.algorithm!r}; choose one of "
                f"{', '.join(ALGORITHMS)}"
            )
        if self.algorithm == "winograd" and not winograd.supports(
            self.kernel_h, self.kernel_w, self.stride
        ):
            raise ValueError(
                f"{self!r}: algorithm 'winograd' needs a 3x3 or 5x5 kernel at stride 1; "
                f"use algorithm 'im2col' or 'auto' for this layer"
            )

    def _rows_of_cols(self) -> int:
        """C*KH*KW: one row of cols per (input channel, kernel row, kernel column)."""
        return self.in_channels * self.kernel_h * self.kernel_w

    def _grouped(self, matrix: np.ndarray) -> np.ndarray:
        """View a (rows, cols) matrix -- or W -- as (G, rows/G, cols): group g's row block."""
        return matrix.reshape(self.groups, matrix.shape[0] // self.groups, -1)

    def _weights_as(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """W and b in the input's dtype (a no-op in normal use, where both are float32)."""
        return (
            self.params["W"].astype(dtype, copy=False),
            self.params["b"].astype(dtype, copy=False),
        )

    def _buffer(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A scratch array of this shape, reused between chunks, calls and layers.

        Fresh large arrays cost page faults every time; reusing them saves about as much time
        as im2col takes. The buffers belong to the thread's workspace
        (``minialexnet/layers/workspace.py``), shared by every conv layer that runs in it.
        """
        return workspace.scratch(name, shape, dtype)

    def __repr__(self) -> str:
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, "
            f"kernel_size=({self.kernel_h}, {self.kernel_w}), stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups})"
        )
