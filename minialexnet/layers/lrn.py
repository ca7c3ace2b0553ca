"""Local response normalization (§3.3)."""

from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.checks import check_array, check_positive_int, check_real, check_same_shape
from minialexnet.layers.base import Layer


class LocalResponseNorm(Layer):
    """Local response normalization across channels, exactly as printed in §3.3.

    For the activity ``a`` of channel ``i`` at one pixel::

        b_i = a_i / (k + alpha * sum_{j in window(i)} a_j^2) ** beta

    with ``window(i) = i - size//2 .. i + size//2``, clipped at the first and last channel of
    ``i``'s group. The paper's constants are ``k = 2, size = n = 5, alpha = 1e-4,
    beta = 0.75``, applied after the ReLUs of conv1 and conv2; LRN lowered the error by
    1.4 / 1.2 points (top-1 / top-5). A channel is damped by strong activity in its
    neighbours, a form of "lateral inhibition".

    **Beware the alpha convention.** ``alpha`` here multiplies the plain *sum* of squares, as
    in the paper. Caffe, cuda-convnet and ``torch.nn.LocalResponseNorm`` instead multiply the
    *mean* over the window (``alpha / size`` times the sum), so the paper's ``alpha = 1e-4``
    with ``size = 5`` is their ``alpha = 5e-4``::

        LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
            == torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    (PyTorch also counts the zero channels past the edges when it averages; with the size
    factored out that is the same clipped sum.)

    **Groups.** ``groups=2`` splits the channels into two halves and keeps every window inside
    its own half: on the paper's two GPUs each saw only its half of the maps (§3.2), so
    channels 47 and 48 of conv1's 96 never normalized each other. ``C`` must divide evenly.

    **Odd sizes only.** The window ``i - size//2 .. i + size//2`` is centred on ``i`` and has
    ``2 * (size//2) + 1`` channels, which equals ``size`` only for odd sizes; an even size
    would silently use ``size + 1`` channels (PyTorch instead shifts an even window off
    centre). Rather than guess, an even size raises ``ValueError``.

    ``forward(x)``: ``x`` (N, C, H, W) float32/float64; ``y`` the same shape and dtype.
    ``backward(dy)``: ``dx`` of ``x``'s shape and dtype, with ``s_i`` the denominator's base::

        dx_i = dy_i * s_i**-beta - 2 alpha beta x_i sum_{j: i in window(j)} dy_j y_j / s_j

    The loops are in ``minialexnet.kernels.<backend>.lrn`` (readable NumPy or Numba).
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.size = check_positive_int(size, "LocalResponseNorm size")
        if self.size % 2 == 0:
            raise ValueError(
                f"LocalResponseNorm size must be odd so that the window "
                f"i - size//2 .. i + size//2 is centred on channel i and holds "
                f"exactly size channels; got size={size} (the paper uses 5)"
            )
        self.alpha = check_real(alpha, "LocalResponseNorm: alpha", 0.0)
        self.beta = check_real(beta, "LocalResponseNorm: beta", 0.0)
        # k > 0 keeps the denominator's base positive even where every activity is 0.
        self.k = check_real(k, "LocalResponseNorm: k", 0.0, low_inclusive=False)
        self.groups = check_positive_int(groups, "LocalResponseNorm groups")

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "LocalResponseNorm", ndim=4, layout="(N, C, H, W)")
        if x.shape[1] % self.groups:
            raise ValueError(
                f"LocalResponseNorm with groups={self.groups} needs a channel "
                f"count divisible by {self.groups}, got C={x.shape[1]} "
                f"(input shape {x.shape})"
            )
        y, scale = kernels().lrn_forward(x, self.size, self.alpha, self.beta, self.k, self.groups)
        # Backward recomputes y from x and scale: keeping y too would hold one more array of
        # x's size until backward (norm1 + norm2 at batch 128: 244 MB). x itself costs
        # nothing extra: the ReLU before keeps it as its output.
        self._cache = (x, scale)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, scale = self._cached()
        check_same_shape(dy, x.shape, "LocalResponseNorm")
        return kernels().lrn_backward(
            x,
            scale,
            dy.astype(x.dtype, copy=False),
            self.size,
            self.alpha,
            self.beta,
            self.groups,
        )

    def __repr__(self) -> str:
        return (
            f"LocalResponseNorm(size={self.size}, alpha={self.alpha}, beta={self.beta}, "
            f"k={self.k}, groups={self.groups})"
        )
