"""mmcv ``ContextBlock`` (official GCNet layout) <-> globalctx ``gc`` blocks.

mmcv keys: ``conv_mask.{weight,bias}`` (att pooling), ``channel_add_conv.{0,1,3}.*`` and
``channel_mul_conv.{0,1,3}.*`` (1x1 conv, ``LayerNorm([P, 1, 1])``, ReLU, 1x1 conv).
"""

from __future__ import annotations

from torch import nn

from ..layers.parts.base import GlobalContextBlock
from ..layers.parts.context import AttnPool
from ..layers.parts.fusion import ScaleAddFusion, ScaleFusion
from ..layers.parts.transform import Bottleneck, StackedTransforms
from ._registry import register_mmcv


def _is_gc(block: nn.Module) -> bool:
    t = getattr(block, "transform", None)
    bottlenecks = t.branches if isinstance(t, StackedTransforms) else [t]
    return isinstance(block, GlobalContextBlock) and all(
        isinstance(b, Bottleneck) and isinstance(b.norm, nn.LayerNorm) for b in bottlenecks
    )


def _branch(prefix: str, ours: str) -> dict[str, str]:
    return {
        f"{ours}fc1.weight": f"{prefix}.0.weight",
        f"{ours}fc1.bias": f"{prefix}.0.bias",
        f"{ours}norm.weight": f"{prefix}.1.weight",
        f"{ours}norm.bias": f"{prefix}.1.bias",
        f"{ours}fc2.weight": f"{prefix}.3.weight",
        f"{ours}fc2.bias": f"{prefix}.3.bias",
    }


def _key_map(block: GlobalContextBlock, spatial_dims: int) -> dict[str, str]:
    keys: dict[str, str] = {}
    if isinstance(block.context, AttnPool):
        keys.update({"context.conv_mask.weight": "conv_mask.weight", "context.conv_mask.bias": "conv_mask.bias"})
    if isinstance(block.fusion, ScaleAddFusion):
        keys.update(_branch("channel_mul_conv", "transform.branches.0."))
        keys.update(_branch("channel_add_conv", "transform.branches.1."))
    elif isinstance(block.fusion, ScaleFusion):
        keys.update(_branch("channel_mul_conv", "transform."))
    else:
        keys.update(_branch("channel_add_conv", "transform."))
    return keys


def _mmcv_shape(block: GlobalContextBlock, key: str, tensor, spatial_dims: int) -> tuple:
    if key.endswith("weight") and tensor.dim() == 2:  # linear -> 1x1 conv
        return tuple(tensor.shape) + (1,) * spatial_dims
    if ".norm." in key:  # LayerNorm(P) -> LayerNorm([P, 1, 1])
        return tuple(tensor.shape) + (1,) * spatial_dims
    return tuple(tensor.shape)


register_mmcv(_is_gc, _key_map, _mmcv_shape)
