"""AlexNet as a readable specification (Krizhevsky, Sutskever & Hinton 2012, §3 and Figure 2).

Each variant is a table that reads like the paper's: one row per convolutional layer (kernel,
stride, padding, filters, groups, bias init, LRN after it, pooling after it) and one row per
fully connected layer. ``AlexNet`` turns a table into an ordered list of layers from
``minialexnet.layers``::

    conv1 -> relu1 -> norm1 -> pool1 -> conv2 -> relu2 -> norm2 -> pool2 -> conv3 -> relu3
    -> conv4 -> relu4 -> conv5 -> relu5 -> pool5 -> flatten -> fc6 -> relu6 -> drop6
    -> fc7 -> relu7 -> drop7 -> fc8  (logits; the softmax lives in the loss)

Variants (``VARIANTS``):

- ``"paper"``: the network of the paper (docs/design.md §3), 227x227 input, 60,965,224 parameters,
  724,406,816 multiply-accumulates per image.
- ``"mini"``: the same topology and components, scaled to 59x59 crops of 64x64 images so that
  it trains in minutes on a laptop CPU.
- ``"tiny"``: the same topology on 31x31 inputs with a handful of channels, for whole-network
  gradient checks (``minialexnet.gradcheck.check_model``) and unit tests; not for training.
- ``"bvlc"``: BVLC's Caffe AlexNet exactly as the ONNX model zoo's ``bvlcalexnet-*.onnx``
  files compute it (224x224 input, LRN with k = 1, a padded pool5); see ``BVLC``.

A table may also come from a file: ``minialexnet.load_onnx`` builds one with the file's
channel counts, stored as ``variant="custom"`` plus the table itself in ``model.config``
(``variant_to_dict`` / ``variant_from_dict``), so every network rebuilds from its config.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np

from minialexnet.checks import check_array, check_rng
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
from minialexnet.preprocessing import BVLC_PREPROCESSING, check_class_names, check_preprocessing


@dataclass(frozen=True)
class Conv:
    """One convolutional row of a variant's table (a convolution, its ReLU, then LRN/pool).

    ``groups=2`` splits the filters into two halves that each see only their half of the input
    channels, exactly as the two GPUs of §3.2 did for conv2, conv4 and conv5.
    ``init``: the standard deviation of the initial weights, or ``"he"`` for
    ``sqrt(2 / fan_in)`` (He et al. 2015), fan_in = in_channels/groups * KH * KW.
    """

    name: str
    filters: int
    kernel: int
    stride: int
    padding: int
    groups: int
    init: float | str  # weights ~ N(0, init^2) (§5: 0.01)
    bias: float  # initial bias (§5: 1 where it "provides the ReLUs with positive inputs")
    lrn: bool  # local response normalization after the ReLU (§3.3)
    pool: bool  # max pooling after that (§3.4)
    # (top, left, bottom, right) padding of that pooling, never a maximum (-inf), as ONNX
    # pads; the paper pools without padding, Caffe's ceil-mode pool5 is (0, 0, 1, 1)
    pool_padding: tuple = (0, 0, 0, 0)


@dataclass(frozen=True)
class FC:
    """One fully connected row; ``units=None`` means "the number of classes" (fc8)."""

    name: str
    units: int | None
    init: float | str  # as in Conv; fan_in = in_features
    bias: float
    dropout: bool  # dropout after the ReLU (§4.2)


@dataclass(frozen=True)
class LRN:
    """The constants of local response normalization (§3.3), in the paper's convention:
    ``b_i = a_i / (k + alpha * sum_j a_j^2) ** beta`` over ``size`` neighbouring channels.

    ``alpha`` multiplies the plain *sum* of squares, as printed in the paper and as
    ``minialexnet.layers.LocalResponseNorm`` computes it. Caffe, cuda-convnet, ONNX's ``LRN``
    and PyTorch multiply the *mean* instead, so their alpha is ``alpha * size``: the paper's
    1e-4 is their 5e-4, and BVLC's (Caffe's) 1e-4 is our 2e-5. ``minialexnet.onnx_io``
    converts at the file boundary. ``groups=2``: windows stay within each half of the
    channels (each GPU's maps, §3.2); ``groups=1``: across all channels (Caffe, ONNX).
    """

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 2.0
    groups: int = 2


@dataclass(frozen=True)
class Variant:
    """A whole network: input crop size, conv rows, FC rows, the LRN constants (``norm``) and
    the max-pooling window (``pool_kernel`` x ``pool_kernel`` every ``pool_stride`` pixels,
    §3.4; each conv row says whether it pools and with which padding)."""

    input_size: int
    convs: tuple
    fcs: tuple
    norm: LRN = LRN()
    pool_kernel: int = 3
    pool_stride: int = 2


PAPER = Variant(
    input_size=227,
    convs=(
        #    name    filters kernel stride pad groups  init  bias   LRN    pool
        Conv("conv1", 96, 11, 4, 0, 1, 0.01, 0.0, True, True),
        Conv("conv2", 256, 5, 1, 2, 2, 0.01, 1.0, True, True),
        Conv("conv3", 384, 3, 1, 1, 1, 0.01, 0.0, False, False),
        Conv("conv4", 384, 3, 1, 1, 2, 0.01, 1.0, False, False),
        Conv("conv5", 256, 3, 1, 1, 2, 0.01, 1.0, False, True),
    ),
    fcs=(
        #  name   units  init  bias  dropout
        FC("fc6", 4096, 0.01, 1.0, True),
        FC("fc7", 4096, 0.01, 1.0, True),
        FC("fc8", None, 0.01, 0.0, False),
    ),
)

MINI = Variant(
    input_size=59,  # random 59x59 crops of 64x64 images (the paper: 227 of 256)
    convs=(
        #    name    filters kernel stride pad groups  init  bias   LRN    pool      output
        Conv("conv1", 32, 7, 2, 0, 1, 0.01, 0.0, True, True),  # 27 -> 13
        Conv("conv2", 64, 5, 1, 2, 2, "he", 1.0, True, True),  # 13 -> 6
        Conv("conv3", 96, 3, 1, 1, 1, "he", 0.0, False, False),  # 6
        Conv("conv4", 96, 3, 1, 1, 2, "he", 1.0, False, False),  # 6
        Conv("conv5", 64, 3, 1, 1, 2, "he", 1.0, False, True),  # 6 -> 2
    ),
    fcs=(
        FC("fc6", 256, 0.03, 1.0, True),
        FC("fc7", 256, 0.03, 1.0, True),
        FC("fc8", None, 0.01, 0.0, False),
    ),
)

TINY = Variant(
    input_size=31,
    convs=(
        Conv("conv1", 4, 3, 2, 0, 1, "he", 0.0, True, True),  # 15 -> 7
        Conv("conv2", 8, 5, 1, 2, 2, "he", 1.0, True, True),  # 7 -> 3
        Conv("conv3", 8, 3, 1, 1, 1, "he", 0.0, False, False),  # 3
        Conv("conv4", 8, 3, 1, 1, 2, "he", 1.0, False, False),  # 3
        Conv("conv5", 8, 3, 1, 1, 2, "he", 1.0, False, True),  # 3 -> 1
    ),
    fcs=(
        FC("fc6", 8, "he", 1.0, True),
        FC("fc7", 8, "he", 1.0, True),
        FC("fc8", None, "he", 0.0, False),
    ),
)

BVLC = Variant(
    input_size=224,  # the ONNX files' data_0 is 1x3x224x224; Caffe itself cropped 227
    convs=(
        #    name    filters kernel stride pad groups  init  bias   LRN    pool      output
        Conv("conv1", 96, 11, 4, 0, 1, 0.01, 0.0, True, True),  # 54 -> 26
        Conv("conv2", 256, 5, 1, 2, 2, 0.01, 0.1, True, True),  # 26 -> 12
        Conv("conv3", 384, 3, 1, 1, 1, 0.01, 0.0, False, False),  # 12
        Conv("conv4", 384, 3, 1, 1, 2, 0.01, 0.1, False, False),  # 12
        Conv(
            "conv5",
            256,
            3,
            1,
            1,
            2,
            0.01,
            0.1,
            False,
            True,  # 12 -> 6
            (0, 0, 1, 1),
        ),
    ),
    fcs=(
        FC("fc6", 4096, 0.005, 0.1, True),
        FC("fc7", 4096, 0.005, 0.1, True),
        FC("fc8", None, 0.01, 0.0, False),
    ),
    norm=LRN(size=5, alpha=1e-4 / 5, beta=0.75, k=1.0, groups=1),  # Caffe/ONNX alpha 1e-4
)
"""BVLC's Caffe AlexNet (Caffe's ``models/bvlc_alexnet``, 57.1% top-1 / 80.2% top-5 on
ILSVRC-2012 val with one centre crop), as the ONNX model zoo's ``bvlcalexnet-*.onnx`` files
compute it. Differences from the paper:

