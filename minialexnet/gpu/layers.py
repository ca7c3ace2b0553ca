"""Device-resident twins of the layers, the building blocks of the GPU engines (``model.py``).

Each class mirrors one CPU layer of ``minialexnet.layers`` (same formulas and paper
sections: read the CPU class for the math) but keeps everything on the GPU:

- its parameters are device arrays (shared with the network, which updates them in place);
- every output, cached value and gradient lives in a device buffer allocated *once*, for the
  largest batch (``capacity``), and smaller batches use the front of that buffer, so a
  training loop allocates no GPU memory after its first step;
- ``forward(x, train, seed)`` / ``backward(dy, need_dx)`` take and return device arrays and
  launch the kernels of ``minialexnet.kernels.cuda`` on the layer's ``stream``.

The arrays a layer returns are views of its own buffers: valid until that layer runs again.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet import layers as L
from minialexnet.kernels.cuda import bias as k_bias
from minialexnet.kernels.cuda import dropout as k_dropout
from minialexnet.kernels.cuda import im2col as k_im2col
from minialexnet.kernels.cuda import layout as k_layout
from minialexnet.kernels.cuda import lrn as k_lrn
from minialexnet.kernels.cuda import maxpool as k_maxpool
from minialexnet.kernels.cuda import relu as k_relu
from minialexnet.kernels.cuda import tanh as k_tanh
from minialexnet.kernels.cuda.cublas import gemm_plan_class


class Scratch:
    """A flat device buffer sized for the largest batch; ``view(shape)`` is its C-contiguous
    front part of that shape (shapes of smaller batches fit in the same memory). Allocated on
    the first ``view``, so a buffer that is never used (the first layer's ``dx``) costs nothing.
    """

    def __init__(self, size: int, dtype=np.float32, stream=0) -> None:
        self.size, self.dtype, self.stream = max(1, int(size)), dtype, stream
        self.array = None

    def view(self, shape: tuple):
        if self.array is None:
            self.array = cuda.device_array(self.size, dtype=self.dtype, stream=self.stream)
        return self.array[: math.prod(shape)].reshape(tuple(shape))


class DeviceLayer:
    """Base class. ``in_shape`` / ``out_shape`` exclude the batch axis; ``capacity`` is the
    largest batch the buffers hold. ``params`` and ``grads`` map "W"/"b" to device arrays."""

    def __init__(self, in_shape: tuple, out_shape: tuple, capacity: int, stream=0) -> None:
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.capacity, self.stream = int(capacity), stream
        self.params: dict = {}
        self.grads: dict = {}
        self._per_batch: dict = {}  # batch size -> views and GEMM plans

    def _scratch(self, shape: tuple, dtype=np.float32) -> Scratch:
        return Scratch(self.capacity * math.prod(shape), dtype, self.stream)

    def _for_batch(self, n: int):
        """The views/plans of batch size ``n``, built on first use and then reused."""
        if n > self.capacity:
            raise ValueError(f"batch of {n} exceeds this layer's capacity {self.capacity}")
        if n not in self._per_batch:
            self._per_batch[n] = self._build_batch(n)
        return self._per_batch[n]

    def _build_batch(self, n: int):
        return {}

    def _bias_partials(self) -> Scratch:
        """The buffer of ``bias_grad``'s partial sums for the largest batch (kernels/cuda/
        bias.py), for a layer with a bias over its first output axis."""
        slices = k_bias.bias_grad_slices((self.capacity, *self.out_shape))
        return Scratch(slices * self.out_shape[0], stream=self.stream)

    def _bias_grad(self, dy, db):
        """``db`` = the bias gradient of ``dy``, with the partial sums in this layer's buffer."""
        slices = k_bias.bias_grad_slices(tuple(dy.shape))
        partials = self._partials.view((slices, dy.shape[1])) if slices > 1 else None
        return k_bias.bias_grad(dy, db, stream=self.stream, partials=partials)

    def gemm_plans(self, n: int) -> dict:
        """The GEMM plans (``GemmPlan`` or ``CublasGemmPlan``) this layer runs for a batch of
        ``n`` (for benchmarks)."""
        return {key: value for key, value in self._for_batch(n).items() if hasattr(value, "flops")}

    def forward(self, x, train: bool, seed: int):
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        raise NotImplementedError


