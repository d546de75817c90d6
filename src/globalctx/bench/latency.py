"""Latency: warm-up, then the median of N timed calls under ``torch.inference_mode()``
(``grad=True``: with autograd enabled, for training steps).

Several cases are timed *interleaved*: each round runs every case once, in an order that rotates
from round to round, so drift on a shared machine (other processes, frequency, cache state)
affects all cases alike and ratios taken from one run are stable even when absolute times are not.
On CUDA each call is bracketed by ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["time_cases", "time_fn", "set_threads", "synchronizer"]


def set_threads(threads: int | None) -> int:
    """Pin intra-op threads to ``threads`` (``None``: leave as is); returns the count in effect."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A no-argument function that waits for ``device`` to finish queued work."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    if dev.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def _stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in samples]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "runs": len(ms),
    }


def time_cases(
    cases: Mapping[str, Callable[[], object]],
    *,
    runs: int = 20,
    warmup: int = 3,
    device: torch.device | str = "cpu",
    interleave: bool = True,
    on_round: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    grad: bool = False,
) -> dict[str, dict[str, float]]:
    """Time several zero-argument callables.

    Args:
        cases: name -> callable.
        runs: timed calls per case (the median is reported). Default: ``20``.
        warmup: untimed calls per case first. Default: ``3``.
        device: where the work runs (for synchronisation). Default: ``"cpu"``.
        interleave: round-robin with a rotating order (``True``) or one case after the other.
            Default: ``True``.
        on_round: called as ``on_round(done, total)`` after each interleaved round (progress).
        clock: seconds counter. Default: ``time.perf_counter`` (wall clock); ``time.thread_time``
            counts only the CPU time of the calling thread (one intra-op thread), robust to other
            processes on a shared machine.
        grad: run with autograd enabled (training steps) instead of ``torch.inference_mode()``.
            Default: ``False``.

    Returns:
        name -> ``{"median_ms", "min_ms", "max_ms", "mean_ms", "runs"}``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    sync = synchronizer(device)
    names = list(cases)
    samples: dict[str, list[float]] = {n: [] for n in names}

    def once(name: str) -> None:
        sync()
        t0 = clock()
        cases[name]()
        sync()
        samples[name].append(clock() - t0)

    with torch.enable_grad() if grad else torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                cases[name]()
        sync()
        if interleave:
            for r in range(runs):
                k = r % len(names)
                for name in names[k:] + names[:k]:
                    once(name)
                if on_round is not None:
                    on_round(r + 1, runs)
        else:
            for name in names:
                for _ in range(runs):
                    once(name)
    return {n: _stats(samples[n]) for n in names}


def time_fn(fn: Callable[[], object], **kwargs) -> dict[str, float]:
    """Time one callable (see :func:`time_cases` for the options)."""
    return time_cases({"fn": fn}, **kwargs)["fn"]
