"""Capture attention maps, block inputs and block outputs with forward hooks.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims of the block input,
``L = prod(S)`` query positions, ``L_k`` key positions (``L`` or ``L`` after sub-sampling),
``Q`` chosen query positions, ``d`` number of spatial dims.

Two kinds of blocks are recognised, by the attention-map protocols of
:mod:`globalctx.layers.parts.base`:

- **pairwise** (NL, DNL, any module satisfying
  :class:`~globalctx.layers.parts.base.PairwiseAttentionMap`:
  ``attention_rows(x, queries) -> [N, Q, L_k]`` and ``key_shape(x)``): one attention map per
  query position. Only the rows of the chosen queries
  are computed, from the hooked block input, so the ``L x L`` matrix is never built. DNL's unary
  map (``unary_attention(x) -> [N, L_k]``) is recorded separately.
- **shared** (SNL, GC: a :class:`~globalctx.layers.GlobalContextBlock` whose ``context``
  satisfies :class:`~globalctx.layers.parts.base.SharedAttentionMap`, e.g.
  :class:`~globalctx.layers.AttnPool`): one query-independent map ``[N, L]`` per image.

Hooks never change the block's output and never change forward signatures; they recompute the
maps under ``torch.no_grad()`` from the input the block received.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers.parts.base import GlobalContextBlock, PairwiseAttentionMap, SharedAttentionMap

__all__ = ["capture", "find_blocks", "select_blocks", "block_kind", "grid_queries", "resolve_queries", "Recording"]

PAIRWISE = "pairwise"
SHARED = "shared"


def block_kind(module: nn.Module) -> str | None:
    """``'pairwise'`` (NL/DNL), ``'shared'`` (GC/SNL with attention pooling) or ``None``."""
    if isinstance(module, PairwiseAttentionMap):
        return PAIRWISE
    if isinstance(module, GlobalContextBlock) and isinstance(module.context, SharedAttentionMap):
        return SHARED
    return None


def find_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """All attention blocks of ``model`` by qualified name, in module order.

    The sub-modules of a found block are not searched (a block is analysed as a whole).

    Example::

        >>> net = nn.Sequential(nn.Conv2d(3, 64, 3), globalctx.create_block("gc", 64))
        >>> list(find_blocks(net))
        ['1']
    """
    found: dict[str, nn.Module] = {}

    def visit(prefix: str, module: nn.Module) -> None:
        if block_kind(module) is not None:
            found[prefix] = module
            return
        for name, child in module.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return found


def grid_queries(k: int, ndim: int = 2) -> torch.Tensor:
    """A ``k x ... x k`` grid of fractional query coordinates at cell centres, ``[k**ndim, ndim]``.

    Fractional coordinates (in ``[0, 1)`` along each spatial dim) address the same image points
    in blocks of different resolution; pass the result as ``queries=`` to :func:`capture`.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"grid_queries: k must be a positive int, got {k!r}")
    centres = (torch.arange(k, dtype=torch.float64) + 0.5) / k  # [k]
    mesh = torch.meshgrid(*([centres] * ndim), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)  # [k**ndim, ndim]


