"""Peer implementations measured in the same run, when their packages import.

mmcv (``mmcv-lite``): ``ContextBlock`` (GCNet, ratio 1/16, attention pooling, channel_add) and
``NonLocal2d`` (embedded Gaussian, reduction 2, scaled). timm: ``GlobalContext`` configured as
GCNet (add fusion, r 1/16), ``NonLocalAttn`` (r 1/2), ``SEModule`` (r 1/16), ``EcaModule``.
All peers are 2-D only (``[N, C, H, W]`` inputs). Names are ``"<package>:<block>"``, the block
being the globalctx preset they correspond to.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["available_peers", "peer_for"]


def _mmcv() -> dict[str, Callable[[int], nn.Module]]:
    try:
        from mmcv.cnn import ContextBlock, NonLocal2d
    except Exception:  # mmcv missing or broken: no peers from it
        return {}
    return {
        "mmcv:gc": lambda c: ContextBlock(c, ratio=1 / 16, pooling_type="att", fusion_types=("channel_add",)),
        "mmcv:nl": lambda c: NonLocal2d(c, reduction=2, use_scale=True, mode="embedded_gaussian"),
    }


def _timm() -> dict[str, Callable[[int], nn.Module]]:
    try:
        from timm.layers import EcaModule, GlobalContext, NonLocalAttn, SEModule
    except Exception:  # timm missing (it needs torchvision): no peers from it
        return {}
    return {
        "timm:gc": lambda c: GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16),
        "timm:nl": lambda c: NonLocalAttn(c, rd_ratio=0.5),
        "timm:se": lambda c: SEModule(c, rd_ratio=1 / 16),
        "timm:eca": lambda c: EcaModule(c),
    }


def available_peers() -> dict[str, Callable[[int], nn.Module]]:
    """``"pkg:block" -> constructor(channels)`` for every importable peer."""
    return {**_mmcv(), **_timm()}


def peer_for(block: str, peers: dict[str, Callable[[int], nn.Module]] | None = None) -> list[str]:
    """Names of the peers equivalent to the globalctx block ``block``."""
    peers = available_peers() if peers is None else peers
    return [name for name in peers if name.split(":", 1)[1] == block]