- LRN ``k = 1`` instead of 2, with Caffe's alpha 1e-4 *over the window*: ``alpha = 1e-4 / 5``
  in the paper's convention (the paper: 1e-4 on the plain sum), and across all channels
  (``groups=1``) instead of within each GPU's half;
- input 224x224 (the ONNX files' ``data_0``): conv1's 11x11/4 gives 54x54, pool1 26, pool2
  12, and pool5 pads one row at the bottom and one column at the right, ``(0, 0, 1, 1)``,
  to end at 6x6 (Caffe's ceil-mode pooling as converted for 224 inputs). At Caffe's own 227
  crops the same layers give 55, 27, 13, 6, and the padding is never reached;
- initialization (the ``init`` and ``bias`` columns, for training it again): biases 0.1
  instead of 1 ("initialization to 1 gave flat loss"), fc6/fc7 weights from N(0, 0.005^2);
- trained without the PCA colour augmentation of §4.1;
- preprocessing: BGR images minus the mean pixel (104, 117, 123) (BGR order) on 0..255 values,
  instead of RGB minus the mean image (``minialexnet.preprocessing``).

Like the paper's network (and Caffe's), its conv2, conv4 and conv5 have two groups.
"""

VARIANTS = {"paper": PAPER, "mini": MINI, "tiny": TINY, "bvlc": BVLC}
CUSTOM = "custom"  # config["variant"] of a network whose table came from a file


def variant_to_dict(variant: Variant) -> dict:
    """A JSON-ready dict of a table (lists, not tuples, so it survives a JSON round trip and
    compares equal afterwards); ``variant_from_dict`` reverses it."""

    def row(r) -> dict:
        d = asdict(r)
        if "pool_padding" in d:
            d["pool_padding"] = list(d["pool_padding"])
        return d

    return {
        "input_size": variant.input_size,
        "convs": [row(r) for r in variant.convs],
        "fcs": [row(r) for r in variant.fcs],
        "norm": asdict(variant.norm),
        "pool_kernel": variant.pool_kernel,
        "pool_stride": variant.pool_stride,
    }


def variant_from_dict(table: dict) -> Variant:
    """The ``Variant`` of a dict written by ``variant_to_dict`` (e.g. from a checkpoint)."""
    try:
        return Variant(
            input_size=table["input_size"],
            convs=tuple(
                Conv(**dict(r, pool_padding=tuple(r.get("pool_padding", (0,) * 4))))
                for r in table["convs"]
            ),
            fcs=tuple(FC(**r) for r in table["fcs"]),
            norm=LRN(**table["norm"]),
            pool_kernel=table["pool_kernel"],
            pool_stride=table["pool_stride"],
        )
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"not an AlexNet table (as written by variant_to_dict): {err}; got {table!r:.300}"
        ) from None


ACTIVATIONS = ("relu", "tanh")

# -- initialisation schemes ------------------------------------------------------------------
INITS = ("paper", "bvlc")
"""``init="paper"``: the tables as written (§5: N(0, 0.01^2), biases 1 in conv2/4/5 and fc6/7).
``init="bvlc"``: BVLC's Caffe reference AlexNet (models/bvlc_alexnet in BVLC/caffe): every
bias of 1 becomes 0.1, "found necessary for training, as initialization to 1 gave flat loss",
and fc6/fc7 weights drawn with std 0.005 where the table says 0.01 (its train_val.prototxt).
The ``AlexNet`` docstring gives the measurements behind the choice."""
BVLC_BIAS = 0.1
BVLC_FC_HIDDEN_STD = 0.005


def initial_values(row, init: str) -> tuple:
    """``(weight init, bias)`` of a table row under the scheme ``init`` (see ``INITS``)."""
    if init == "paper":
        return row.init, row.bias
    hidden_fc = isinstance(row, FC) and row.units is not None
    weight = BVLC_FC_HIDDEN_STD if hidden_fc and row.init == 0.01 else row.init
    return weight, BVLC_BIAS if row.bias == 1.0 else row.bias


@dataclass(frozen=True)
class LayerInfo:
    """One row of ``AlexNet.shape_trace()``: a layer's output shape (no batch axis), its
    parameter count and its multiply-accumulates per example."""

    name: str
    description: str
    output_shape: tuple
    parameters: int
    macs: int


class AlexNet:
    """AlexNet (§3, Figure 2) on one device; ``forward`` returns the logits of fc8.

    Parameters
    ----------
    num_classes : outputs of fc8 (1000 for ILSVRC)
    variant : ``"paper"``, ``"mini"``, ``"tiny"``, ``"bvlc"`` (see ``VARIANTS`` and the module
        docstring) or ``"custom"`` with ``table``
    rng : ``numpy.random.Generator`` for the initial weights and, kept as ``self.rng``, for
        the dropout masks (default: ``np.random.default_rng()``)
    activation : ``"relu"`` (the paper) or ``"tanh"`` (the saturating baseline of Figure 1)
    lrn : ``False`` removes both local response normalization layers (ablation of §3.3)
    overlapping_pool : ``False`` pools with 2x2 windows of stride 2 instead of 3x3 of stride
        2 (ablation of §3.4); in "paper" the output sizes stay 27, 13, 6 as the paper says,
        in "mini" the last map becomes 3x3 instead of 2x2 (fc6 gets more inputs)
    dropout : drop probability of the two dropout layers; ``0`` removes them (§4.2)
    table : for ``variant="custom"``: the network's own table, a ``Variant`` or the dict of
        ``variant_to_dict`` (``minialexnet.load_onnx`` builds one from a file)
    preprocessing : what the input pixels must be, a dict described in
        ``minialexnet.preprocessing``; default ``{"channels": "RGB", "mean": "image"}`` (RGB
        minus the training mean image, §2), for ``"bvlc"`` BGR minus the mean pixel
        ``[104, 117, 123]``
    class_names : optional list of ``num_classes`` names, fc8's output ``i`` being class ``i``

    Attributes: ``input_size`` (crop side, e.g. 227), ``layers`` (``OrderedDict`` name ->
    layer, in forward order), ``config`` (the constructor's arguments, JSON-ready, stored in
    checkpoints, with the table itself for ``"custom"``), ``rng``, ``preprocessing`` and
    ``class_names`` (the config's).

    Initialization (§5, the ``init`` and ``bias`` columns of the tables): "paper" draws every
    weight from N(0, 0.01^2) and sets the biases of conv2, conv4, conv5, fc6 and fc7 to 1 (the
    others to 0). "mini" keeps those biases and 0.01 for conv1 (its inputs are 0..255 pixel
    values, as in the paper) and fc8, but draws conv2-conv5 from N(0, 2 / fan_in) (He et al.
    2015) and fc6/fc7 from N(0, 0.03^2). Why, measured on the built-in dataset: a layer
    scales its input by about ``std * sqrt(fan_in)``; with 0.01 that gain is 0.2-1.0 in the
    paper's wide layers but 0.12-0.24 in mini's narrow ones, so the signal (and conv1-conv4's
    gradient) all but vanishes and mini with 0.01 everywhere stays at chance for many epochs.
    He in the conv layers fixes that. He in fc6/fc7 as well (std 0.088) makes the fully
    connected activations ~20 on these 0..255-scale inputs, and fc8 and the loss blow up in
    the first steps (the training loss rose to 10-100 on 24 images); 0.03 is in between and
    learns from a few hundred steps at lr 0.003 (lr 0.01 stalls). "tiny" (gradient checks
    only) uses He everywhere. The biases of 1 are for ReLUs ("providing the ReLUs with
    positive inputs"); with ``activation="tanh"`` they push every unit of fc6/fc7 towards
    tanh(1) for all images alike, and the mini tanh network stays at chance (measured in
    notebook 03, which sets all biases to 0 for its ReLU-vs-tanh comparison).

    ``init="bvlc"`` (the paper's scheme stays the default, ``init="paper"``): every
    bias of 1 becomes 0.1 and fc6/fc7 weights get std 0.005 where the table says 0.01, as in
    BVLC's Caffe reference AlexNet, whose notes say biases of 1 "gave flat loss". Measured on
    the paper network, 16 centre crops of the built-in shapes at 256 px, one forward pass
    (``||x||^2``: the squared norm of a layer's input per image; "image part": the spread of
    each input unit over the images relative to its mean size, 0 = the same for every image)::

        into layer     ||x||^2 paper   bvlc      image part paper  bvlc
        conv5                 70,030   2,799                0.11   0.52
        fc6                   12,170     221                0.04   0.22
        fc7                    8,625      63                0.03   0.13
        fc8                    7,402      47                0.02   0.04

    The biases of 1 add the same positive value to every unit of conv4-fc7 for every image,
    so the inputs of the fully connected layers are large and almost image-independent. For
    fc8 the curvature of the loss along that common direction is about ``||x||^2`` times the
    softmax's (at most 1/2), and momentum SGD is stable only while ``lr * curvature < 2 (1 +
    0.9) = 3.8``: with the paper's init lr 0.01 gives up to 0.01 * 7,402 / 2 = 37, with BVLC's
    0.24. Overfitting one fixed batch of 16 images (dropout off, lr 0.01, §5's momentum and
    decay): "paper" went from 2.38 to 1.01 at step 70, then 1.98, 195 and NaN by step 100;
    "bvlc" had all 16 right and a loss of 0.0015 at step 20. On ImageNet the same common
    direction moves the logits of whichever classes are in a batch by many units per step,
    the loss of 10.2 and then flat ~4.7 (chance) seen on the 100 real ILSVRC samples.

    Deviations from the paper, and why:

    - Input 227x227 instead of the "224x224" of the text: 224 does not give conv1's 55x55
      output with an 11x11 kernel of stride 4 ((227 - 11) / 4 + 1 = 55); Caffe crops 227 and
      cuda-convnet effectively padded 224 by 3 pixels.
    - One device: the two-GPU split (§3.2) is emulated by ``groups=2`` in conv2, conv4, conv5
      and in both LRN layers, which computes exactly the same function (conv3 and the fully
      connected layers read both halves, as in the paper); ``minialexnet.parallel`` runs the
      real two-tower version.
    - Inverted dropout: kept units are scaled by 1/(1-p) during training and the test-time
      network is used as is, instead of multiplying the outputs by 0.5 at test time; the two
      are equal in expectation (§4.2).
    - LRN: ``alpha`` is used as printed in §3.3 (``k + alpha * sum a^2``); Caffe, cuda-convnet
      and ``torch.nn.LocalResponseNorm`` divide alpha by the window size, so their alpha is
      ``1e-4 * 5``.
    - fc8 returns logits; the softmax is folded into ``SoftmaxCrossEntropy`` (the same
      function, numerically stable).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "paper",
        rng: np.random.Generator | None = None,
        *,
        activation: str = "relu",
        lrn: bool = True,
        overlapping_pool: bool = True,
        dropout: float = 0.5,
        table: Variant | dict | None = None,
        preprocessing: dict | None = None,
        class_names: list | None = None,
        init: str = "paper",
    ) -> None:
        if variant == CUSTOM:
            if table is None:
                raise ValueError(
                    "variant='custom' needs its table: pass table=Variant(...) "
                    "or the dict of variant_to_dict"
                )
            table = table if isinstance(table, Variant) else variant_from_dict(table)
        elif variant not in VARIANTS:
            raise ValueError(
                f"unknown AlexNet variant {variant!r}; choose one of "
                f"{', '.join(VARIANTS)} (or 'custom' with a table)"
            )
        elif table is not None:
            raise ValueError(
                f"table= is only for variant='custom'; the {variant!r} variant has its own table"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        if preprocessing is None and variant == "bvlc":
            preprocessing = BVLC_PREPROCESSING
        self.config = {
            "variant": variant,
            "num_classes": int(num_classes),
            "activation": activation,
            "lrn": bool(lrn),
            "overlapping_pool": bool(overlapping_pool),
            "dropout": float(dropout),
            "init": init,
            "preprocessing": check_preprocessing(preprocessing),
            "class_names": check_class_names(class_names, num_classes),
        }
        if variant == CUSTOM:
            self.config["table"] = variant_to_dict(table)
        self.variant = table if variant == CUSTOM else VARIANTS[variant]
        self.num_classes = int(num_classes)
        self.input_size = self.variant.input_size
        if rng is not None:
            check_rng(rng, "AlexNet")
        self.rng = rng if rng is not None else np.random.default_rng()
        self.layers: OrderedDict = OrderedDict()
        self._descriptions: dict[str, str] = {}
        self._build()

    @property
    def preprocessing(self) -> dict:
        """What the input pixels must be (``minialexnet.preprocessing``)."""
        return self.config["preprocessing"]

    @property
    def class_names(self) -> list | None:
        """The name of each of fc8's outputs, or ``None``."""
        return self.config["class_names"]

    @classmethod
    def from_config(cls, config: dict, rng: np.random.Generator | None = None) -> AlexNet:
        """Rebuild a network from ``model.config`` (as stored in a checkpoint's meta)."""
        config = dict(config)
        return cls(config.pop("num_classes"), config.pop("variant"), rng, **config)

    # -- construction ---------------------------------------------------------------------

    def _add(self, name: str, layer, description: str) -> None:
        self.layers[name] = layer
        self._descriptions[name] = description

    def _build(self) -> None:
        cfg, v = self.config, self.variant
        activation = {"relu": ReLU, "tanh": Tanh}[cfg["activation"]]
        pool_k, pool_s = (v.pool_kernel, v.pool_stride) if cfg["overlapping_pool"] else (2, 2)
        norm = v.norm
        channels = 3
        for row in v.convs:
            i = row.name[len("conv") :]
            conv = Conv2D(
                channels,
                row.filters,
                row.kernel,
                stride=row.stride,
                padding=row.padding,
                groups=row.groups,
                rng=self.rng,
                # Winograd for each call where it applies (conv2's 5x5, conv3-conv5's 3x3),
                # the layer is wide enough and the batch large enough to gain from it
                # (minialexnet/layers/winograd.py): 6.25x and 2.25x fewer multiplies; in a
                # paper step at batch 32 on the 2-core AMD machine conv2 took 80 ms instead
                # of 163 through im2col. "mini" and "tiny", and conv3-conv5 below 16 images,
                # go through im2col.
                algorithm="auto",
            )
            weight, bias = initial_values(row, cfg["init"])
            self._init(conv, weight, fan_in=channels // row.groups * row.kernel**2, bias=bias)
            self._add(
                row.name,
                conv,
                f"conv {row.kernel}x{row.kernel}/{row.stride} pad "
                f"{row.padding}, {row.filters} filters"
                + (f", {row.groups} groups" if row.groups > 1 else ""),
            )
            self._add(f"{cfg['activation']}{i}", activation(), cfg["activation"])
            if row.lrn and cfg["lrn"]:
                self._add(
                    f"norm{i}",
                    LocalResponseNorm(
                        size=norm.size,
                        alpha=norm.alpha,
                        beta=norm.beta,
                        k=norm.k,
                        groups=norm.groups,
                    ),
                    f"LRN n={norm.size} k={norm.k:g} alpha={norm.alpha:g} "
                    f"beta={norm.beta:g}, {norm.groups} groups",
                )
            if row.pool:
                self._add(
                    f"pool{i}",
                    MaxPool2D(pool_k, pool_s, padding=row.pool_padding),
                    f"max pool {pool_k}x{pool_k}/{pool_s}"
                    + (f" pad {row.pool_padding}" if any(row.pool_padding) else ""),
                )
            channels = row.filters
        self._add("flatten", Flatten(), "flatten")
        features = math.prod(self._output_shape())
        for row in v.fcs:
            i = row.name[len("fc") :]
            units = self.num_classes if row.units is None else row.units
            fc = Linear(features, units, rng=self.rng)
            weight, bias = initial_values(row, cfg["init"])
            self._init(fc, weight, fan_in=features, bias=bias)
            self._add(row.name, fc, f"fully connected {features} -> {units}")
            if row.units is not None:  # hidden layers; fc8 stays linear (logits)
                self._add(f"{cfg['activation']}{i}", activation(), cfg["activation"])
                if row.dropout and cfg["dropout"] > 0:
                    self._add(
                        f"drop{i}",
                        Dropout(p=cfg["dropout"], rng=self.rng),
                        f"dropout p={cfg['dropout']:g}",
                    )
            features = units

    def _init(self, layer, init: float | str, fan_in: int, bias: float) -> None:
        """Weights ~ N(0, std^2) with std = ``init`` or sqrt(2 / fan_in) for ``"he"``; b = bias.

        A std of 0.01 keeps the layer's own draw: Conv2D and Linear already initialize their
        weights from N(0, 0.01^2), the paper's §5 (drawing 61M numbers twice costs seconds).
        """
        std = math.sqrt(2.0 / fan_in) if init == "he" else float(init)
        if std != 0.01:
            w = layer.params["W"]
            w[...] = self.rng.standard_normal(w.shape, dtype=np.float32) * np.float32(std)
        layer.params["b"][...] = np.float32(bias)

    def _output_shape(self) -> tuple:
        shape = (3, self.input_size, self.input_size)
        for layer in self.layers.values():
            shape = tuple(layer.output_shape(shape))
        return shape

    # -- the layer protocol ---------------------------------------------------------------

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits ``(N, num_classes)`` of images ``x`` of shape ``(N, 3, S, S)``.

        ``S = input_size``; ``x`` is float32 (float64 in gradient checks), mean-subtracted
        RGB in the 0..255 scale (§2). ``train=True`` turns dropout on.
        """
        check_array(x, "AlexNet", 4, "(N, 3, H, W)", channels=3)
        if x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"this AlexNet ({self.config['variant']!r}) takes "
                f"{self.input_size}x{self.input_size} crops, got images of "
                f"{x.shape[2]}x{x.shape[3]}; crop or resize the input first"
            )
        for layer in self.layers.values():
            x = layer.forward(x, train=train)
        return x

    __call__ = forward

    def backward(self, dlogits: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """Back-propagate ``dL/dlogits`` ``(N, num_classes)``; sets every layer's grads and
        returns ``dL/dx`` of the input's shape.

        ``need_dx=False`` (a training step: nobody needs the images' gradient) returns None
        and lets conv1 skip its input gradient. With frozen layers (``freeze``) it stops at
        the lowest trainable layer: nothing below needs a gradient, so their backward passes
        are skipped, that layer computes no input gradient, and it returns ``None``.
        """
        layers = list(self.layers.values())
        lowest = next(i for i, layer in enumerate(layers) if layer.params and not layer.frozen)
        for layer in reversed(layers[lowest + 1 :]):
            dlogits = layer.backward(dlogits)
        return layers[lowest].backward(dlogits, need_dx=need_dx and lowest == 0)

    def freeze(self, upto: str | None) -> None:
        """Fine-tuning: freeze every layer with parameters up to and including ``upto``.

        ``freeze("fc7")`` is feature extraction (only fc8 learns), ``freeze("conv5")`` keeps
        the convolutional features, ``freeze(None)`` makes everything trainable again. A
        frozen layer computes no weight gradients and the optimizer leaves its parameters
        bit-identical (``Layer.frozen``); backward stops at the lowest trainable layer.
        """
        names = [name for name, layer in self.layers.items() if layer.params]
        if upto is not None and upto not in names[:-1]:
            raise ValueError(
                f"cannot freeze up to {upto!r}: choose one of "
                f"{', '.join(names[:-1])} (fc8, the classifier, always learns)"
            )
        cut = 0 if upto is None else names.index(upto) + 1
        for i, name in enumerate(names):
            layer = self.layers[name]
            layer.frozen = i < cut
            if layer.frozen:
                layer.grads = {}

    @property
    def frozen_layers(self) -> list[str]:
        """Names of the frozen layers (``freeze``), in forward order."""
        return [name for name, layer in self.layers.items() if layer.params and layer.frozen]

    def frozen_parameters(self) -> set[str]:
        """Names of the frozen parameters, e.g. ``{"conv1.W", "conv1.b"}``: ``SGD`` skips
        them."""
        return {f"{name}.{key}" for name in self.frozen_layers for key in self.layers[name].params}

    def named_parameters(self):
        """Yield ``(name, param, grad)`` in forward order, e.g. ``("conv1.W", W, dW)``.

        ``grad`` is ``None`` before the first ``backward`` and for a frozen layer. The arrays
        are the layers' own (not copies): the optimizer updates them in place.
        """
        for layer_name, layer in self.layers.items():
            for key, param in layer.params.items():
                yield f"{layer_name}.{key}", param, layer.grads.get(key)

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter, keyed ``"conv1.W"``, ``"conv1.b"``, ... in forward order."""
        return OrderedDict((name, p.copy()) for name, p, _ in self.named_parameters())

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` into the parameters in place (strict: the names and shapes must
        match exactly); values are cast to the parameters' dtype."""
        own = {name: p for name, p, _ in self.named_parameters()}
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match this AlexNet "
                f"({self.config['variant']!r}, {self.num_classes} classes): "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        for name, p in own.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(
                    f"state dict entry {name} has shape {value.shape}, this "
                    f"AlexNet expects {p.shape}; was it saved from another "
                    f"variant or number of classes?"
                )
        for name, p in own.items():
            p[...] = state[name]

    def astype(self, dtype) -> AlexNet:
        """Cast every parameter (and gradient) to ``dtype`` in place; returns ``self``."""
        for layer in self.layers.values():
            layer.astype(dtype)
        return self

    # -- description ----------------------------------------------------------------------

    def shape_trace(self) -> list[LayerInfo]:
        """Per layer, in order: output shape of one example, parameters, multiply-accumulates.

        The first row is the input (``(3, S, S)``). Computed from ``output_shape`` and
        ``macs`` without running the network.
        """
        shape = (3, self.input_size, self.input_size)
        rows = [LayerInfo("input", "image crop", shape, 0, 0)]
        for name, layer in self.layers.items():
            macs = int(layer.macs(shape))
            shape = tuple(layer.output_shape(shape))
            params = sum(int(p.size) for p in layer.params.values())
            rows.append(LayerInfo(name, self._descriptions[name], shape, params, macs))
        return rows

    def num_parameters(self) -> int:
        """Total number of parameters (60,965,224 for the paper's network)."""
        return sum(int(p.size) for _, p, _ in self.named_parameters())

    def macs(self) -> int:
        """Multiply-accumulates of one image's forward pass (724,406,816 for the paper's)."""
        return sum(row.macs for row in self.shape_trace())

    def summary(self) -> str:
        """A table of every layer's output shape, parameters and multiply-accumulates."""
        rows = self.shape_trace()
        header = f"{'layer':<9} {'':<44} {'output shape':<16} {'parameters':>12} {'MACs':>14}"
        lines = [
            f"AlexNet({self.config['variant']!r}, {self.num_classes} classes, "
            f"activation={self.config['activation']!r})",
            header,
            "-" * len(header),
        ]
        for r in rows:
            lines.append(
                f"{r.name:<9} {r.description:<44} {str(r.output_shape):<16} "
                f"{r.parameters:>12,} {r.macs:>14,}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'total':<9} {'':<44} {'':<16} {self.num_parameters():>12,} "
            f"{sum(r.macs for r in rows):>14,}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"AlexNet(num_classes={self.num_classes}, variant={self.config['variant']!r}, "
            f"activation={self.config['activation']!r})"
        )
