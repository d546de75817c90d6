"""``plug``: insert global-context blocks into an existing model (torchvision/timm ResNets, or any
``nn.Module`` addressed by a name pattern), with channel widths inferred from the wrapped module.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import nn

from .placement import POSITIONS, Placement, is_block
from .resnet import ResBlockBase

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
    return isinstance(m, ResBlockBase) or all(hasattr(m, a) for a in ("conv1", "bn1", "conv2", "bn2"))


def _unwrap(m: nn.Module) -> nn.Module:
    """The module inside a :class:`PlugAfter` / :class:`PlugBefore` (itself otherwise)."""
    while isinstance(m, (PlugAfter, PlugBefore)):
        m = m.module
    return m


def _width(m: nn.Module, first: bool) -> int | None:
    """Input width of the first (``first=True``) or output width of the last conv/norm/linear in ``m``."""
    mods = [sub for sub in _unwrap(m).modules() if not is_block(sub)]
    attrs = ("in_channels", "num_features", "in_features") if first else ("out_channels", "num_features",
                                                                        "out_features")  # fmt: skip
    for sub in mods if first else reversed(mods):
        for attr in attrs:
            if isinstance(getattr(sub, attr, None), int):
                return getattr(sub, attr)
    return None


def _factory_kwargs(*refs: nn.Module) -> dict:
    """``device`` / floating ``dtype`` of the first parameter found in ``refs`` (empty if none)."""
    for ref in refs:
        p = next(ref.parameters(), None)
        if p is not None:
            return {"device": p.device, "dtype": p.dtype if p.is_floating_point() else None}
    return {}


def _foreign_targets(rb: nn.Module, position: str) -> list[tuple[str, str, int]]:
    """``[(attribute path inside rb, 'after'|'before', channels)]`` for a torchvision/timm block."""
    n_convs = 3 if hasattr(rb, "conv3") else 2
    kind = type(rb).__name__
    if position == "before_add":
        position = f"after_conv{n_convs}"
    if position == "before_conv":
        out = [(f"conv{i}", "before", _unwrap(getattr(rb, f"conv{i}")).in_channels) for i in range(1, n_convs + 1)]
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
        ch = _unwrap(getattr(rb, f"bn{k}")).num_features
        # timm has a separate act{k} module: insert after the activation like our blocks do;
        # torchvision shares one ReLU, so the block goes after bn{k} (before its ReLU)
        if k < n_convs and isinstance(getattr(rb, f"act{k}", None), nn.Module):
            return [(f"act{k}", "after", ch)]
        return [(f"bn{k}", "after", ch)]
    if position == "after_add_before_relu":
        raise ValueError(
            f"position 'after_add_before_relu' cannot be reached inside {kind}: its add and final ReLU "
            f"are in its forward(); use 'after_add' or 'before_add', or a globalctx ResNet"
        )
    raise ValueError(f"unknown position {position!r}; valid positions: {', '.join(PLUG_POSITIONS)}")


_STAGE_NAME = re.compile(r"(?:^|.*\.)layer([1-4])\.(\d+)(?:\.module)*")


def _stage_and_index(model: nn.Module, name: str) -> tuple[int, int, int] | None:
    """``(stage 1..4, index, blocks in the stage)`` of a residual block named ``...layerS.I``."""
    m = _STAGE_NAME.fullmatch(name)
    if m is None:
        return None
    stage_name = name[: m.end(1)]
    layer = model.get_submodule(stage_name)
    return int(m.group(1)), int(m.group(2)), len(layer) if isinstance(layer, nn.Sequential) else 0


class _Step(NamedTuple):
    """One planned insertion: where it goes, the new block, and how to put it there."""

    kind: str  # "slot" (our residual block), "wrap_after" / "wrap_before" (replace a module)
    parent: nn.Module  # the residual block (slot) or the module whose attribute is replaced
    attr: str  # slot name or attribute path inside ``parent``
    prefix: str  # qualified name of ``parent``
    position: str
    channels: int
    block: nn.Module


def _check_placement(p: Placement, position: str | None, block_options: dict) -> str:
    """The position to use with a :class:`Placement` given to :func:`plug`; refuses conflicts."""
    if block_options:
        raise ValueError("give block options inside the Placement, not to plug()")
    if p.stem:
        raise ValueError("Placement(stem=True) cannot apply in plug(): match the stem conv with where= and "
                         "position='before' instead")  # fmt: skip
    if position is None:
        return p.position
    if position in ("after", "before"):
        if p.position != "before_add" or not p.selects_everywhere:
            raise ValueError(
                f"position={position!r} applies to any module and cannot honour {p!r}; drop its "
                f"position/stages/every/indices or use a residual-block position"
            )
        return position
    if position != p.position:
        raise ValueError(f"position={position!r} contradicts {p!r}; give the position once (in the Placement)")
    return position


def plug(
    model: nn.Module,
    block,
    *,
    where: str,
    position: str | None = None,
    channels: int | None = None,
    **block_options,
) -> tuple[nn.Module, list[Inserted]]:
    """Insert blocks into an existing model, in place.

    Args:
        model: any ``nn.Module`` (a globalctx, torchvision or timm ResNet, or anything else).
        block: a registered block name, a callable taking ``(channels, **options)``, an
            ``nn.Module`` instance with a ``channels`` attribute (deep-copied per location), or a
            :class:`~globalctx.models.Placement`, whose ``position``, ``stages``, ``every`` /
            ``offset``, ``indices`` and ``stage_options`` are honoured among the matched residual
            blocks (their stage and index read from names ``...layerS.I``).
        where: a regular expression matched (``re.fullmatch``) against qualified module names,
            e.g. ``"layer3.*|layer4.*"`` or ``r"layer4\\.2"``.
        position: one of ``after_conv1``, ``after_conv2``, ``after_conv3``, ``before_add``,
            ``after_add_before_relu`` (globalctx ResNets only), ``after_add``, ``before_conv``
            (applied to every matched residual block: modules with ``conv1/bn1/conv2/bn2``), or
            ``after`` / ``before`` (applied to the outermost matched modules, whatever they are).
            Default: the Placement's position, else ``'before_add'``.
        channels: override the inferred width (only for ``after`` / ``before``). Default: ``None``.
        **block_options: options of the block constructor (not with a Placement).

    Returns:
        ``(model, inserted)`` where ``inserted`` is a list of :class:`Inserted`.

    Everything is checked and every block built before the first one is inserted, so a call that
    raises leaves ``model`` unchanged. New blocks get the device, floating dtype and train/eval
    mode of the module they go into. Blocks whose last layer is zero-initialised (``gc``,
    ``snl``, ``nl``; ``se`` with ``zero_init_last=True, identity_init=True``) leave the model's
    outputs unchanged at insertion. On a torchvision block ``after_conv1`` / ``after_conv2``
    insert after the BN, before the shared ReLU (timm and globalctx blocks: after the ReLU).
    Inserted blocks are marked, so :func:`globalctx.models.init_blocks` restores their init after
    a blanket re-init. Plugging again at a place that has a block chains the new one after it.
    Note the state-dict keys of wrapped foreign modules gain a ``.module`` level
    (``layer3.0.bn3.weight`` -> ``layer3.0.bn3.module.weight``): load pretrained weights first.

    Example::

        >>> net = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        >>> net, added = globalctx.plug(net, "gc", where="layer3.*|layer4.*", position="after_add")
    """
    if isinstance(block, Placement):
        placement = block
        position = _check_placement(block, position, block_options)
    else:
        placement = Placement(block, **block_options)
        position = "before_add" if position is None else position
    if position not in PLUG_POSITIONS:
        raise ValueError(f"unknown position {position!r}; valid positions: {', '.join(PLUG_POSITIONS)}")
    try:
        rx = re.compile(where)
    except re.error as e:
        raise ValueError(f"where={where!r} is not a valid regular expression: {e}") from None
    inside_blocks = {id(sub) for m in model.modules() if is_block(m) for sub in m.modules()}
    matched = [(n, m) for n, m in model.named_modules() if n and rx.fullmatch(n) and id(m) not in inside_blocks]
    if not matched:
        raise ValueError(f"where={where!r} matches no module of {type(model).__name__}")
    if position in ("after", "before"):
        steps = _plan_any(model, matched, placement, position, channels)
    else:
        if channels is not None:
            raise ValueError("channels= is only for position 'after' / 'before'; residual-block widths are inferred")
        steps = _plan_residual(model, matched, placement, position, where)
    return model, [_apply(step) for step in steps]


def _plan_any(model, matched, placement: Placement, position: str, channels: int | None) -> list[_Step]:
    names = [n for n, _ in matched]
    outer = [(n, m) for n, m in matched if not any(n.startswith(o + ".") for o in names if o != n)]
    steps = []
    for n, m in outer:
        ch = channels if channels is not None else _width(m, first=position == "before")
        if ch is None:
            raise ValueError(
                f"cannot infer the channels of {n!r} ({type(m).__name__}): no conv/norm/linear inside; pass channels="
            )
        parent_name, _, attr = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        blk = placement.build(ch, **_factory_kwargs(m, model)).train(m.training)
        steps.append(_Step("wrap_" + position, parent, attr, parent_name, position, ch, blk))
    return steps


def _plan_residual(model, matched, placement: Placement, position: str, where: str) -> list[_Step]:
    blocks, seen = [], set()
    for n, m in matched:
        if _is_resblock(m) and id(m) not in seen:
            seen.add(id(m))
            blocks.append((n, m))
    if not blocks:
        raise ValueError(
            f"where={where!r} matches no residual block (modules with conv1/bn1/conv2/bn2); "
            f"matched {[n for n, _ in matched][:8]}; use position='after' or 'before' for other modules"
        )
    chosen = []
    for n, rb in blocks:
        stage = None
        if not placement.selects_everywhere or placement.stage_options:
            loc = _stage_and_index(model, n)
            if loc is None:
                raise ValueError(
                    f"{placement!r} chooses stages/indices but {n!r} is not named like a ResNet block "
                    f"('layer1..4.<index>'); plug a plain block name instead"
                )
            stage, index, count = loc
            if index not in placement.select(stage, count):
                continue
        chosen.append((n, rb, stage))
    if not chosen:
        raise ValueError(f"{placement!r} selects none of the residual blocks matched by where={where!r}: "
                         f"{[n for n, _ in blocks][:8]}")  # fmt: skip
    steps = []
    for n, rb, stage in chosen:
        if isinstance(rb, ResBlockBase):
            for slot, ch in rb.slot_channels(position):
                blk = placement.build(ch, stage=stage, **_factory_kwargs(rb, model)).train(rb.training)
                steps.append(_Step("slot", rb, slot, n, position, ch, blk))
        elif position == "after_add":
            ch = _width(rb, first=False)
            outer_name = n
            while outer_name.endswith(".module") and isinstance(model.get_submodule(outer_name[:-7]), PlugAfter):
                outer_name = outer_name[:-7]  # chain onto an earlier after_add wrapper
            parent_name, _, attr = outer_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            blk = placement.build(ch, stage=stage, **_factory_kwargs(rb, model)).train(rb.training)
            steps.append(_Step("wrap_after", parent, attr, parent_name, position, ch, blk))
        else:
            for attr, side, ch in _foreign_targets(rb, position):
                sub = rb.get_submodule(attr)
                blk = placement.build(ch, stage=stage, **_factory_kwargs(sub, rb, model)).train(rb.training)
                steps.append(_Step("wrap_" + side, rb, attr, n, position, ch, blk))
    return steps


def _apply(step: _Step) -> Inserted:
    """Insert one planned block (no checks left that can fail); returns its record."""
    prefix = f"{step.prefix}." if step.prefix else ""
    if step.kind == "slot":
        step.parent.insert(step.position, step.block, slot=step.attr)
        return Inserted(f"{prefix}{step.attr}", step.position, step.channels, step.block)
    cur = step.parent.get_submodule(step.attr)
    wrapper = PlugAfter if step.kind == "wrap_after" else PlugBefore
    if isinstance(cur, wrapper):  # a block is already there: run the new one after it
        if isinstance(cur.block, nn.Sequential) and not is_block(cur.block):
            cur.block.append(step.block)
        else:
            cur.block = nn.Sequential(cur.block, step.block)
        name = f"{prefix}{step.attr}.block.{len(cur.block) - 1}"
    else:
        _replace(step.parent, step.attr, wrapper(cur, step.block))
        name = f"{prefix}{step.attr}.block"
    return Inserted(name, step.position, step.channels, step.block)


def _replace(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, attr = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)
