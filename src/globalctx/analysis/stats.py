"""GCNet's query-independence statistics (Cao et al., arXiv 1904.11492, §2.2 / Table 1).

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims, ``L = prod(S)`` positions,
``L_k`` key positions, ``Q`` query positions used for the attention statistics, ``P`` vectors
compared (``L`` for features, ``Q`` for attention rows), ``D`` their length.

Definitions (the paper's, as reconstructed from the authors' answers): for one feature map,

    avg_dist = 1 / N_p**2 * sum_{i=1..N_p} sum_{j=1..N_p} dist(v_i, v_j)

over **all ordered pairs of positions, self-pairs included**, with

- cosine distance ``dist = (1 - cos(v_i, v_j)) / 2`` (in ``[0, 1]``) for
  the block input ``v_i = x_i`` ("input"), the block output before fusion ``v_i = z_i - x_i``
  ("output"), and the attention map of query ``i``, ``v_i = (f(x_i, x_j) / C(x))_j`` ("att");
- Jensen-Shannon divergence (natural log, in ``[0, ln 2]``) for the attention maps:
  ``dist = 1/2 sum_k [v_ik log(2 v_ik / (v_ik + v_jk)) + v_jk log(2 v_jk / (v_ik + v_jk))]``.

The per-map values are averaged over the images of a dataset.

Computation:

- Mean cosine distance over all ``P**2`` ordered pairs is exact and ``O(P D)``: with unit vectors
  ``u_i``, ``mean_ij cos = |sum_i u_i|**2 / P**2``. So the input and output statistics always use
  every position. Zero vectors have no direction; they are left out (their pairs are not
  counted); a map whose vectors are all zero (e.g. the output of a zero-initialised block) gives
  NaN.
- Attention statistics need the attention rows of the query positions. When ``L <= max_queries``
  all ``L`` rows are used and the value is exact. Otherwise a seeded random sample of ``Q``
  distinct positions (a fresh sample per batch) is used, and the mean over the ``Q**2`` sampled
  pairs is corrected for the self-pairs (distance 0) it over-weights:
  ``estimate = mean_Q * Q / (Q - 1) * (L - 1) / L``. That is the unbiased U-statistic of the mean
  over distinct pairs, rescaled to the paper's self-pairs-included mean; it equals the exact value
  when ``Q = L``. Its error is quantified in ``tests/test_analysis.py``.
- JSD rows must be distributions: rows are normalised to sum 1 (a no-op for softmax rows). Rows
  with negative entries (dot-product NL) have no JSD: NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from .capture import PAIRWISE, block_kind, resolve_queries, select_blocks

__all__ = [
    "images_of",
    "iter_batches",
    "model_device",
    "mean_cosine_distance",
    "mean_jsd",
    "correct_for_sampling",
    "block_statistics",
    "query_independence",
    "BlockStats",
    "QueryIndependence",
    "STATISTICS",
    "EXTRA_STATISTICS",
    "mean_normalised_entropy",
]

# statistic name -> column header
STATISTICS = {
    "input_cos": "cos(input)",
    "output_cos": "cos(output)",
    "att_cos": "cos(att)",
    "att_jsd": "JSD(att)",
}
# not in GCNet's table, reported to read it: mean entropy of the attention rows / ln(L_k), in
# [0, 1]; 1 = uniform maps (then query independence is trivial), 0 = one-hot maps
# cosine distance of the centred rows (each row minus its mean, i.e. 1 - Pearson correlation, / 2):
# whether the maps' *deviations* from flat point to the same positions, whatever their size
EXTRA_STATISTICS = {"att_entropy": "H(att) / ln L_k", "att_cos_centred": "cos(att - mean)"}


def mean_cosine_distance(v: torch.Tensor) -> torch.Tensor:
    """Mean of ``(1 - cos(v_i, v_j)) / 2`` over all ordered pairs ``i, j`` (self-pairs included).

    Exact, ``O(P D)``, computed in float64. Zero vectors are left out; NaN when all are zero.

    Shape:
        - Input: ``[..., P, D]``
        - Output: ``[...]``
    """
    v = v.double()
    norm = v.norm(dim=-1, keepdim=True)  # [..., P, 1]
    valid = norm > 0
    u = torch.where(valid, v / norm.clamp_min(torch.finfo(torch.float64).tiny), 0.0)  # [..., P, D]
    s = u.sum(dim=-2)  # [..., D]
    p = valid.sum(dim=(-2, -1)).double()  # [...]
    mean_cos = (s * s).sum(-1) / p.square()
    dist = ((1.0 - mean_cos) / 2.0).clamp(0.0, 1.0)
    return torch.where(p > 0, dist, torch.full_like(dist, math.nan))


def mean_jsd(p: torch.Tensor, *, max_elements: int = 1 << 22) -> torch.Tensor:
    """Mean Jensen-Shannon divergence (nats) over all ordered pairs of rows (self-pairs included).

    Rows are normalised to sum 1 first. Rows with a negative entry or zero sum make the result
    NaN (no distribution). ``O(P**2 D)`` time; memory bounded by ``max_elements`` float64 values
    (rows are processed in chunks).

    Shape:
        - Input: ``[..., P, D]``
        - Output: ``[...]``
    """
    p = p.double()
    batch_shape = p.shape[:-2]
    P, D = p.shape[-2], p.shape[-1]
    total = p.sum(-1, keepdim=True)  # [..., P, 1]
    bad = (p < 0).flatten(-2).any(-1) | (total <= 0).flatten(-2).any(-1)  # [...]
    p = p.clamp_min(0.0) / total.clamp_min(torch.finfo(torch.float64).tiny)  # [..., P, D]
    h = -torch.special.xlogy(p, p).sum(-1)  # [..., P]
    acc = torch.zeros(batch_shape, dtype=torch.float64, device=p.device)
    per_row = max(1, math.prod(batch_shape) * P * D)
    chunk = max(1, max_elements // per_row)
    for i0 in range(0, P, chunk):
        i1 = min(P, i0 + chunk)
        m = (p[..., i0:i1, None, :] + p[..., None, :, :]) / 2.0  # [..., c, P, D]
        hm = -torch.special.xlogy(m, m).sum(-1)  # [..., c, P]
        jsd = hm - (h[..., i0:i1, None] + h[..., None, :]) / 2.0  # [..., c, P]
        acc += jsd.clamp_min(0.0).sum(dim=(-2, -1))
    out = acc / (P * P)
    return torch.where(bad, torch.full_like(out, math.nan), out)


def mean_normalised_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``H(row) / ln(D)`` (rows normalised to sum 1; NaN if a row is signed).

    Shape:
        - Input: ``[..., P, D]``
        - Output: ``[...]``
    """
    p = p.double()
    total = p.sum(-1, keepdim=True)  # [..., P, 1]
    bad = (p < 0).flatten(-2).any(-1) | (total <= 0).flatten(-2).any(-1)  # [...]
    p = p.clamp_min(0.0) / total.clamp_min(torch.finfo(torch.float64).tiny)
    D = p.shape[-1]
    h = -torch.special.xlogy(p, p).sum(-1).mean(-1) / math.log(D) if D > 1 else torch.zeros(p.shape[:-2])
    return torch.where(bad, torch.full_like(h, math.nan), h)


