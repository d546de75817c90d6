"""Floors: what a block could cost at best on this machine, timed in the same run.

``memory floor``
    ``x.sum(spatial dims)`` plus ``x.clone()``: one read of ``x`` to build the context and one
    read + write to produce the output. A GC/SE-style block (a per-channel context fused back
    into ``x``) cannot do with less traffic; ``time / memory floor`` says how many passes over
    ``x`` (plus per-op overhead) it costs.

``GEMM floor``
    The products the block's FLOP count consists of (recorded by
    :func:`~globalctx.bench.counting.count_flops`: projections, ``QK^T``, ``PV``, 1x1 convs as
    GEMMs), replayed as bare ``torch.bmm`` / ``torch.mm`` into preallocated outputs, without
    softmax, norms or element-wise work. For Non-local blocks this is the compute bound:
    ``time / GEMM floor`` near 1 means the attention adds nothing beyond its matmuls.
    A product whose output would exceed ``max_bytes`` is timed on a slice of whole batch items
    or rows and scaled by the FLOP ratio (same ``k`` and ``n``, so the same kernel shape).

The binding floor is the larger of the two.

Training floors (``--mode train``):

``training memory floor``
    The forward floor plus the backward's passes over ``x``-sized tensors: ``dy.sum(spatial)``
    (the context's gradient, one read of ``dy``) and ``dy + x`` (``dL/dx``: the direct path plus
    the pooling's broadcast gradient, two reads and one write). Four passes' worth of ``x``
    traffic in all, the least any GC/SE-style block's forward + backward can move.

``training GEMM floor``
    Every forward product ``[m, k] @ [k, n]`` and its two backward products, ``dA = dC B^T``
    (``[m, n] @ [n, k]``) and ``dB = A^T dC`` (``[k, m] @ [m, n]``): three times the forward
    FLOPs (:func:`training_gemms`), replayed as bare GEMMs like the forward floor.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .counting import Gemm

__all__ = ["memory_floor_fn", "train_memory_floor_fn", "gemm_floor_fn", "sliced_gemm", "training_gemms"]


def memory_floor_fn(x: torch.Tensor) -> Callable[[], object]:
    """``x.sum`` over the spatial dims plus ``x.clone()`` for ``x [N, C, *S]``."""
    dims = tuple(range(2, x.dim()))

    def run():
        return x.sum(dims), x.clone()

    return run


def train_memory_floor_fn(x: torch.Tensor) -> Callable[[], object]:
    """Forward floor plus the backward's passes for ``x [N, C, *S]``: ``x.sum``, ``x.clone``,
    ``dy.sum`` and ``dy + x`` (``dy`` a fixed tensor shaped like ``x``)."""
    dims = tuple(range(2, x.dim()))
    dy = torch.randn_like(x)

    def run():
        return x.sum(dims), x.clone(), dy.sum(dims), dy + x

    return run


def training_gemms(gemms: Sequence[Gemm]) -> list[Gemm]:
    """The products of one training step: each forward ``(b, m, k, n)`` and its two gradients
    ``(b, m, n, k)`` (``dA = dC B^T``) and ``(b, k, m, n)`` (``dB = A^T dC``)."""
    out: list[Gemm] = []
    for g in gemms:
        out += [g, Gemm(g.batch, g.m, g.n, g.k), Gemm(g.batch, g.k, g.m, g.n)]
    return out


def sliced_gemm(g: Gemm, max_bytes: int, itemsize: int) -> tuple[Gemm, float]:
    """A smaller GEMM of the same k, n whose output fits ``max_bytes``, and the FLOP scale."""
    per_row = g.n * itemsize
    rows_total = g.batch * g.m
    if rows_total * per_row <= max_bytes:
        return g, 1.0
    rows = max(1, max_bytes // per_row)
    if rows >= g.m:  # whole batch items
        sub = Gemm(max(1, rows // g.m), g.m, g.k, g.n)
    else:
        sub = Gemm(1, int(rows), g.k, g.n)
    return sub, g.flops / sub.flops


def gemm_floor_fn(
    gemms: Sequence[Gemm],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_bytes: int = 64 << 20,
) -> tuple[Callable[[], object], float]:
    """A callable running the bare GEMMs, and the factor to scale its time by.

    The scale is 1 unless some product was sliced to bound memory (see the module docstring);
    then the callable runs the slices and the factor is ``flops(all) / flops(run)``.
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    plans = []
    total = run_flops = 0
    for g in gemms:
        sub, _ = sliced_gemm(g, max_bytes, itemsize)
        a = torch.randn(sub.batch, sub.m, sub.k, device=device, dtype=dtype)
        b = torch.randn(sub.batch, sub.k, sub.n, device=device, dtype=dtype)
        out = torch.empty(sub.batch, sub.m, sub.n, device=device, dtype=dtype)
        plans.append((a, b, out))
        total += g.flops
        run_flops += sub.flops

    def run():
        for a, b, out in plans:
            torch.bmm(a, b, out=out)

    scale = total / run_flops if run_flops else 1.0
    return run, (scale if math.isfinite(scale) else 1.0)
