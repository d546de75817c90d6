"""Dispatch of the mmcv converters by block type, and the shared key-map loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

__all__ = ["register_mmcv", "mmcv_converter", "from_mmcv", "to_mmcv", "load_mapped", "as_tensor"]

KeyMap = Callable[[nn.Module, int], dict[str, str]]
MmcvShape = Callable[[nn.Module, str, torch.Tensor, int], tuple]

# (matches(block), key_map(block, spatial_dims) -> {our_key: mmcv_key}, mmcv_shape(...) -> shape)
_MMCV: list[tuple[Callable[[nn.Module], bool], KeyMap, MmcvShape]] = []


def register_mmcv(matches: Callable[[nn.Module], bool], key_map: KeyMap, mmcv_shape: MmcvShape) -> None:
    """Register a converter: ``key_map(block, spatial_dims)`` gives ``{our_key: mmcv_key}`` for
    every entry of ``block.state_dict()``; ``mmcv_shape(block, our_key, tensor, spatial_dims)``
    gives the mmcv shape of that entry (e.g. a 1x1 conv weight for our linear weight)."""
    _MMCV.append((matches, key_map, mmcv_shape))


def mmcv_converter(block: nn.Module) -> tuple[KeyMap, MmcvShape]:
    """``(key_map, mmcv_shape)`` of the converter registered for ``block``; ``ValueError`` if none."""
    for matches, key_map, mmcv_shape in _MMCV:
        if matches(block):
            return key_map, mmcv_shape
    raise ValueError(f"no mmcv converter for {type(block).__name__}: {block!r:.200}")


def as_tensor(key: str, value) -> torch.Tensor:
    """``value`` as a tensor: tensors as they are, numpy arrays copied; anything else refused."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        try:
            return torch.tensor(np.asarray(value))
        except TypeError:
            raise ValueError(f"{key}: numpy array of dtype {value.dtype} has no tensor counterpart") from None
    raise ValueError(f"{key}: expected a torch.Tensor or numpy array, got {type(value).__name__}")


def load_mapped(
    block: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    key_map: dict[str, str],
    source_shape: Callable[[str, torch.Tensor], tuple],
) -> None:
    """Copy ``state_dict[key_map[k]]`` into ``block``'s entry ``k``.

    The source entry must have exactly ``source_shape(k, our_tensor)`` (our shape, or the
    documented 1x1-conv shape of a linear weight); it is then reshaped to ours. Every key of
    ``block`` must be found and every key of ``state_dict`` used. Otherwise one ``ValueError``
    lists every missing, unexpected and mis-shaped key. Nothing is silently dropped.
    """
    ours = block.state_dict()
    missing = [m for m in key_map.values() if m not in state_dict]
    unexpected = sorted(set(state_dict) - set(key_map.values()))
    mismatched, new = [], {}
    for k, m in key_map.items():
        if m not in state_dict:
            continue
        src = as_tensor(m, state_dict[m])
        want = tuple(source_shape(k, ours[k]))
        if tuple(src.shape) != want:
            mismatched.append(f"{m} {list(src.shape)} (expected {list(want)} for {k})")
            continue
        new[k] = src.detach().reshape(ours[k].shape).to(ours[k].dtype)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"state dict does not match {type(block).__name__}: missing {missing}, unexpected {unexpected}, "
            f"mismatched {mismatched}"
        )
    block.load_state_dict(new, strict=True)


def from_mmcv(block: nn.Module, state_dict: Mapping[str, torch.Tensor], *, spatial_dims: int = 2) -> nn.Module:
    """Load an mmcv-layout ``state_dict`` into ``block`` (in place; returns ``block``).

    Every entry must have the exact mmcv shape (1x1 conv weights for our linear weights, with
    ``spatial_dims`` trailing ones); tensors or numpy arrays.

    Example::

        >>> from mmcv.cnn.bricks import ContextBlock
        >>> ref = ContextBlock(256, ratio=1 / 16)
        >>> gc = globalctx.convert.from_mmcv(globalctx.create_block("gc", 256), ref.state_dict())
    """
    key_map, mmcv_shape = mmcv_converter(block)
    load_mapped(block, state_dict, key_map(block, spatial_dims), lambda k, t: mmcv_shape(block, k, t, spatial_dims))
    return block


def to_mmcv(block: nn.Module, *, spatial_dims: int = 2) -> dict[str, torch.Tensor]:
    """The mmcv-layout state dict of ``block`` (for mmcv's ``ContextBlock`` / ``NonLocal{1,2,3}d``)."""
    key_map, mmcv_shape = mmcv_converter(block)
    ours = block.state_dict()
    return {
        m: ours[k].detach().clone().reshape(mmcv_shape(block, k, ours[k], spatial_dims))
        for k, m in key_map(block, spatial_dims).items()
    }