def correct_for_sampling(mean_sampled: torch.Tensor, num_queries: int, num_positions: int) -> torch.Tensor:
    """Estimate the all-pairs mean over ``L`` positions from the all-pairs mean over ``Q`` of them.

    ``mean_Q * Q / (Q - 1) * (L - 1) / L`` (self-pairs have distance 0); identity when
    ``Q >= L``; NaN when ``Q < 2 < L``.
    """
    q, L = int(num_queries), int(num_positions)
    if q >= L:
        return mean_sampled
    if q < 2:
        return torch.full_like(mean_sampled, math.nan)
    return mean_sampled * (q / (q - 1)) * ((L - 1) / L)


def block_statistics(
    x: torch.Tensor,
    z: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    *,
    num_positions: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image statistics of one block.

    Args:
        x: block input ``[N, C, *S]``.
        z: block output ``[N, C, *S]`` (the "output" statistic uses ``z - x``); optional.
        rows: attention rows ``[N, Q, L_k]`` of ``Q`` query positions; optional.
        num_positions: ``L``, the number of query positions the rows were drawn from; when it
            exceeds ``Q`` the attention statistics are sampling-corrected (module docstring).
            Default: ``Q`` (all queries given).

    Returns:
        ``{'input_cos', 'output_cos', 'att_cos', 'att_jsd', 'att_entropy', 'att_cos_centred'}``
        -> ``[N]`` float64 (the keys whose inputs were given). ``att_entropy`` is
        :func:`mean_normalised_entropy` of the rows; ``att_cos_centred`` the cosine statistic of the
        rows minus their mean (do the deviations from a flat map point the same way?).
    """
    out = {"input_cos": mean_cosine_distance(x.flatten(2).transpose(1, 2))}  # [N, L, C]
    if z is not None:
        out["output_cos"] = mean_cosine_distance((z - x).flatten(2).transpose(1, 2))  # [N, L, C]
    if rows is not None:
        q = rows.shape[1]
        L = q if num_positions is None else int(num_positions)
        out["att_cos"] = correct_for_sampling(mean_cosine_distance(rows), q, L)
        out["att_jsd"] = correct_for_sampling(mean_jsd(rows), q, L)
        out["att_entropy"] = mean_normalised_entropy(rows)
        centred = rows - rows.double().mean(-1, keepdim=True)  # [N, Q, L_k]
        out["att_cos_centred"] = correct_for_sampling(mean_cosine_distance(centred), q, L)
    return out


@dataclass
class BlockStats:
    """Dataset averages of the statistics of one block (see the module docstring).

    ``mean`` / ``std`` map statistic name -> value over images (NaN where undefined);
    ``kind`` is ``'pairwise'`` (NL/DNL) or ``'shared'`` (GC/SNL: one map for all queries, so the
    attention statistics are 0 by construction); ``queries`` is the number of query positions
    per image used for the attention statistics (``== positions`` means exact).
    """

    name: str
    kind: str
    spatial_shape: tuple[int, ...]
    key_shape: tuple[int, ...]
    positions: int
    queries: int
    images: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.queries >= self.positions


@dataclass
class QueryIndependence:
    """Result of :func:`query_independence`: one :class:`BlockStats` per block."""

    blocks: dict[str, BlockStats]
    seed: int = 0
    max_queries: int = 256

    def __getitem__(self, name: str) -> BlockStats:
        return self.blocks[name]

    def __iter__(self):
        return iter(self.blocks.values())

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            name: {
                "kind": b.kind,
                "spatial_shape": list(b.spatial_shape),
                "key_shape": list(b.key_shape),
                "positions": b.positions,
                "queries": b.queries,
                "images": b.images,
                "mean": dict(b.mean),
                "std": dict(b.std),
            }
            for name, b in self.blocks.items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> QueryIndependence:
        """Inverse of :meth:`to_dict` (e.g. ``stats.json`` written by ``globalctx analyze``)."""
        blocks = {
            name: BlockStats(
                name,
                b["kind"],
                tuple(b["spatial_shape"]),
                tuple(b["key_shape"]),
                int(b["positions"]),
                int(b["queries"]),
                int(b["images"]),
                {k: (math.nan if v is None else float(v)) for k, v in b["mean"].items()},
                {k: (math.nan if v is None else float(v)) for k, v in b["std"].items()},
            )
            for name, b in d.items()
        }
        return cls(blocks)

    def to_markdown(self) -> str:
        """A GCNet-Table-1-style table: one row per block, mean (std over images)."""
        columns = {**STATISTICS, **EXTRA_STATISTICS}
        head = "| block | kind | S | queries / positions | images | " + " | ".join(columns.values()) + " |"
        lines = [head, "|" + "---|" * (5 + len(columns))]
        for b in self:
            cells = []
            for key in columns:
                m, s = b.mean.get(key, math.nan), b.std.get(key, math.nan)
                if b.kind != PAIRWISE and key in ("att_cos", "att_jsd", "att_cos_centred"):
                    cells.append("0 (one shared map)")
                elif math.isnan(m):
                    cells.append("n/a")
                else:
                    cells.append(f"{fmt(m)} ({fmt(s)})")
            shape = "x".join(str(s) for s in b.spatial_shape)
            qp = f"{b.queries} / {b.positions}" + (" (all)" if b.exact else " (sampled)")
            lines.append(f"| `{b.name}` | {b.kind} | {shape} | {qp} | {b.images} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def fmt(v: float) -> str:
    """4 decimals, or 3 significant digits in scientific notation below 1e-3 (0 stays 0)."""
    if math.isnan(v):
        return "n/a"
    return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.2e}"


class _Accumulator:
    def __init__(self, name: str, kind: str):
        self.name, self.kind = name, kind
        self.sums: dict[str, float] = {}
        self.sqs: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.images = 0
        self.spatial_shape: tuple[int, ...] = ()
        self.key_shape: tuple[int, ...] = ()
        self.positions = 0
        self.queries = 0

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for key, v in stats.items():
            v = v[~torch.isnan(v)]
            self.sums[key] = self.sums.get(key, 0.0) + float(v.sum())
            self.sqs[key] = self.sqs.get(key, 0.0) + float(v.square().sum())
            self.counts[key] = self.counts.get(key, 0) + int(v.numel())

    def result(self) -> BlockStats:
        mean, std = {}, {}
        for key in (*STATISTICS, *EXTRA_STATISTICS):
            n = self.counts.get(key, 0)
            if n == 0:
                mean[key] = std[key] = math.nan
                continue
            mu = self.sums[key] / n
            var = max(0.0, self.sqs[key] / n - mu * mu)
            mean[key], std[key] = mu, math.sqrt(var)
        return BlockStats(
            self.name,
            self.kind,
            self.spatial_shape,
            self.key_shape,
            self.positions,
            self.queries,
            self.images,
            mean,
            std,
        )


def images_of(batch) -> torch.Tensor:
    """The image tensor of a batch: a tensor, the first tensor of a tuple/list with >= 3 dims
    (``(x, y)`` or the trainer's ``(step, x, y)``), or ``batch['image']``."""
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if torch.is_tensor(item) and item.dim() >= 3:
                return item
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "x"):
            if key in batch:
                return batch[key]
    raise ValueError(f"cannot find images in a batch of type {type(batch).__name__}")


def iter_batches(loader) -> Iterable:
    """``loader`` itself, or the evaluation epoch of a trainer ``BatchLoader`` (``iter_epoch``)."""
    if not hasattr(loader, "__iter__") and callable(getattr(loader, "iter_epoch", None)):
        return loader.iter_epoch(0)
    return loader


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter lives (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def query_independence(
    model: nn.Module,
    loader: Iterable,
    *,
    max_queries: int = 256,
    seed: int = 0,
    max_batches: int | None = None,
    blocks: str | Iterable[str] | None = None,
    device: torch.device | str | None = None,
) -> QueryIndependence:
    """GCNet Table 1 statistics of every NL/DNL/GC/SNL block of ``model`` over a dataset.

    Runs ``model`` in eval mode on the images of ``loader`` (tensors, ``(images, labels)`` pairs,
    dicts with an ``'image'`` key, or a trainer ``BatchLoader``) with hooks that compute, per image and block, the mean
    cosine distance of the block inputs, of the block outputs before fusion (``z - x``) and of
    the attention maps, and the mean JSD of the attention maps (module docstring), then averages
    over images. The model's mode is restored afterwards and the hooks removed.

    Args:
        model: the network.
        loader: iterable of batches.
        max_queries: attention statistics use all ``L`` query positions when ``L <= max_queries``
            (exact), else a seeded sample of ``max_queries`` positions per batch. Default: ``256``.
        seed: seed of the query samples. Default: ``0``.
        max_batches: stop after this many batches. Default: all.
        blocks: restrict to these block names. Default: all attention blocks.
        device: where to run; default the model's device.

    Returns:
        :class:`QueryIndependence` (``.to_markdown()`` for a table).

    Example::

        >>> stats = globalctx.analysis.query_independence(model, loader, max_batches=8)
        >>> print(stats.to_markdown())
    """
    if not isinstance(max_queries, int) or max_queries < 2:
        raise ValueError(f"max_queries must be an int >= 2, got {max_queries!r}")
    selected = select_blocks(model, blocks)
    accs = {name: _Accumulator(name, block_kind(m)) for name, m in selected.items()}
    gens = {name: torch.Generator().manual_seed(seed) for name in selected}

    def make_hook(name):
        def hook(module, args, output):
            x = args[0]
            acc = accs[name]
            L = math.prod(x.shape[2:])
            acc.spatial_shape, acc.positions = tuple(x.shape[2:]), L
            acc.images += x.shape[0]
            if acc.kind == PAIRWISE:
                q = resolve_queries("all" if L <= max_queries else max_queries, x.shape[2:], generator=gens[name])
                rows = module.attention_rows(x, q.to(x.device))  # [N, Q, L_k]
                acc.key_shape = tuple(int(s) for s in module.key_shape(x))
                acc.queries = q.numel()
                acc.add(block_statistics(x, output, rows, num_positions=L))
            else:
                acc.key_shape, acc.queries = tuple(x.shape[2:]), L
                stats = block_statistics(x, output)
                zeros = torch.zeros(x.shape[0], dtype=torch.float64)
                stats.update(att_cos=zeros, att_jsd=zeros, att_cos_centred=zeros)  # one shared map
                stats["att_entropy"] = mean_normalised_entropy(module.context.attention(x)[:, None])
                acc.add(stats)
            return None

        return hook

    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    handles = [m.register_forward_hook(make_hook(name)) for name, m in selected.items()]
    try:
        model.eval()
        for i, batch in enumerate(iter_batches(loader)):
            if max_batches is not None and i >= max_batches:
                break
            model(images_of(batch).to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return QueryIndependence({n: a.result() for n, a in accs.items()}, seed=seed, max_queries=max_queries)
