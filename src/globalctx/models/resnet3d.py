"""Video ResNets for clips ``[N, 3, T, H, W]``: C2D (2D kernels per frame) and an I3D-style
inflated variant, with NL blocks in spacetime (Wang et al., arXiv 1711.07971, Table 1).

Shape legend: ``N`` batch, ``C`` channels, ``T`` frames, ``H, W`` frame size, ``K`` classes.

C2D ResNet-50 (paper Table 1, 32x224x224 input -> 4x7x7 at res5)::

    conv1  1x7x7, 64, stride (2, 2, 2)             [N, 64, T/2, H/2, W/2]
    pool1  3x3x3 max, stride (2, 2, 2)             [N, 64, T/4, H/4, W/4]
    res2   (2D bottlenecks as 1xkxk 3D convs)      [N, 256, T/4, H/4, W/4]
    pool2  3x1x1 max, stride (2, 1, 1)             [N, 256, T/8, H/4, W/4]
    res3, res4, res5 (spatial stride 2 each)       [N, 2048, T/8, H/32, W/32]
    global average pool over T, H, W, fc           [N, K]

The temporal strides are options (``temporal_strides``); with all ones the temporal length is kept.
The layout and keys equal the 2D :class:`~globalctx.models.resnet.ResNet` (``conv1``,
``layer3.1.conv2``, ...), so 2D ImageNet weights inflate by unsqueezing dim 2 (see
:func:`inflate_state_dict`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import list_blocks
from .placement import Placement
from .registry import register_model
from .resnet import RESNET_DEPTHS, ResNet

__all__ = ["ResNet3d", "inflate_state_dict", "c2d_resnet50", "i3d_resnet50", "nl_c2d_resnet50", "nl_i3d_resnet50"]


class ResNet3d(ResNet):
    """C2D / I3D ResNet for video clips; blocks are placed exactly as in the 2D model.

    Args:
        block, layers, num_classes, in_chans, base_width, groups, width_per_group, attn,
            zero_init_residual, drop_rate, last_stride: as :class:`~globalctx.models.ResNet`.
        inflate: ``'c2d'`` (every conv ``1 x k x k``) or ``'i3d'`` (a ``5 x 7 x 7`` stem and a
            ``3 x 1 x 1`` first conv in every other residual block, indices 0, 2, ...).
            Default: ``'c2d'``.
        temporal_strides: temporal strides of ``(conv1, pool1, pool2)``. Default: ``(2, 2, 2)``
            (paper Table 1: 32 frames -> 4 at res3-res5).

    Shape:
        - Input: ``[N, in_chans, T, H, W]``
        - Output: ``[N, K]``

    Example::

        >>> m = globalctx.create_model("nl_c2d_resnet50", num_classes=400)
        >>> m(torch.randn(1, 3, 8, 112, 112)).shape
        torch.Size([1, 400])
    """

    dims = 3

    def __init__(self, block, layers, *, inflate: str = "c2d", temporal_strides=(2, 2, 2), **kwargs):
        if inflate not in ("c2d", "i3d"):
            raise ValueError(f"inflate must be 'c2d' or 'i3d', got {inflate!r}")
        ts = tuple(int(t) for t in temporal_strides)
        if len(ts) != 3 or any(t < 1 for t in ts):
            raise ValueError(
                f"temporal_strides must be 3 positive ints (conv1, pool1, pool2), got {temporal_strides!r}"
            )
        if kwargs.get("stem", "imagenet") != "imagenet":
            raise ValueError(f"video ResNets have only the 'imagenet' stem, got stem={kwargs['stem']!r}")
        self.inflate = inflate
        self.temporal_strides = ts
        super().__init__(block, layers, **kwargs)

    def build_stem(self, in_chans: int, width: int, stem: str) -> None:
        dd = self.factory_kwargs
        kt = 5 if self.inflate == "i3d" else 1
        self.stem_attn = nn.Identity()
        self.conv1 = nn.Conv3d(
            in_chans, width, (kt, 7, 7), stride=(self.temporal_strides[0], 2, 2), padding=(kt // 2, 3, 3),
            bias=False, **dd,
        )  # fmt: skip
        self.bn1 = nn.BatchNorm3d(width, **dd)
        self.relu = nn.ReLU(inplace=True)
        st = self.temporal_strides[1]
        self.maxpool = nn.MaxPool3d(
            (3, 3, 3) if st > 1 else (1, 3, 3), stride=(st, 2, 2), padding=(1 if st > 1 else 0, 1, 1)
        )

    def build_pool2(self) -> None:
        st = self.temporal_strides[2]
        self.pool2 = nn.MaxPool3d((3, 1, 1), stride=(st, 1, 1), padding=(1, 0, 0)) if st > 1 else nn.Identity()

    def block_kwargs(self, stage: int, index: int) -> dict:
        return {"kt": 3 if self.inflate == "i3d" and index % 2 == 0 else 1}


def inflate_state_dict(state_dict: dict[str, torch.Tensor], model: ResNet3d) -> dict[str, torch.Tensor]:
    """2D ResNet weights -> ``model``'s 3D layout: each 2D conv weight ``[O, I, k, k]`` becomes
    ``[O, I, t, k, k]`` (the kernel repeated over ``t`` and divided by ``t``, I3D's inflation, so a
    static clip gives the 2D activations). Keys that are not in ``model`` raise ``ValueError``."""
    ours = model.state_dict()
    unexpected = sorted(set(state_dict) - set(ours))
    if unexpected:
        raise ValueError(f"keys not in {type(model).__name__}: {unexpected[:10]}")
    out = {}
    for k, v in state_dict.items():
        tgt = ours[k]
        if v.dim() == 4 and tgt.dim() == 5:
            t = tgt.shape[2]
            v = v.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        if v.shape != tgt.shape:
            raise ValueError(f"{k}: shape {list(v.shape)} does not fit {list(tgt.shape)}")
        out[k] = v
    return out


def _video_resnet50(inflate: str, placement, *, num_classes: int, in_chans: int, attn, **kw) -> ResNet3d:
    block, layers = RESNET_DEPTHS[50]
    return ResNet3d(
        block, layers, num_classes=num_classes, in_chans=in_chans, attn=[placement, attn], inflate=inflate, **kw
    )


def _nl5() -> Placement:
    # NL paper: 5 blocks (2 in res3, 3 in res4, idx % 2 == 1), embedded Gaussian, C/2, spatial
    # 1x2x2 max-pool sub-sampling of keys/values (official video code)
    return Placement("nl", stages=(2, 3), position="after_add", every=2, subsample=True)


@register_model("c2d_resnet50")
def c2d_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet3d:
    """C2D ResNet-50 for clips (NL paper Table 1); pass num_classes=400 for Kinetics."""
    return _video_resnet50("c2d", None, num_classes=num_classes, in_chans=in_chans, attn=attn, **kw)


@register_model("i3d_resnet50")
def i3d_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet3d:
    """I3D-style inflated ResNet-50 (5x7x7 stem, 3x1x1 in every other block)."""
    return _video_resnet50("i3d", None, num_classes=num_classes, in_chans=in_chans, attn=attn, **kw)


def nl_c2d_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet3d:
    """C2D ResNet-50 with 5 spacetime NL blocks (2 in res3, 3 in res4)."""
    return _video_resnet50("c2d", _nl5(), num_classes=num_classes, in_chans=in_chans, attn=attn, **kw)


def nl_i3d_resnet50(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet3d:
    """I3D-style ResNet-50 with 5 spacetime NL blocks."""
    return _video_resnet50("i3d", _nl5(), num_classes=num_classes, in_chans=in_chans, attn=attn, **kw)


if "nl" in list_blocks():
    register_model("nl_c2d_resnet50")(nl_c2d_resnet50)
    register_model("nl_i3d_resnet50")(nl_i3d_resnet50)
