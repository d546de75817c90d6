"""The expected run time of a comparison, from a quick measurement on this machine.

For each variant still to train, :func:`measure_variant` times a few training steps (forward,
backward, SGD step on a random batch of ``batch_size`` images) and a few evaluation forwards,
after one warm-up step, with the comparison's thread count. A run then costs about
``epochs * steps_per_epoch * step_s + eval_batches * eval_s``. Data loading and augmentation are
not in the measurement; :data:`OVERHEAD` (measured: the estimate against the real runs of the
reduced comparison on a 2-core machine) covers them. The estimate reflects the machine's load at
the moment it is taken: other work on the machine slows the runs down as much as it does the
measurement.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..train.checkpoint import build_model
from ..train.config import TrainConfig
from ..train.loop import model_spec

__all__ = ["OVERHEAD", "VariantCost", "measure_variant", "run_seconds", "format_duration"]

OVERHEAD = 1.15  # data loading, augmentation, checkpoints: real run time / measured compute time


@dataclass(frozen=True)
class VariantCost:
    """Measured seconds of one training step and one evaluation batch of a variant."""

    step_s: float
    eval_s: float
    eval_batch: int


def measure_variant(cfg: TrainConfig, image_shape: tuple[int, ...], num_classes: int, *, steps: int = 2) -> VariantCost:
    """Median time of ``steps`` training steps (after one warm-up step) and ``steps`` evaluation
    batches of ``cfg``'s model (the higher one of two).

    Shape:
        image_shape: ``(C, H, W)``; the batches are ``[batch_size, C, H, W]``.
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(0)
        model = build_model(model_spec(cfg, num_classes, image_shape[0]))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(cfg.batch_size, *image_shape)  # [B, C, H, W]
        y = torch.randint(0, num_classes, (cfg.batch_size,))
        times = []
        model.train()
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        eval_batch = min(cfg.batch_size * 2, 512)
        xe = torch.randn(eval_batch, *image_shape)  # [B_eval, C, H, W]
        model.eval()
        etimes = []
        with torch.inference_mode():
            for _ in range(steps):
                t0 = time.perf_counter()
                model(xe)
                etimes.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return VariantCost(sorted(times[1:])[len(times[1:]) // 2], sorted(etimes)[len(etimes) // 2], eval_batch)


def run_seconds(cost: VariantCost, cfg: TrainConfig, n_train: int, n_test: int) -> float:
    """Expected wall time of one run: every epoch's steps plus the evaluations, times :data:`OVERHEAD`."""
    steps = math.ceil(n_train / cfg.batch_size)
    evals = len({e for e in range(1, cfg.epochs + 1) if e % cfg.eval_every == 0} | {cfg.epochs})
    return OVERHEAD * (cfg.epochs * steps * cost.step_s + evals * math.ceil(n_test / cost.eval_batch) * cost.eval_s)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"9.5 min"``, ``"2.3 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
