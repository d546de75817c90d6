"""``plug``: insert global-context blocks into an existing model (torchvision/timm ResNets, or any
``nn.Module`` addressed by a name pattern), with channel widths inferred from the wrapped module.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import nn

from .placement import POSITIONS, Placement
from .resnet import _ResBlock

__all__ = ["plug", "Inserted", "PlugAfter", "PlugBefore", "PLUG_POSITIONS"]

PLUG_POSITIONS = POSITIONS + ("after", "before")


class Inserted(NamedTuple):
    """One inserted block: qualified name of the new module, position, channels, the block."""

    name: str
    position: str
    channels: int
    block: nn.Module


class PlugAfter(nn.Module):
    """``block(module(x))``: a block inserted after a module of a foreign model.

    Shape:
        - Input: whatever ``module`` takes
        - Output: ``module``'s output shape ``[N, C, *S]``
    """

    def __init__(self, module: nn.Module, block: nn.Module):
        super().__init__()
        self.module = module
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.module(x))


class PlugBefore(nn.Module):
    """``module(block(x))``: a block inserted before a module (GCT's "before every conv").

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``module``'s output
    """

    def __init__(self, module: nn.Module, block: nn.Module):
        super().__init__()
        self.module = module
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.block(x))


def _is_resblock(m: nn.Module) -> bool:
    """Ours, or a torchvision/timm-style residual block (conv1/bn1/conv2/bn2 attributes)."""
    return isinstance(m, _ResBlock) or all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2"))


def _width(m: nn.Module, first: bool) -> int | None:
    """Input width of the first (``first=True``) or output width of the last conv/norm/linear in ``m``."""
    mods = list(m.modules())
    for sub in mods if first else reversed(mods):
        if first:
            for attr in ("in_channels", "num_features", "in_features"):
                if isinstance(getattr(sub, attr, None), int):
                    return getattr(sub, attr)
        else:
            for attr in ("out_channels", "num_features", "out_features"):
                if isinstance(getattr(sub, attr, None), int):
                    return getattr(sub, attr)
    return None


def _like(block: nn.Module, ref: nn.Module) -> nn.Module:
    """Move ``block`` to the device / floating dtype of ``ref``'s parameters."""
    p = next(ref.parameters(), None)
    return block if p is None else block.to(device=p.device, dtype=p.dtype if p.is_floating_point() else None)


def _replace(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, attr = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _foreign_targets(rb: nn.Module, position: str) -> list[tuple[str, str, int]]:
    """``[(attribute path inside rb, 'after'|'before', channels)]`` for a torchvision/timm block."""
    n_convs = 3 if hasattr(rb, "conv3") else 2
    kind = type(rb).__name__
    if position == "before_add":
        position = f"after_conv{n_convs}"
    if position == "before_conv":
        out = [(f"conv{i}", "before", getattr(rb, f"conv{i}").in_channels) for i in range(1, n_convs + 1)]
        ds = getattr(rb, "downsample", None)
        if ds is not None:
            first = ds[0] if isinstance(ds, nn.Sequential) else ds
            w = _width(first, first=True)
            if w is not None:
                out.append(("downsample.0" if isinstance(ds, nn.Sequential) else "downsample", "before", w))
        return out
    if position in ("after_conv1", "after_conv2", "after_conv3"):
        k = int(position[-1])
        if k > n_convs:
            raise ValueError(
                f"position {position!r} is not valid for {kind} ({n_convs} convs); "
                f"use 'before_add' or after_conv1..after_conv{n_convs}"
            )
        ch = getattr(rb, f"bn{k}").num_features
        # timm has a separate act{k} module: insert after the activation like our blocks do;
        # torchvision shares one ReLU, so the block goes after bn{k} (before its ReLU)
        if k < n_convs and isinstance(getattr(rb, f"act{k}", None), nn.Module):
            return [(f"act{k}", "after", ch)]
        return [(f"bn{k}", "after", ch)]
    raise ValueError(f"unknown position {position!r}; valid positions: {', '.join(PLUG_POSITIONS)}")


def plug(
    model: nn.Module,
    block,
    *,
    where: str,
    position: str = "before_add",
    channels: int | None = None,
    **block_options,
) -> tuple[nn.Module, list[Inserted]]:
    """Insert blocks into an existing model, in place.

    Args:
        model: any ``nn.Module`` (a globalctx, torchvision or timm ResNet, or anything else).
        block: a registered block name, a callable taking ``(channels, **options)``, or an
            ``nn.Module`` instance with a ``channels`` attribute (deep-copied per location).
        where: a regular expression matched (``re.fullmatch``) against qualified module names,
            e.g. ``"layer3.*|layer4.*"`` or ``r"layer4\\.2"``.
        position: one of ``after_conv1``, ``after_conv2``, ``after_conv3``, ``before_add``,
            ``after_add``, ``before_conv`` (applied to every matched residual block: modules with
            ``conv1/bn1/conv2/bn2``), or ``after`` / ``before`` (applied to the outermost matched
            modules, whatever they are). Default: ``'before_add'``.
        channels: override the inferred width (only for ``after`` / ``before``). Default: ``None``.
        **block_options: options of the block constructor.

    Returns:
        ``(model, inserted)`` where ``inserted`` is a list of :class:`Inserted`.

    Blocks whose last layer is zero-initialised (``gc``, ``snl``, ``nl``; ``se`` with
    ``zero_init_last=True, identity_init=True``) leave the model's outputs unchanged at insertion.
    On a torchvision block ``after_conv1`` / ``after_conv2`` insert after the BN, before the
    shared ReLU (timm and globalctx blocks: after the ReLU). Inserted blocks are marked, so
    :func:`globalctx.models.init_blocks` restores their init after a blanket re-init.
    Note the state-dict keys of wrapped foreign modules gain a ``.module`` level
    (``layer3.0.bn3.weight`` -> ``layer3.0.bn3.module.weight``): load pretrained weights first.

    Example::

        >>> net = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        >>> net, added = globalctx.plug(net, "gc", where="layer3.*|layer4.*", position="after_add")
    """
    if position not in PLUG_POSITIONS:
        raise ValueError(f"unknown position {position!r}; valid positions: {', '.join(PLUG_POSITIONS)}")
    try:
        rx = re.compile(where)
    except re.error as e:
        raise ValueError(f"where={where!r} is not a valid regular expression: {e}") from None
    builder = block if isinstance(block, Placement) else Placement(block, **block_options)
    if isinstance(block, Placement) and block_options:
        raise ValueError("give block options inside the Placement, not to plug()")
    matched = [(n, m) for n, m in model.named_modules() if n and rx.fullmatch(n)]
    if not matched:
        raise ValueError(f"where={where!r} matches no module of {type(model).__name__}")
    inserted: list[Inserted] = []

    if position in ("after", "before"):
        names = [n for n, _ in matched]
        outer = [(n, m) for n, m in matched if not any(n.startswith(o + ".") for o in names if o != n)]
        for n, m in outer:
            ch = channels if channels is not None else _width(m, first=position == "before")
            if ch is None:
                raise ValueError(
                    f"cannot infer the channels of {n!r} ({type(m).__name__}): no conv/norm/linear "
                    f"inside; pass channels="
                )
            blk = _like(builder.build(ch), m)
            _replace(model, n, PlugAfter(m, blk) if position == "after" else PlugBefore(m, blk))
            inserted.append(Inserted(f"{n}.block", position, ch, blk))
        return model, inserted

    if channels is not None:
        raise ValueError("channels= is only for position 'after' / 'before'; residual-block widths are inferred")
    blocks = [(n, m) for n, m in matched if _is_resblock(m)]
    if not blocks:
        raise ValueError(
            f"where={where!r} matches no residual block (modules with conv1/bn1/conv2/bn2); "
            f"matched {[n for n, _ in matched][:8]}; use position='after' or 'before' for other modules"
        )
    for n, rb in blocks:
        if isinstance(rb, _ResBlock):
            for slot, ch in rb.slot_channels(position):
                blk = _like(builder.build(ch), rb)
                rb.insert(position, blk, slot=slot)
                inserted.append(Inserted(f"{n}.{slot}", position, ch, blk))
        elif position == "after_add":
            ch = _width(rb, first=False)
            blk = _like(builder.build(ch), rb)
            _replace(model, n, PlugAfter(rb, blk))
            inserted.append(Inserted(f"{n}.block", position, ch, blk))
        else:
            for attr, side, ch in _foreign_targets(rb, position):
                sub = rb.get_submodule(attr)
                blk = _like(builder.build(ch), sub if next(sub.parameters(), None) is not None else rb)
                _replace(rb, attr, PlugAfter(sub, blk) if side == "after" else PlugBefore(sub, blk))
                inserted.append(Inserted(f"{n}.{attr}.block", position, ch, blk))
    return model, inserted
