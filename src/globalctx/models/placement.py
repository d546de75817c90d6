"""Where blocks go in a backbone: :class:`Placement`, paper-default placements, the init hook.

Stage numbering follows torchvision's ``layer1..layer4`` (= ``res2..res5`` = ``c2..c5``):
``stages=(2, 3, 4)`` is GCNet's "c3-c5". Block indices count from 0 inside a stage; negative
indices count from the end (``-1`` is the last block).

Positions inside a residual block (BasicBlock has two convs, Bottleneck three)::

    before_conv  -> conv1 -> bn1 -> relu -> after_conv1 -> conv2 -> bn2 -> relu -> after_conv2
                 -> conv3 -> bn3 -> after_conv3 -> (+ shortcut) -> after_add_before_relu
                 -> relu -> after_add

``before_add`` is the last position before the residual add (``after_conv3`` in a Bottleneck,
``after_conv2`` in a BasicBlock): the SE/GC/ECA/FcaNet/SRM/GSoP official position.
``before_conv`` puts one block before *every* conv of the block, the shortcut conv included
(GCT's placement; ``stem=True`` adds one before the stem conv). ``after_add_before_relu`` sits
between the residual add and the block's final ReLU (the official DNL detection code).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..layers import create_block, list_blocks

__all__ = [
    "POSITIONS",
    "Placement",
    "as_placements",
    "default_placement",
    "init_blocks",
    "mark_block",
    "is_block",
]

POSITIONS = (
    "after_conv1",
    "after_conv2",
    "after_conv3",
    "before_add",
    "after_add_before_relu",
    "after_add",
    "before_conv",
)
_MARK = "_globalctx_block"


def _stage_index(s) -> int:
    """Normalise a stage spec (1..4, 'layer1'..'layer4', 'res2'..'res5', 'c2'..'c5') to 1..4."""
    if isinstance(s, bool):
        raise ValueError(f"stage must be 1..4 or a name like 'res3'/'c3'/'layer2', got {s!r}")
    if isinstance(s, int):
        if 1 <= s <= 4:
            return s
    elif isinstance(s, str):
        low = s.lower()
        if low.isdigit() and 1 <= int(low) <= 4:  # JSON object keys
            return int(low)
        for prefix, shift in (("layer", 0), ("res", 1), ("c", 1)):
            if low.startswith(prefix) and low[len(prefix) :].isdigit():
                i = int(low[len(prefix) :]) - shift
                if 1 <= i <= 4:
                    return i
    raise ValueError(
        f"unknown stage {s!r}; stages are 1..4 (torchvision layer1..layer4) or names "
        f"'layer1'..'layer4', 'res2'..'res5', 'c2'..'c5'"
    )


class Placement:
    """Which block goes where in a ResNet-style backbone.

    Args:
        attn: the block: a registered block name (see :func:`globalctx.list_blocks`), a callable
            taking ``(channels, **options)`` (a class or preset function), or an ``nn.Module``
            instance (deep-copied at every location; it must have a ``channels`` attribute equal
            to the width there). ``block=`` is accepted as another name for it.
        stages: which stages get blocks: ints 1..4 (torchvision ``layer1..layer4``) or names
            (``'res3'``, ``'c3'``, ``'layer2'``). Default: all four.
        position: one of :data:`POSITIONS`. Default: ``'before_add'``.
        every: put a block in every ``every``-th residual block of a stage: indices ``i`` with
            ``i % every == offset``. Default: ``1`` (every block).
        offset: see ``every``. Default: ``every - 1`` (the NL paper's ``idx % 2 == 1`` for
            ``every=2``).
        indices: explicit residual-block indices instead of ``every``: a sequence applied to
            every chosen stage (``(-2,)``: "before the last block" with ``position='after_add'``),
            or a mapping ``{stage: indices}``. ``blocks=`` is accepted as another name for it.
            Default: ``None``.
        stem: with ``position='before_conv'``, also put a block before the stem conv.
            Default: ``False``.
        stage_options: per-stage extra block options ``{stage: {option: value}}`` (e.g. ECA's
            released kernel sizes, FcaNet's DCT size). Default: ``None``.
        **options: options for the block constructor (``rd_ratio=1/4``); a misspelled option
            raises ``TypeError`` when the model is built.

    Example::

        >>> p = Placement("gc", stages=(2, 3, 4), position="after_add", rd_ratio=1 / 4)
        >>> m = globalctx.create_model("resnet50", attn=p)
    """

    def __init__(
        self,
        attn: str | Callable[..., nn.Module] | nn.Module | None = None,
        *,
        stages: Iterable = (1, 2, 3, 4),
        position: str = "before_add",
        every: int = 1,
        offset: int | None = None,
        indices: Sequence[int] | Mapping | None = None,
        stem: bool = False,
        stage_options: Mapping | None = None,
        block: str | Callable[..., nn.Module] | nn.Module | None = None,
        blocks: Sequence[int] | Mapping | None = None,
        **options,
    ):
        attn = _one_of("attn", attn, "block", block)
        indices = _one_of("indices", indices, "blocks", blocks)
        if attn is None:
            raise ValueError("Placement needs a block: Placement('gc', ...) or Placement(attn='gc', ...)")
        if isinstance(attn, str):
            if attn.lower() not in list_blocks():
                raise ValueError(f"unknown block {attn!r}; known blocks: {', '.join(list_blocks())}")
            attn = attn.lower()
        elif isinstance(attn, nn.Module):
            if options:
                raise ValueError(f"block options {sorted(options)} given with a block instance; pass a name")
        elif not callable(attn):
            raise ValueError(f"attn must be a registered block name, a callable or an nn.Module, got {attn!r}")
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; valid positions: {', '.join(POSITIONS)}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        offset = every - 1 if offset is None else offset
        if not isinstance(offset, int) or not 0 <= offset < every:
            raise ValueError(f"offset must be an int in [0, every={every}), got {offset!r}")
        if stem and position != "before_conv":
            raise ValueError(f"stem=True needs position='before_conv', got position={position!r}")
        self.attn = attn
        self.stages = tuple(sorted({_stage_index(s) for s in stages}))
        self.position = position
        self.every = every
        self.offset = offset
        if isinstance(indices, Mapping):
            indices = {_stage_index(k): tuple(int(i) for i in v) for k, v in indices.items()}
            extra = set(indices) - set(self.stages)
            if extra:
                raise ValueError(f"indices given for stages {sorted(extra)} not in stages={self.stages}")
        elif indices is not None:
            indices = tuple(int(i) for i in indices)
        self.indices = indices
        self.stem = stem
        self.stage_options = {_stage_index(k): dict(v) for k, v in (stage_options or {}).items()}
        self.options = options

    @property
    def block(self):
        """The block (another name for :attr:`attn`)."""
        return self.attn

    @property
    def blocks(self):
        """The explicit indices (another name for :attr:`indices`)."""
        return self.indices

    @property
    def name(self) -> str:
        b = self.attn
        return b if isinstance(b, str) else getattr(b, "__name__", type(b).__name__)

    @property
    def selects_everywhere(self) -> bool:
        """True when every residual block of every stage is chosen (the defaults)."""
        return self.stages == (1, 2, 3, 4) and self.every == 1 and self.indices is None

    def select(self, stage: int, num_blocks: int) -> list[int]:
        """Indices (0-based, sorted) of the residual blocks of ``stage`` that get a block."""
        if stage not in self.stages:
            return []
        if self.indices is None:
            return [i for i in range(num_blocks) if i % self.every == self.offset]
        idx = self.indices.get(stage, ()) if isinstance(self.indices, dict) else self.indices
        out = set()
        for i in idx:
            if not -num_blocks <= i < num_blocks:
                raise ValueError(f"block index {i} out of range for stage {stage} with {num_blocks} blocks")
            out.add(i % num_blocks)
        return sorted(out)

    def build(
        self,
        channels: int,
        stage: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> nn.Module:
        """A fresh block for ``channels`` channels on ``device`` / in ``dtype`` (floating
        parameters and buffers; ``None`` keeps the default), marked for :func:`init_blocks`."""
        b = self.attn
        if isinstance(b, nn.Module):
            have = getattr(b, "channels", None)
            if have is None:
                raise ValueError(
                    f"cannot infer the channels of block instance {type(b).__name__}: it has no "
                    f"'channels' attribute; pass a block name or a callable taking channels"
                )
            if have != channels:
                raise ValueError(
                    f"block instance {type(b).__name__} has channels={have} but the placement "
                    f"needs {channels}; pass a block name or a callable so widths are inferred"
                )
            m = copy.deepcopy(b)
        else:
            opts = dict(self.options)
            if stage is not None:
                opts.update(self.stage_options.get(stage, {}))
            if isinstance(b, str):  # every registered block takes the factory kwargs
                opts.update({k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None})
            m = create_block(b, channels, **opts)
            if not isinstance(m, nn.Module):
                raise ValueError(f"block {self.name!r} built {type(m).__name__}, not an nn.Module")
        if not isinstance(b, str) and (device is not None or dtype is not None):
            m = m.to(device=device, dtype=dtype)  # integer buffers keep their dtype
        return mark_block(m)

    def to_dict(self) -> dict:
        """A JSON-friendly description (``Placement(**d)`` / ``attn=d`` rebuilds it); named blocks only."""
        if not isinstance(self.attn, str):
            raise ValueError(f"only placements of a registered block name serialise, not {self.name!r}")
        indices = self.indices
        if isinstance(indices, dict):
            indices = {str(k): list(v) for k, v in indices.items()}
        elif indices is not None:
            indices = list(indices)
        d = {"attn": self.attn, "stages": list(self.stages), "position": self.position, "every": self.every,
             "offset": self.offset, "indices": indices, "stem": self.stem}  # fmt: skip
        if self.stage_options:
            d["stage_options"] = {str(k): dict(v) for k, v in self.stage_options.items()}
        d.update(self.options)
        return d

    def __repr__(self) -> str:
        parts = [repr(self.name), f"stages={self.stages}", f"position={self.position!r}"]
        if self.indices is not None:
            parts.append(f"indices={self.indices}")
        elif self.every != 1:
            parts.append(f"every={self.every}, offset={self.offset}")
        if self.stem:
            parts.append("stem=True")
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        return f"Placement({', '.join(parts)})"


def _one_of(name: str, value, alias: str, alias_value):
    """``value`` or its alias keyword's value; both given raises ``ValueError``."""
    if alias_value is None:
        return value
    if value is not None:
        raise ValueError(f"give {name}= or its other name {alias}=, not both")
    return alias_value


# Paper-default placements (research tables §1a-§9): name -> Placement keyword arguments.
_DEFAULTS: dict[str, dict] = {
    "gc": dict(stages=(2, 3, 4), position="before_add"),  # GCNet: every bottleneck of c3-c5
    "snl": dict(stages=(2, 3, 4), position="before_add"),
    "se": dict(position="before_add"),
    "eca": dict(position="before_add"),
    "fca": dict(position="before_add"),
    "srm": dict(position="before_add"),
    "gct": dict(position="before_conv", stem=True),  # GCT: before every conv, stem + shortcut included
    "gsop": dict(position="before_add", indices=(-1,)),  # GSoP: last bottleneck of each stage
    "nl": dict(stages=(2, 3), position="after_add", every=2),  # NL: 5 blocks, every other of res3/res4
    # DNL detection code: after the residual add, before the final ReLU
    "dnl": dict(stages=(3, 4), position="after_add_before_relu", indices={3: (-2,), 4: (0, -2, -1)}),
}


def default_placement(block, **options) -> Placement:
    """The paper-default :class:`Placement` of a block name (``'before_add'`` in every
    residual block of all stages for names without a recorded default)."""
    name = block.lower() if isinstance(block, str) else None
    kw = dict(_DEFAULTS.get(name, {}))
    kw.update(options)
    return Placement(block, **kw)


def as_placements(attn) -> list[Placement]:
    """Normalise ``attn`` (None, name, callable, module, Placement, a ``Placement.to_dict()`` dict,
    or a list of them) to placements."""
    if attn is None or attn == "":
        return []
    if isinstance(attn, Placement):
        return [attn]
    if isinstance(attn, Mapping):  # Placement.to_dict() output, e.g. from a JSON run config
        return [Placement(**attn)]
    if isinstance(attn, (str, nn.Module)) or callable(attn):
        return [default_placement(attn)]
    if isinstance(attn, (list, tuple)):
        out: list[Placement] = []
        for a in attn:
            out += as_placements(a)
        return out
    raise ValueError(f"attn must be a block name, callable, module, Placement or a list of them, got {attn!r}")


def mark_block(module: nn.Module) -> nn.Module:
    """Mark ``module`` as an inserted block so :func:`init_blocks` re-initialises it."""
    setattr(module, _MARK, True)
    return module


def is_block(module: nn.Module) -> bool:
    return bool(getattr(module, _MARK, False))


def init_blocks(model: nn.Module) -> int:
    """Re-run ``reset_parameters()`` (the paper init, zero-init included) of every inserted block.

    Models call this *last* in their initialiser, so a parent's blanket init (kaiming over all
    convs / linears) never overwrites a block's zero-initialised last layer. Call it again after
    your own ``model.apply(...)`` init. Returns the number of blocks re-initialised.
    """
    n = 0
    for m in model.modules():
        if is_block(m):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:
                for sub in m.modules():
                    if sub is not m and hasattr(sub, "reset_parameters"):
                        sub.reset_parameters()
            n += 1
    return n
