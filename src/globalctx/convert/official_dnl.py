"""Official DNL layout (``_NonLocalNd_bn`` of Howal/DNL-Object-Detection ``mmdet/ops/nl_gc_block.py``
and yinmh17/DNL-Semantic-Segmentation ``model/seg/ops/nonlocal_block.py``) <-> globalctx ``dnl``.

Official keys: ``conv_query.*``, ``conv_key.*``, ``conv_value.weight`` (+ ``.bias`` with
``use_out``), ``conv_out.weight`` (``use_out``), ``out_bn.*`` (``out_bn``), ``conv_mask.*``
(``with_gc``), ``gamma``. Build the target block with the matching options:
``rd_channels=planes``, ``use_out``, ``out_norm=out_bn``, ``unary='mask'`` for ``with_gc`` /
``'mean_query'`` for ``with_unary``, ``whiten``, ``temperature``, ``subsample=downsample``.
The ``double_conv`` / ``with_2fc`` / BN-whitening variants have no counterpart here.

Example::

    >>> dnl = globalctx.create_block("dnl", 1024)
    >>> globalctx.convert.from_official_dnl(dnl, checkpoint_block_state_dict)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..layers.blocks.dnl import DisentangledNonLocal
from ._registry import load_mapped

__all__ = ["from_official_dnl", "to_official_dnl"]

_NAMES = {
    "theta": "conv_query",
    "phi": "conv_key",
    "g": "conv_value",
    "out": "conv_out",
    "unary.conv_mask": "conv_mask",
}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _key_map(block: DisentangledNonLocal) -> dict[str, str]:
    if not isinstance(block, DisentangledNonLocal):
        raise ValueError(f"the official DNL layout needs a DisentangledNonLocal block, got {type(block).__name__}")
    keys: dict[str, str] = {}
    for k in block.state_dict():
        if k == "gamma":
            keys[k] = "gamma"
        elif k.startswith("norm."):
            keys[k] = "out_bn." + k[len("norm.") :]
        else:
            module, leaf = k.rsplit(".", 1)
            keys[k] = f"{_NAMES[module]}.{leaf}"
    return keys


def from_official_dnl(block: DisentangledNonLocal, state_dict: Mapping[str, torch.Tensor]) -> DisentangledNonLocal:
    """Load an official-layout DNL state dict into ``block`` (in place; returns ``block``).

    Every key must match (missing / unexpected keys raise ``ValueError``); 1x1 conv weights of any
    dimensionality are reshaped to our linear weights.
    """
    load_mapped(block, state_dict, _key_map(block))
    return block


def to_official_dnl(block: DisentangledNonLocal, *, spatial_dims: int = 2) -> dict[str, torch.Tensor]:
    """The official-layout state dict of ``block`` (1x1 conv weights with ``spatial_dims`` dims)."""
    ours = block.state_dict()
    out = {}
    for k, m in _key_map(block).items():
        t = ours[k].detach().clone()
        if k.endswith("weight") and t.dim() == 2:
            t = t.reshape(tuple(t.shape) + (1,) * spatial_dims)
        out[m] = t
    return out
