"""mmcv ``NonLocal1d/2d/3d`` <-> globalctx ``nl`` blocks (:class:`~globalctx.layers.NonLocal`).

mmcv keys: ``theta.conv.*``, ``phi.conv.*``, ``g.conv.*`` (``phi.0.conv.*`` / ``g.0.conv.*`` when
``sub_sample=True``, where the max-pool follows the conv in an ``nn.Sequential``),
``conv_out.conv.weight`` (+ ``.bias`` unless a norm follows), ``conv_out.bn.*`` with
``norm_cfg``, and ``concat_project.conv.weight`` (always a 2D 1x1 conv, even in NonLocal1d/3d).

Build the target block with the mmcv options it must reproduce: ``pairwise=mode``,
``rd_channels=in_channels // reduction``, ``norm=norm_cfg is not None``,
``out_bias=norm_cfg is None``, ``use_scale=use_scale`` (embedded Gaussian), and for
``sub_sample=True`` ``subsample=True, subsample_order='embed_first'`` (mmcv pools after the
embeddings). ``use_scale`` is not stored in a state dict, so it cannot be checked here.

Example::

    >>> from mmcv.cnn.bricks import NonLocal2d
    >>> ref = NonLocal2d(256, norm_cfg=dict(type="BN"))
    >>> nl = globalctx.create_block("nl", 256, out_bias=False)
    >>> globalctx.convert.from_mmcv(nl, ref.state_dict())
"""

from __future__ import annotations

from torch import nn

from ..layers.blocks.nl import NonLocal
from ._registry import register_mmcv

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _is_nl(block: nn.Module) -> bool:
    return isinstance(block, NonLocal)


def _key_map(block: NonLocal, spatial_dims: int) -> dict[str, str]:
    if block.subsample and block.subsample_order != "embed_first":
        raise ValueError(
            "mmcv's NonLocal pools after the phi/g embeddings; build the block with "
            "subsample_order='embed_first' to reproduce it (got 'pool_first')"
        )
    pooled = ("g", "phi") if block.subsample else ()
    keys: dict[str, str] = {}
    for name in ("theta", "phi", "g"):
        layer = getattr(block, name)
        if layer is None:
            continue
        prefix = f"{name}.0.conv" if name in pooled else f"{name}.conv"
        keys[f"{name}.weight"] = f"{prefix}.weight"
        if layer.bias is not None:
            keys[f"{name}.bias"] = f"{prefix}.bias"
    keys["out.weight"] = "conv_out.conv.weight"
    if block.out.bias is not None:
        keys["out.bias"] = "conv_out.conv.bias"
    if block.norm is not None:
        keys.update({f"norm.{k}": f"conv_out.bn.{k}" for k in _BN_KEYS})
    if block.concat_project is not None:
        keys["concat_project.weight"] = "concat_project.conv.weight"
    return keys


def _mmcv_shape(block: NonLocal, key: str, tensor, spatial_dims: int) -> tuple:
    if key == "concat_project.weight":
        return tuple(tensor.shape) + (1, 1)  # mmcv builds it as a Conv2d in every dimensionality
    if key.endswith("weight") and tensor.dim() == 2:  # linear -> 1x1 conv
        return tuple(tensor.shape) + (1,) * spatial_dims
    return tuple(tensor.shape)


register_mmcv(_is_nl, _key_map, _mmcv_shape)
