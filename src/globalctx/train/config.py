"""The training configuration: one ``@dataclass`` whose fields are the ``globalctx train`` flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "AMP_MODES"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved to ``config.json`` of the run directory).

    Model: ``model`` is a name known to ``globalctx.create_model`` (or ``package.module:callable``
    taking ``num_classes=, in_chans=``); ``attn`` the block name (``None``/``"none"`` for the
    plain network); ``model_kwargs`` any further options (e.g. ``{"base_width": 16}``).

    Snapshots: ``snapshots`` lists global steps (``0`` = the initial weights) at which the weights
    are also saved as ``snapshots/step-<step>.safetensors`` (for ``globalctx analyze
    --over-training``); empty by default.

    Schedule: ``lr`` is the peak rate for ``batch_size`` (global, over all processes); it rises
    linearly from 0 over ``warmup_epochs`` and then follows ``sched`` per step: ``cosine`` to 0,
    ``step`` (x ``gamma`` at each epoch in ``milestones``) or ``constant``.
    """

    # model
    model: str = "resnet18_small"
    attn: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    initial_checkpoint: str | None = None  # weights to start from (globalctx.train.initial)
    # data
    data: str = "fashion-mnist"
    data_dir: str | None = None
    subset: int | None = None
    val_subset: int | None = None
    image_size: int | None = None
    in_chans: int | None = None
    workers: int | None = None
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    opt: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    sched: str = "cosine"
    warmup_epochs: float = 1.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    # numerics / speed
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    threads: int | None = None
    # run
    out: str = "runs/train"
    eval_every: int = 1
    max_steps: int | None = None
    snapshots: tuple[int, ...] = ()
    tensorboard: bool = True
    progress: bool = True
    dist_timeout: float = 600.0

    def __post_init__(self) -> None:
        if isinstance(self.milestones, list):
            self.milestones = tuple(self.milestones)
        if isinstance(self.snapshots, list):
            self.snapshots = tuple(self.snapshots)
        if self.attn in ("", "none", "None"):
            self.attn = None
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad value and the valid choices."""
        choices = {"opt": OPTIMIZERS, "sched": SCHEDULES, "amp": AMP_MODES}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name}={getattr(self, name)!r} is not valid; choose one of {', '.join(valid)}")
        positive = ("epochs", "batch_size", "eval_every")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("subset", "val_subset", "max_steps", "image_size", "threads"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if self.in_chans not in (None, 1, 3):
            raise ValueError(f"in_chans must be 1, 3 or None (from the data), got {self.in_chans!r}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma", "label_smoothing", "dist_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (the step schedule multiplies the lr by it), got {self.gamma}")
        if not self.dist_timeout > 0:
            raise ValueError(f"dist_timeout must be > 0 seconds, got {self.dist_timeout}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.sched == "step" and not self.milestones:
            self.milestones = tuple(int(self.epochs * f) for f in (0.5, 0.75))
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.snapshots):
            raise ValueError(f"snapshots must be global steps (ints >= 0), got {list(self.snapshots)!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict, got {type(self.model_kwargs).__name__}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["snapshots"] = list(self.snapshots)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict; unknown keys (from a newer version) raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