class DeviceConv2D(DeviceLayer):
    """``Conv2D`` on the device (§3.5; groups as the two-GPU connectivity of §3.2).

    forward:  cols = im2col(x) (C*KH*KW, N*P);  Y_g = W_g @ cols_g (one batched GEMM over the
              G groups) -> (F, N*P);  y = to_image_major(Y) + b  -> (N, F, OH, OW)
    backward: dY = to_channel_major(dy);  db = bias_grad(dy);  dW_g = dY_g @ cols_g^T;
              dcols_g = W_g^T @ dY_g;  dx = col2im(dcols)

    Memory reuse: the forward's (F, N*P) product and the backward's dY share one buffer, and
    ``dcols`` overwrites ``cols`` (cols is dead once dW is computed), which halves the largest
    buffers of the network (conv2's cols is 0.9 GB at batch 128).
    """

    def __init__(self, layer, in_shape, capacity, params, stream=0, gemm="numba") -> None:
        c, h, w = in_shape
        super().__init__(in_shape, layer.output_shape(tuple(in_shape)), capacity, stream)
        self.gemm = gemm  # "numba" (gemm.py) or "cublas" (cublas.py)
        f, self.out_h, self.out_w = self.out_shape
        self.kernel_h, self.kernel_w = layer.kernel_h, layer.kernel_w
        self.stride, self.padding, self.groups = layer.stride, layer.padding, layer.groups
        self.rows = c * self.kernel_h * self.kernel_w  # rows of cols: C*KH*KW
        self.pixels = self.out_h * self.out_w
        self.params = params
        self.grads = {
            "W": cuda.device_array(params["W"].shape, np.float32, stream=stream),
            "b": cuda.device_array(params["b"].shape, np.float32, stream=stream),
        }
        self._cols = self._scratch((self.rows, self.pixels))
        self._product = self._scratch((f, self.pixels))  # Y, then dY
        self._y = self._scratch(self.out_shape)
        self._dx = self._scratch(in_shape)
        self._partials = self._bias_partials()

    def _build_batch(self, n: int):
        g, f = self.groups, self.out_shape[0]
        positions = n * self.pixels
        w_g = (g, f // g, self.rows // g)
        cols_g = (g, self.rows // g, positions)
        y_g = (g, f // g, positions)
        plan = gemm_plan_class(self.gemm)
        return {
            "forward": plan(w_g, cols_g),  # W_g @ cols_g
            "grad_w": plan(y_g, cols_g, trans_b=True),  # dY_g @ cols_g^T
            "grad_cols": plan(w_g, y_g, trans_a=True),  # W_g^T @ dY_g
            "cols": self._cols.view((self.rows, positions)),
            "product": self._product.view((f, positions)),
            "y": self._y.view((n, f, self.out_h, self.out_w)),
            "shapes": (w_g, cols_g, y_g),
        }

    def forward(self, x, train: bool, seed: int):
        n = x.shape[0]
        b = self._for_batch(n)
        w_g, cols_g, y_g = b["shapes"]
        s = self.stream
        k_im2col.im2col(
            x, self.kernel_h, self.kernel_w, self.stride, self.padding, out=b["cols"], stream=s
        )
        b["forward"](
            self.params["W"].reshape(w_g),
            b["cols"].reshape(cols_g),
            b["product"].reshape(y_g),
            stream=s,
        )
        y = b["y"]
        k_layout.to_image_major(
            b["product"], n, out=y.reshape(n, y.shape[1], self.pixels), stream=s
        )
        k_bias.add_bias(y, self.params["b"], stream=s)
        self._x_shape = tuple(x.shape)
        return y

    def backward(self, dy, need_dx: bool = True):
        n = dy.shape[0]
        b = self._for_batch(n)
        w_g, cols_g, y_g = b["shapes"]
        s = self.stream
        d_product = b["product"]
        k_layout.to_channel_major(dy.reshape(n, dy.shape[1], self.pixels), out=d_product, stream=s)
        self._bias_grad(dy, self.grads["b"])
        b["grad_w"](
            d_product.reshape(y_g),
            b["cols"].reshape(cols_g),
            self.grads["W"].reshape(w_g),
            stream=s,
        )
        if not need_dx:
            return None
        dcols = b["cols"]  # cols is no longer needed: reuse its memory
        b["grad_cols"](
            self.params["W"].reshape(w_g), d_product.reshape(y_g), dcols.reshape(cols_g), stream=s
        )
        if "dx" not in b:
            b["dx"] = self._dx.view((n, *self.in_shape))
        return k_im2col.col2im(
            dcols,
            self._x_shape,
            self.kernel_h,
            self.kernel_w,
            self.stride,
            self.padding,
            out=b["dx"],
            stream=s,
        )


class DeviceLinear(DeviceLayer):
    """``Linear`` on the device (§3.5): ``y = x @ W^T + b``; backward ``dW = dy^T @ x``,
    ``db = sum_n dy``, ``dx = dy @ W``, three GEMMs with the transposes done by the kernel's
    indexing (no transposed copies of W)."""

    def __init__(self, layer, in_shape, capacity, params, stream=0, gemm="numba") -> None:
        super().__init__(in_shape, (layer.out_features,), capacity, stream)
        self.gemm = gemm
        self.params = params
        self.grads = {
            "W": cuda.device_array(params["W"].shape, np.float32, stream=stream),
            "b": cuda.device_array(params["b"].shape, np.float32, stream=stream),
        }
        self._y = self._scratch(self.out_shape)
        self._dx = self._scratch(in_shape)
        self._partials = self._bias_partials()

    def _build_batch(self, n: int):
        (d_in,), (d_out,) = self.in_shape, self.out_shape
        plan = gemm_plan_class(self.gemm)
        return {
            "forward": plan((n, d_in), (d_out, d_in), trans_b=True),  # x @ W^T
            "grad_w": plan((n, d_out), (n, d_in), trans_a=True),  # dy^T @ x
            "grad_x": plan((n, d_out), (d_out, d_in)),  # dy @ W
            "y": self._y.view((n, d_out)),
            "dx": self._dx.view((n, d_in)),
        }

    def forward(self, x, train: bool, seed: int):
        b = self._for_batch(x.shape[0])
        b["forward"](x, self.params["W"], b["y"], stream=self.stream)
        k_bias.add_bias(b["y"], self.params["b"], stream=self.stream)
        self._x = x
        return b["y"]

    def backward(self, dy, need_dx: bool = True):
        b = self._for_batch(dy.shape[0])
        b["grad_w"](dy, self._x, self.grads["W"], stream=self.stream)
        self._bias_grad(dy, self.grads["b"])
        if not need_dx:
            return None
        return b["grad_x"](dy, self.params["W"], b["dx"], stream=self.stream)


class DeviceActivation(DeviceLayer):
    """``ReLU`` (§3.1) or ``Tanh`` on the device; backward from the cached output ``y``."""

    def __init__(self, forward_kernel, backward_kernel, in_shape, capacity, stream=0) -> None:
        super().__init__(in_shape, in_shape, capacity, stream)
        self._forward_kernel, self._backward_kernel = forward_kernel, backward_kernel
        self._y = self._scratch(in_shape)
        self._dx = self._scratch(in_shape)

    def _build_batch(self, n: int):
        return {"y": self._y.view((n, *self.in_shape)), "dx": self._dx.view((n, *self.in_shape))}

    def forward(self, x, train: bool, seed: int):
        b = self._for_batch(x.shape[0])
        return self._forward_kernel(x, b["y"], stream=self.stream)

    def backward(self, dy, need_dx: bool = True):
        b = self._for_batch(dy.shape[0])
        return self._backward_kernel(b["y"], dy, b["dx"], stream=self.stream)


class DeviceLocalResponseNorm(DeviceLayer):
    """``LocalResponseNorm`` (§3.3) on the device; caches x, y and scale for the backward."""

    def __init__(self, layer, in_shape, capacity, stream=0) -> None:
        super().__init__(in_shape, in_shape, capacity, stream)
        self.size, self.alpha, self.beta = layer.size, layer.alpha, layer.beta
        self.k, self.groups = layer.k, layer.groups
        self._y = self._scratch(in_shape)
        self._scale = self._scratch(in_shape)
        self._dx = self._scratch(in_shape)

    def _build_batch(self, n: int):
        shape = (n, *self.in_shape)
        return {
            "y": self._y.view(shape),
            "scale": self._scale.view(shape),
            "dx": self._dx.view(shape),
        }

    def forward(self, x, train: bool, seed: int):
        b = self._for_batch(x.shape[0])
        self._x = x
        y, _ = k_lrn.lrn_forward(
            x,
            self.size,
            self.alpha,
            self.beta,
            self.k,
            self.groups,
            y=b["y"],
            scale=b["scale"],
            stream=self.stream,
        )
        return y

    def backward(self, dy, need_dx: bool = True):
        b = self._for_batch(dy.shape[0])
        return k_lrn.lrn_backward(
            self._x,
            b["y"],
            b["scale"],
            dy,
            self.size,
            self.alpha,
            self.beta,
            self.groups,
            dx=b["dx"],
            stream=self.stream,
        )


class DeviceMaxPool2D(DeviceLayer):
    """``MaxPool2D`` (§3.4) on the device; caches the winners (``argmax``) for the backward."""

    def __init__(self, layer, in_shape, capacity, stream=0) -> None:
        super().__init__(in_shape, layer.output_shape(tuple(in_shape)), capacity, stream)
        self.kernel_size, self.stride = layer.kernel_size, layer.stride
        self.padding = layer.padding  # (top, left, bottom, right), e.g. BVLC's pool5
        self._y = self._scratch(self.out_shape)
        self._argmax = self._scratch(self.out_shape, k_maxpool.argmax_dtype(self.kernel_size))
        self._dx = self._scratch(in_shape)

    def _build_batch(self, n: int):
        return {
            "y": self._y.view((n, *self.out_shape)),
            "argmax": self._argmax.view((n, *self.out_shape)),
            "dx": self._dx.view((n, *self.in_shape)),
        }

    def forward(self, x, train: bool, seed: int):
        b = self._for_batch(x.shape[0])
        y, _ = k_maxpool.maxpool_forward(
            x,
            self.kernel_size,
            self.stride,
            y=b["y"],
            argmax=b["argmax"],
            stream=self.stream,
            padding=self.padding,
        )
        return y

    def backward(self, dy, need_dx: bool = True):
        n = dy.shape[0]
        b = self._for_batch(n)
        return k_maxpool.maxpool_backward(
            dy,
            b["argmax"],
            (n, *self.in_shape),
            self.kernel_size,
            self.stride,
            dx=b["dx"],
            stream=self.stream,
            padding=self.padding,
        )


class DeviceDropout(DeviceLayer):
    """``Dropout`` (§4.2, inverted) on the device. The mask of a training step is named by
    ``(seed, sequence)``: the network's per-step seed and this layer's position
    (``kernels/cuda/dropout.py``); nothing is stored between forward and backward. With
    ``train=False`` it is the identity and returns its input as is."""

    def __init__(self, layer, in_shape, capacity, sequence: int, stream=0) -> None:
        super().__init__(in_shape, in_shape, capacity, stream)
        self.p, self.sequence = layer.p, int(sequence)
        self._y = self._scratch(in_shape)
        self._dx = self._scratch(in_shape)

    def _build_batch(self, n: int):
        return {"y": self._y.view((n, *self.in_shape)), "dx": self._dx.view((n, *self.in_shape))}

    def forward(self, x, train: bool, seed: int):
        self._seed = seed if train else None
        if not train:
            return x
        b = self._for_batch(x.shape[0])
        return k_dropout.dropout_forward(
            x, self.p, seed, self.sequence, y=b["y"], stream=self.stream
        )

    def backward(self, dy, need_dx: bool = True):
        if self._seed is None:
            return dy
        b = self._for_batch(dy.shape[0])
        return k_dropout.dropout_backward(
            dy, self.p, self._seed, self.sequence, dx=b["dx"], stream=self.stream
        )


class DeviceFlatten(DeviceLayer):
    """``Flatten``: (N, C, H, W) -> (N, C*H*W), a reshaped view in both directions."""

    def __init__(self, in_shape, capacity, stream=0) -> None:
        super().__init__(in_shape, (math.prod(in_shape),), capacity, stream)

    def forward(self, x, train: bool, seed: int):
        return x.reshape(x.shape[0], self.out_shape[0])

    def backward(self, dy, need_dx: bool = True):
        return dy.reshape(dy.shape[0], *self.in_shape)


def device_layer(
    layer,
    in_shape: tuple,
    capacity: int,
    params: dict,
    sequence: int,
    stream=0,
    gemm: str = "numba",
) -> DeviceLayer:
    """The device twin of the CPU ``layer`` for inputs ``(N <= capacity, *in_shape)``.

    ``params``: the layer's parameters as device arrays (``{"W", "b"}`` or ``{}``);
    ``sequence``: the layer's position, naming its dropout masks; ``gemm``: ``"numba"`` (the
    hand-written SGEMM) or ``"cublas"`` for the products of Conv2D and Linear
    (``kernels.cuda.cublas.choose_gemm`` resolves ``"auto"``).
    """
    if isinstance(layer, L.Conv2D):
        return DeviceConv2D(layer, in_shape, capacity, params, stream, gemm)
    if isinstance(layer, L.Linear):
        return DeviceLinear(layer, in_shape, capacity, params, stream, gemm)
    if isinstance(layer, L.ReLU):
        return DeviceActivation(
            k_relu.relu_forward, k_relu.relu_backward, in_shape, capacity, stream
        )
    if isinstance(layer, L.Tanh):
        return DeviceActivation(
            k_tanh.tanh_forward, k_tanh.tanh_backward, in_shape, capacity, stream
        )
    if isinstance(layer, L.LocalResponseNorm):
        return DeviceLocalResponseNorm(layer, in_shape, capacity, stream)
    if isinstance(layer, L.MaxPool2D):
        return DeviceMaxPool2D(layer, in_shape, capacity, stream)
    if isinstance(layer, L.Dropout):
        return DeviceDropout(layer, in_shape, capacity, sequence, stream)
    if isinstance(layer, L.Flatten):
        return DeviceFlatten(in_shape, capacity, stream)
    raise TypeError(
        f"no GPU version of layer {layer!r}: the CUDA network supports Conv2D, "
        f"Linear, ReLU, Tanh, LocalResponseNorm, MaxPool2D, Dropout and Flatten"
    )
