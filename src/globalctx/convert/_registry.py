"""Dispatch of the mmcv converters by block type, and the shared key-map loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["register_mmcv", "from_mmcv", "to_mmcv", "load_mapped"]

# (matches(block), key_map(block) -> {our_key: mmcv_key}, mmcv_shape(block, our_key, tensor) -> shape)
_MMCV: list[tuple[Callable[[nn.Module], bool], Callable[..., dict[str, str]], Callable[..., tuple]]] = []


def register_mmcv(
    matches: Callable[[nn.Module], bool],
    key_map: Callable[..., dict[str, str]],
    mmcv_shape: Callable[..., tuple],
) -> None:
    """Register a converter: ``key_map(block, spatial_dims)`` gives ``{our_key: mmcv_key}`` for
    every entry of ``block.state_dict()``; ``mmcv_shape(block, our_key, tensor, spatial_dims)``
    gives the mmcv shape of that entry (e.g. a 1x1 conv weight for our linear weight)."""
    _MMCV.append((matches, key_map, mmcv_shape))


def _handler(block: nn.Module):
    for h in _MMCV:
        if h[0](block):
            return h
    raise ValueError(f"no mmcv converter for {type(block).__name__}: {block!r:.200}")


def load_mapped(block: nn.Module, state_dict: Mapping[str, torch.Tensor], key_map: dict[str, str]) -> None:
    """Copy ``state_dict[key_map[k]]`` into ``block``'s entry ``k`` (reshaped to our shape).

    Every key of ``block`` must be found and every key of ``state_dict`` used; otherwise a
    ``ValueError`` lists the missing and unexpected keys. Nothing is silently dropped.
    """
    ours = block.state_dict()
    missing = [m for k, m in key_map.items() if m not in state_dict]
    unexpected = sorted(set(state_dict) - set(key_map.values()))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match {type(block).__name__}: missing {missing}, unexpected {unexpected}"
        )
    new = {}
    for k, m in key_map.items():
        src = state_dict[m]
        if src.numel() != ours[k].numel():
            raise ValueError(f"{m}: shape {list(src.shape)} does not fit {k} {list(ours[k].shape)}")
        new[k] = src.detach().reshape(ours[k].shape).to(ours[k].dtype)
    block.load_state_dict(new, strict=True)


def from_mmcv(block: nn.Module, state_dict: Mapping[str, torch.Tensor], *, spatial_dims: int = 2) -> nn.Module:
    """Load an mmcv-layout ``state_dict`` into ``block`` (in place; returns ``block``).

    Example::

        >>> from mmcv.cnn.bricks import ContextBlock
        >>> ref = ContextBlock(256, ratio=1 / 16)
        >>> gc = globalctx.convert.from_mmcv(globalctx.create_block("gc", 256), ref.state_dict())
    """
    _, key_map, _ = _handler(block)
    load_mapped(block, state_dict, key_map(block, spatial_dims))
    return block


def to_mmcv(block: nn.Module, *, spatial_dims: int = 2) -> dict[str, torch.Tensor]:
    """The mmcv-layout state dict of ``block`` (for mmcv's ``ContextBlock`` / ``NonLocal{1,2,3}d``)."""
    _, key_map, mmcv_shape = _handler(block)
    ours = block.state_dict()
    return {
        m: ours[k].detach().clone().reshape(mmcv_shape(block, k, ours[k], spatial_dims))
        for k, m in key_map(block, spatial_dims).items()
    }
