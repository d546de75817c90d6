"""Cost of blocks and models: parameters, FLOPs (attention matmuls included), latency, peak memory.

From Python::

    >>> import globalctx
    >>> r = globalctx.profile(globalctx.create_block("gc", 256), (8, 256, 14, 14))
    >>> r["params"], r["macs"], r["latency_ms"], r["mem_alloc_mib"]

From the shell: ``globalctx bench blocks --shape 8,1024,14,14`` (see ``globalctx bench --help``
and docs/bench.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .counting import FlopCount, Gemm, count_flops, count_params
from .latency import time_cases, time_fn
from .memory import peak_memory
from .runner import Case, run_cases
from .training import MODES, step_fn

__all__ = [
    "Case",
    "FlopCount",
    "Gemm",
    "MODES",
    "count_flops",
    "count_params",
    "peak_memory",
    "profile",
    "run_cases",
    "step_fn",
    "time_cases",
    "time_fn",
]


def _where(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def profile(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    baseline: nn.Module | None = None,
    runs: int = 20,
    warmup: int = 3,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    memory: Sequence[str] | None = None,
    floors: bool = False,
    threads: int | None = None,
    compile: bool = False,
    mode: str = "inference",
) -> dict:
    """Parameters, MACs/FLOPs, latency and peak memory of ``module`` on a random input.

    Args:
        module: the module to measure (put in ``eval()`` mode; moved to ``device``/``dtype``).
        input_shape: shape of the random input, e.g. ``(8, 256, 14, 14)``.
        baseline: another module measured in the same interleaved run; the result then holds
            ``"baseline"`` (its own dict) and ``"relative"`` (``module / baseline`` ratios of
            latency, params, MACs and memory). Default: ``None``.
        runs: timed calls; latency is their median (min and max also given). Default: ``20``.
        warmup: untimed calls first. Default: ``3``.
        device, dtype: Default: where the module's parameters are (CPU float32 if none).
        memory: peak-memory methods: ``"alloc"`` (torch allocator events), ``"cuda"``
            (``max_memory_allocated``), ``"rss"`` (fresh-subprocess high-water mark, CPU).
            Default: ``("cuda",)`` on CUDA, ``("alloc",)`` elsewhere. ``()`` for none.
        floors: also time the memory floor (``x.sum`` + ``x.clone``) and the GEMM floor.
            Default: ``False``.
        threads: pin intra-op threads. Default: leave as is.
        compile: time ``torch.compile(module)``. Default: ``False``.
        mode: ``"inference"``, ``"train"`` (forward + backward, ``dL/dx`` included) or
            ``"train+step"`` (+ SGD step): latency, memory and floors of one such call
            (see :mod:`globalctx.bench.training`). Default: ``"inference"``.

    Returns:
        dict with ``params``, ``trainable``, ``buffers``, ``macs``, ``flops``, ``flops_by_op``,
        ``latency_ms`` (median), ``latency_min_ms``, ``latency_max_ms``, ``runs``, ``threads``,
        ``mem_*_mib``, optionally ``x_mem_floor``/``x_gemm_floor``, ``baseline``, ``relative``.

    Example::

        >>> import globalctx
        >>> r = globalctx.profile(globalctx.create_block("se", 256), (2, 256, 7, 7), runs=5)
        >>> r["params"], r["macs"]
        (8464, 16384)
    """
    dev0, dt0 = _where(module)
    dev = torch.device(device) if device is not None else dev0
    dt = dtype if dtype is not None else dt0
    if memory is None:
        memory = ("cuda",) if dev.type == "cuda" else ("alloc",)
    cases = [Case("module", module, input_shape, kind="module")]
    if baseline is not None:
        cases.append(Case("baseline", baseline, input_shape, kind="module"))
    rows = run_cases(
        cases,
        device=dev,
        dtype=dt,
        runs=runs,
        warmup=warmup,
        threads=threads,
        memory=tuple(memory),
        floors=floors,
        compile=compile,
        baseline="baseline" if baseline is not None else None,
        progress="none",
        mode=mode,
    )
    for r in rows:
        if r.get("error"):
            raise RuntimeError(f"profile of {r['name']} failed: {r['error']}")
    out = dict(rows[0])
    for k in (
        "group",
        "name",
        "kind",
        "error",
        "baseline",
        "x_latency_vs_base",
        "x_params_vs_base",
        "x_macs_vs_base",
        "x_mem_vs_base",
    ):
        out.pop(k, None)
    if baseline is not None:
        r0 = rows[0]
        out["baseline"] = {k: v for k, v in rows[1].items() if k not in ("group", "name", "kind", "error")}
        out["relative"] = {
            "latency": r0.get("x_latency_vs_base"),
            "params": r0.get("x_params_vs_base"),
            "macs": r0.get("x_macs_vs_base"),
            "memory": r0.get("x_mem_vs_base"),
        }
        for k in [k for k in out["baseline"] if k.startswith("x_") and k.endswith("_vs_base")] + ["baseline"]:
            out["baseline"].pop(k, None)
    return out
