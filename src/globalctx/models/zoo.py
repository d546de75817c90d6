"""Registered paper models: ResNets with each block at its paper placement (research tables §1-§9).

A model is registered only when its block is (``globalctx.list_blocks()``), so every name in
:func:`globalctx.list_models` can be built. Parameter counts equal research tables §16.
"""

from __future__ import annotations

from ..layers import list_blocks
from .placement import Placement
from .resnet import _make

__all__: list[str] = []

_B = set(list_blocks())

# ECA-Net's released kernel sizes per stage (BangguWu/ECANet README)
_ECA_K = {50: (3, 5, 5, 7), 101: (3, 3, 5, 7)}
# FcaNet: DCT size per stage, c2wh = {64: 56, 128: 28, 256: 14, 512: 7} keyed by planes (224 px input)
_FCA_DCT = {1: {"dct_size": 56}, 2: {"dct_size": 28}, 3: {"dct_size": 14}, 4: {"dct_size": 7}}


def _eca_released(depth: int) -> Placement:
    ks = _ECA_K[depth]
    return Placement("eca", stage_options={s + 1: {"kernel_size": k} for s, k in enumerate(ks)})


_SPECS = [
    # (block, name, depth, doc, placement factory, fixed model options)
    ("gc", "gc_resnet50", 50, "GCNet ResNet-50: GC r16 after conv3+BN of every bottleneck of c3-c5 (28,078,773).",
     lambda: Placement("gc", stages=(2, 3, 4)), {}),
    ("gc", "gc_resnet50_r4", 50, "GCNet ResNet-50, GC r4 in every bottleneck of c3-c5 (35,557,941).",
     lambda: Placement("gc", stages=(2, 3, 4), rd_ratio=1 / 4), {}),
    ("gc", "gc_resnet50_c2c5", 50, "GCNet ResNet-50, GC r16 in every bottleneck of c2-c5 (28,105,032).",
     lambda: Placement("gc"), {}),
    ("gc", "gc_resnet18_small", 18, "Small-input ResNet-18 (CIFAR stem) with GC r16 in stages 2-4.",
     lambda: Placement("gc", stages=(2, 3, 4)), {"stem": "small"}),
    ("snl", "snl_resnet50", 50, "ResNet-50 with simplified NL after conv3+BN of every bottleneck of c3-c5.",
     lambda: Placement("snl", stages=(2, 3, 4)), {}),
    ("se", "se_resnet50", 50, "SE-ResNet-50, r16 with FC biases, in every bottleneck (28,088,024).",
     lambda: Placement("se"), {}),
    ("se", "se_resnet101", 101, "SE-ResNet-101, r16 with FC biases (49,326,872).", lambda: Placement("se"), {}),
    ("se", "se_resnet18_small", 18, "Small-input ResNet-18 (CIFAR stem) with SE r16 in every block.",
     lambda: Placement("se"), {"stem": "small"}),
    ("eca", "eca_resnet50", 50, "ECA-Net50 as released: k = 3, 5, 5, 7 per stage (25,557,112).",
     lambda: _eca_released(50), {}),
    ("eca", "eca_resnet50_rule", 50, "ECA-Net50 with the paper's adaptive k rule (k = 5, 5, 5, 7).",
     lambda: Placement("eca"), {}),
    ("eca", "eca_resnet101", 101, "ECA-Net101 as released: k = 3, 3, 5, 7 per stage (44,549,317).",
     lambda: _eca_released(101), {}),
    ("fca", "fca_resnet50", 50, "FcaNet-50 (top16 frequencies, r16, no FC bias; DCT 56/28/14/7) (28,071,976).",
     lambda: Placement("fca", stage_options=_FCA_DCT), {}),
    ("srm", "srm_resnet50", 50, "SRM-ResNet-50, SRM in every bottleneck (25,617,448).", lambda: Placement("srm"), {}),
    ("srm", "srm_resnet101", 101, "SRM-ResNet-101 (44,679,208).", lambda: Placement("srm"), {}),
    ("gct", "gct_resnet50", 50, "GCT-ResNet-50: GCT before every conv, stem and shortcut included (25,624,625).",
     lambda: Placement("gct", position="before_conv", stem=True), {}),
    ("gsop", "gsop_resnet50", 50,
     "GSoP-Net1 ResNet-50: GSoP in the last bottleneck of each stage (stride-2 covariance conv in stage 1), "
     "stage 4 with stride 1 as the official code (28,285,224).",
     lambda: Placement("gsop", blocks=(-1,), stage_options={1: {"stride": 2}}), {"last_stride": 1}),
    ("nl", "nl_resnet50", 50, "ResNet-50 with 5 NL blocks (embedded Gaussian, C/2): every other block of res3/res4.",
     lambda: Placement("nl", stages=(2, 3), position="after_add", every=2), {}),
    ("nl", "nl_resnet50_1", 50, "ResNet-50 with 1 NL block right before the last residual block of res4.",
     lambda: Placement("nl", stages=(3,), position="after_add", blocks=(-2,)), {}),
    ("dnl", "dnl_resnet50", 50,
     "ResNet-50 with DNL (detection config, r4) after conv3+BN of res4[-2] and res5[0, -2, -1].",
     lambda: Placement("dnl", stages=(3, 4), blocks={3: (-2,), 4: (0, -2, -1)}), {}),
]  # fmt: skip

for _block, _name, _depth, _doc, _placement, _fixed in _SPECS:
    if _block in _B:
        _make(_depth, _name, _doc, placement=_placement, **_fixed)