def resolve_queries(queries, spatial_shape: Sequence[int], *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn a query specification into flat indices ``[Q]`` (LongTensor) into ``L = prod(S)``.

    Args:
        queries: one of
            - an ``int`` ``Q``: ``min(Q, L)`` distinct positions drawn at random (with
              ``generator``), sorted;
            - ``"all"``: every position ``0 .. L-1``;
            - a float tensor / nested sequence ``[Q, d]`` of fractional coordinates in
              ``[0, 1]`` (see :func:`grid_queries`), mapped to ``floor(frac * S)``;
            - an integer tensor / sequence ``[Q]`` of flat indices (each ``< L``).
        spatial_shape: ``S``.
        generator: random source for the ``int`` form.
    """
    shape = tuple(int(s) for s in spatial_shape)
    L = math.prod(shape)
    if isinstance(queries, bool):
        raise ValueError(f"queries must be an int, 'all', coordinates or indices, got {queries!r}")
    if isinstance(queries, int):
        if queries < 1:
            raise ValueError(f"queries: the number of query positions must be >= 1, got {queries}")
        q = min(queries, L)
        return torch.randperm(L, generator=generator)[:q].sort().values
    if isinstance(queries, str):
        if queries != "all":
            raise ValueError(f"queries: the only string form is 'all', got {queries!r}")
        return torch.arange(L)
    t = torch.as_tensor(queries)
    if t.is_floating_point():
        if t.dim() == 1 and len(shape) == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[1] != len(shape):
            raise ValueError(
                f"queries: fractional coordinates must be [Q, {len(shape)}] for spatial shape {shape}, "
                f"got {list(t.shape)}"
            )
        if (t < 0).any() or (t > 1).any():
            raise ValueError("queries: fractional coordinates must lie in [0, 1]")
        sizes = torch.tensor(shape, dtype=torch.float64)
        coords = torch.minimum((t.double() * sizes).floor(), sizes - 1).long()  # [Q, d]
        return coords_to_flat(coords, shape)
    t = t.long().reshape(-1)
    if t.numel() == 0 or (t < 0).any() or (t >= L).any():
        raise ValueError(f"queries: flat indices must lie in [0, {L}) for spatial shape {shape}, got {t.tolist()}")
    return t


def coords_to_flat(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``[Q, d]`` integer coordinates -> ``[Q]`` flat (row-major) indices."""
    flat = torch.zeros(coords.shape[0], dtype=torch.long)
    for dim, size in enumerate(shape):
        flat = flat * int(size) + coords[:, dim]
    return flat


def flat_to_coords(flat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``[Q]`` flat (row-major) indices -> ``[Q, d]`` integer coordinates."""
    coords = []
    rest = flat.long()
    for size in reversed(tuple(shape)):
        coords.append(rest % int(size))
        rest = rest // int(size)
    return torch.stack(coords[::-1], dim=-1)  # [Q, d]


def _check_query_spec(queries) -> None:
    """Reject a malformed query specification before any hook is installed."""
    if isinstance(queries, bool) or (isinstance(queries, int) and queries < 1):
        raise ValueError(f"queries must be an int >= 1, 'all', coordinates or indices, got {queries!r}")
    if isinstance(queries, str) and queries != "all":
        raise ValueError(f"queries: the only string form is 'all', got {queries!r}")
    if not isinstance(queries, (int, str)):
        try:
            torch.as_tensor(queries)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"queries: cannot read {queries!r} as coordinates or indices ({e})") from None


@dataclass
class _BlockRecord:
    kind: str
    spatial_shape: tuple[int, ...] | None = None
    key_shape: tuple[int, ...] | None = None
    queries: torch.Tensor | None = None
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    attention: list[torch.Tensor] = field(default_factory=list)
    unary: list[torch.Tensor] = field(default_factory=list)


def attention_rows(module: nn.Module, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Rows ``[N, Q, L_k]`` of a pairwise block, or the shared map broadcast to ``[N, Q, L]``."""
    if block_kind(module) == PAIRWISE:
        return module.attention_rows(x, queries.to(x.device))
    mask = module.context.attention(x)  # [N, L]
    return mask.unsqueeze(1).expand(-1, queries.numel(), -1)  # [N, Q, L]


class Recording:
    """What :func:`capture` recorded; also the handle that removes the hooks.

    Use as a context manager (hooks removed on exit) or call :meth:`eject`. Recorded tensors stay
    readable after the hooks are removed. Several forward passes append along the batch dim.

    Example::

        >>> with capture(model, queries=3) as rec:
        ...     model(images)
        >>> rec.attention("layer3.5.attn").shape     # NL/DNL: [N, Q, L_k]; GC/SNL: [N, L]
    """

    def __init__(self, model, blocks, *, queries, seed, record_io, to_cpu):
        _check_query_spec(queries)
        self._model = model
        self._modules = blocks
        self._queries = queries
        self._seed = seed
        self._record_io = record_io
        self._to_cpu = to_cpu
        self._records = {name: _BlockRecord(kind=block_kind(m)) for name, m in blocks.items()}
        self._handles = [m.register_forward_hook(self._make_hook(name)) for name, m in blocks.items()]

    # ----------------------------------------------------------------------------- hooks
    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t.cpu() if self._to_cpu else t

    def _make_hook(self, name: str):
        def hook(module, args, output):
            if not args or not torch.is_tensor(args[0]):
                return None
            x = args[0]
            rec = self._records[name]
            shape = tuple(x.shape[2:])
            if rec.spatial_shape is None:
                rec.spatial_shape = shape
                if rec.kind == PAIRWISE:
                    gen = torch.Generator().manual_seed(self._seed)
                    rec.queries = resolve_queries(self._queries, shape, generator=gen)
                    rec.key_shape = tuple(int(s) for s in module.key_shape(x))
                else:
                    rec.key_shape = shape
            elif rec.spatial_shape != shape:
                raise ValueError(
                    f"capture: block {name!r} saw spatial shape {shape} after {rec.spatial_shape}; "
                    "call clear() between inputs of different sizes"
                )
            with torch.no_grad():
                if rec.kind == PAIRWISE:
                    rec.attention.append(self._keep(module.attention_rows(x, rec.queries.to(x.device))))
                    if callable(getattr(module, "unary_attention", None)):
                        rec.unary.append(self._keep(module.unary_attention(x)))
                else:
                    rec.attention.append(self._keep(module.context.attention(x)))
            if self._record_io:
                rec.inputs.append(self._keep(x))
                if torch.is_tensor(output):
                    rec.outputs.append(self._keep(output))
            return None

        return hook

    def eject(self) -> None:
        """Remove all hooks (idempotent). The recorded tensors stay available."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are still installed."""
        return bool(self._handles)

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.eject()

    def clear(self) -> None:
        """Forget everything recorded so far (queries are drawn again on the next forward)."""
        for name, m in self._modules.items():
            self._records[name] = _BlockRecord(kind=block_kind(m))

    # ----------------------------------------------------------------------------- access
    @property
    def blocks(self) -> list[str]:
        """Names of the hooked blocks, in module order."""
        return list(self._records)

    def _get(self, name: str) -> _BlockRecord:
        try:
            rec = self._records[name]
        except KeyError:
            raise ValueError(f"unknown block {name!r}; captured blocks: {self.blocks}") from None
        if rec.spatial_shape is None:
            raise ValueError(f"block {name!r} has not run yet: call the model inside the capture")
        return rec

    def kind(self, name: str) -> str:
        """``'pairwise'`` (NL/DNL: one map per query) or ``'shared'`` (GC/SNL: one map)."""
        if name not in self._records:
            raise ValueError(f"unknown block {name!r}; captured blocks: {self.blocks}")
        return self._records[name].kind

    def attention(self, name: str) -> torch.Tensor:
        """Pairwise blocks: rows ``[N, Q, L_k]`` of the chosen queries; shared blocks: ``[N, L]``.

        Rows are what the block computes: softmax rows sum to 1 (Gaussian, embedded Gaussian,
        DNL pairwise); dot-product / concatenation rows are the raw ``f / C(x)`` weights.
        """
        return torch.cat(self._get(name).attention, dim=0)

    def unary(self, name: str) -> torch.Tensor:
        """DNL's unary (query-independent) map ``[N, L_k]``; ``ValueError`` for other blocks."""
        rec = self._get(name)
        if not rec.unary:
            raise ValueError(f"block {name!r} has no unary attention (only DNL has one)")
        return torch.cat(rec.unary, dim=0)

    def inputs(self, name: str) -> torch.Tensor:
        """Block inputs ``x``, ``[N, C, *S]`` (needs ``record_io=True``)."""
        rec = self._get(name)
        if not rec.inputs:
            raise ValueError("inputs were not recorded: use capture(..., record_io=True)")
        return torch.cat(rec.inputs, dim=0)

    def outputs(self, name: str) -> torch.Tensor:
        """Block outputs ``z``, ``[N, C, *S]`` (needs ``record_io=True``)."""
        rec = self._get(name)
        if not rec.outputs:
            raise ValueError("outputs were not recorded: use capture(..., record_io=True)")
        return torch.cat(rec.outputs, dim=0)

    def queries(self, name: str) -> torch.Tensor | None:
        """Flat query indices ``[Q]`` into ``L`` (``None`` for shared blocks)."""
        q = self._get(name).queries
        return None if q is None else q.clone()

    def query_coords(self, name: str) -> torch.Tensor | None:
        """Query positions as integer coordinates ``[Q, d]`` on the block's grid ``S``."""
        rec = self._get(name)
        return None if rec.queries is None else flat_to_coords(rec.queries, rec.spatial_shape)

    def spatial_shape(self, name: str) -> tuple[int, ...]:
        """``S`` of the block input."""
        return self._get(name).spatial_shape

    def key_shape(self, name: str) -> tuple[int, ...]:
        """Spatial shape of the keys (``S`` or ``S`` after the block's sub-sampling)."""
        return self._get(name).key_shape

    def __repr__(self) -> str:
        state = "attached" if self.attached else "ejected"
        return f"Recording({state}, blocks={self.blocks})"


def select_blocks(model: nn.Module, blocks: str | Iterable[str] | None) -> dict[str, nn.Module]:
    """The analysable blocks of ``model`` named in ``blocks`` (default all, see :func:`find_blocks`)."""
    found = find_blocks(model)
    if not found:
        raise ValueError(
            "no attention blocks found: expected modules with attention_rows() (NL, DNL) or "
            "GlobalContextBlock with AttnPool context (GC, SNL)"
        )
    if blocks is None:
        return found
    names = [blocks] if isinstance(blocks, str) else list(blocks)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ValueError(f"unknown attention blocks {unknown}; found: {list(found)}")
    return {n: found[n] for n in names}


def capture(
    model: nn.Module,
    *,
    queries=3,
    blocks: str | Iterable[str] | None = None,
    seed: int = 0,
    record_io: bool = True,
    to_cpu: bool = True,
) -> Recording:
    """Hook the attention blocks of ``model`` and record maps, inputs and outputs.

    Args:
        model: any module containing NL/DNL blocks (``attention_rows``) and/or GC/SNL blocks.
        queries: query positions for pairwise blocks, see :func:`resolve_queries`: an int (that
            many random positions, drawn with ``seed``, the same for every image), ``"all"``,
            fractional coordinates ``[Q, d]`` (e.g. :func:`grid_queries`) or flat indices.
            Default: ``3`` (as GCNet's Figure 1).
        blocks: names (see :func:`find_blocks`) to hook; default all.
        seed: seed of the random query draw (each block draws with a fresh generator).
            Default: ``0``.
        record_io: also keep block inputs and outputs. Default: ``True``.
        to_cpu: move recorded tensors to the CPU. Default: ``True``.

    Returns:
        a :class:`Recording`; use it as a context manager or call ``eject()``.
    """
    selected = select_blocks(model, blocks)
    return Recording(model, selected, queries=queries, seed=seed, record_io=record_io, to_cpu=to_cpu)
