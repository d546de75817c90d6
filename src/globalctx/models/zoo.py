"""Paper models: ResNets with each block at its paper placement (research tables §1-§9).

One function per model, registered under its own name. A model is registered only when its
block is (``globalctx.list_blocks()``), so every name in :func:`globalctx.list_models` can be
built. Parameter counts (1000 classes) equal research tables §16. Every function takes
``num_classes``, ``in_chans``, ``attn`` (more blocks on top) and the :class:`ResNet` options
(``base_width``, ``device``, ``dtype``, ...).

Which layout and placement each model follows, and why: ``docs/models.md`` ("Paper models").
"""

from __future__ import annotations

from collections.abc import Callable

from ..layers import list_blocks
from .placement import Placement
from .registry import register_model
from .resnet import ResNet, build_resnet

__all__ = [
    "gc_resnet50", "gc_resnet50_r4", "gc_resnet50_c2c5", "gc_resnet18_small", "snl_resnet50",
    "se_resnet50", "se_resnet101", "se_resnet18_small", "eca_resnet50", "eca_resnet50_rule",
    "eca_resnet101", "fca_resnet50", "srm_resnet50", "srm_resnet101", "gct_resnet50", "gsop_resnet50",
    "nl_resnet50", "nl_resnet50_1", "dnl_resnet50",
]  # fmt: skip

# ECA-Net's released kernel sizes per stage (BangguWu/ECANet README)
ECA_RELEASED_K = {50: (3, 5, 5, 7), 101: (3, 3, 5, 7)}
# FcaNet: DCT size per stage, c2wh = {64: 56, 128: 28, 256: 14, 512: 7} keyed by planes (224 px input)
FCA_DCT_SIZES = {1: {"dct_size": 56}, 2: {"dct_size": 28}, 3: {"dct_size": 14}, 4: {"dct_size": 7}}


def _paper(block: str) -> Callable[[Callable[..., ResNet]], Callable[..., ResNet]]:
    """Register the decorated model under its function name when ``block`` is registered."""

    def wrap(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
        if block in list_blocks():
            register_model(fn.__name__)(fn)
        return fn

    return wrap


def _eca_released(depth: int) -> Placement:
    ks = ECA_RELEASED_K[depth]
    return Placement("eca", stage_options={s + 1: {"kernel_size": k} for s, k in enumerate(ks)})


@_paper("gc")
def gc_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """GCNet ResNet-50: GC r16 after conv3+BN of every bottleneck of c3-c5 (28,078,773)."""
    p = Placement("gc", stages=(2, 3, 4))
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("gc")
def gc_resnet50_r4(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """GCNet ResNet-50, GC r4 in every bottleneck of c3-c5 (35,557,941)."""
    p = Placement("gc", stages=(2, 3, 4), rd_ratio=1 / 4)
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("gc")
def gc_resnet50_c2c5(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """GCNet ResNet-50, GC r16 in every bottleneck of c2-c5 (28,105,032)."""
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[Placement("gc"), attn], **kw)


@_paper("gc")
def gc_resnet18_small(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """Small-input ResNet-18 (CIFAR stem) with GC r16 in stages 2-4."""
    p = Placement("gc", stages=(2, 3, 4))
    return build_resnet(18, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], stem="small", **kw)


@_paper("snl")
def snl_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ResNet-50 with simplified NL after conv3+BN of every bottleneck of c3-c5."""
    p = Placement("snl", stages=(2, 3, 4))
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("se")
def se_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """SE-ResNet-50, r16 with FC biases, in every bottleneck (28,088,024)."""
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[Placement("se"), attn], **kw)


@_paper("se")
def se_resnet101(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """SE-ResNet-101, r16 with FC biases (49,326,872)."""
    return build_resnet(101, num_classes=num_classes, in_chans=in_chans, attn=[Placement("se"), attn], **kw)


@_paper("se")
def se_resnet18_small(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """Small-input ResNet-18 (CIFAR stem) with SE r16 in every block."""
    p = Placement("se")
    return build_resnet(18, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], stem="small", **kw)


@_paper("eca")
def eca_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ECA-Net50 as released: k = 3, 5, 5, 7 per stage (25,557,112)."""
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[_eca_released(50), attn], **kw)


@_paper("eca")
def eca_resnet50_rule(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ECA-Net50 with the paper's adaptive k rule (k = 5, 5, 5, 7)."""
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[Placement("eca"), attn], **kw)


@_paper("eca")
def eca_resnet101(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ECA-Net101 as released: k = 3, 3, 5, 7 per stage (44,549,317)."""
    return build_resnet(101, num_classes=num_classes, in_chans=in_chans, attn=[_eca_released(101), attn], **kw)


@_paper("fca")
def fca_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """FcaNet-50 (top16 frequencies, r16, no FC bias; DCT 56/28/14/7) (28,071,976)."""
    p = Placement("fca", stage_options=FCA_DCT_SIZES)
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("srm")
def srm_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """SRM-ResNet-50, SRM in every bottleneck (25,617,448)."""
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[Placement("srm"), attn], **kw)


@_paper("srm")
def srm_resnet101(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """SRM-ResNet-101 (44,679,208)."""
    return build_resnet(101, num_classes=num_classes, in_chans=in_chans, attn=[Placement("srm"), attn], **kw)


@_paper("gct")
def gct_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """GCT-ResNet-50: GCT before every conv, stem and shortcut included, stride on the first 1x1
    conv as the official GCT ResNet (``STRIDE_IN_1X1``) (25,624,625)."""
    p = Placement("gct", position="before_conv", stem=True)
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], stride_in_1x1=True, **kw)


@_paper("gsop")
def gsop_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """GSoP-Net1 ResNet-50: GSoP in the last bottleneck of each stage (stride-2 covariance conv in
    stage 1), stage 4 with stride 1 as the official code (28,285,224)."""
    p = Placement("gsop", indices=(-1,), stage_options={1: {"stride": 2}})
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], last_stride=1, **kw)


@_paper("nl")
def nl_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ResNet-50 with 5 NL blocks (embedded Gaussian, C/2): every other block of res3/res4, keys
    and values max-pooled 2x2 before phi and g as the official Caffe2 code (``USE_MAXPOOL``)."""
    p = Placement("nl", stages=(2, 3), position="after_add", every=2, subsample=True)
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("nl")
def nl_resnet50_1(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ResNet-50 with 1 NL block right before the last residual block of res4 (max-pooled keys
    and values as :func:`nl_resnet50`)."""
    p = Placement("nl", stages=(3,), position="after_add", indices=(-2,), subsample=True)
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)


@_paper("dnl")
def dnl_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
    """ResNet-50 with DNL (detection config, r4) after the residual add and before the final
    ReLU of res4[-2] and res5[0, -2, -1], as the official DNL detection code."""
    p = Placement("dnl", stages=(3, 4), position="after_add_before_relu", indices={3: (-2,), 4: (0, -2, -1)})
    return build_resnet(50, num_classes=num_classes, in_chans=in_chans, attn=[p, attn], **kw)
