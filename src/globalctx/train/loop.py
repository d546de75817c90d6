"""The training loop: ``param_groups``, ``get_lr``, ``train_one_epoch``, ``evaluate`` and ``fit``.

``fit(cfg)`` runs one training job end to end: data, model, optimizer, (DDP), checkpoints, logs.
It works the same in one process and under ``torchrun`` (one process per rank, gloo on CPU,
nccl on CUDA); only rank 0 writes files. SIGINT/SIGTERM make every rank stop after the current
step, rank 0 saves ``last.safetensors`` + ``last.state.pt`` and ``fit`` returns
``status="interrupted"``; ``fit(cfg, resume=run_dir)`` then continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import collect_no_weight_decay
from ..progress import Progress
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import BatchLoader, augment_for, build_datasets, data_source, default_workers
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, max_over_ranks
from .initial import describe, load_initial

__all__ = ["TrainError", "param_groups", "get_lr", "train_one_epoch", "evaluate", "fit", "model_spec"]

# config fields that change which samples / which model a run sees: a resume must keep them
_FIXED_ON_RESUME = (
    "model",
    "attn",
    "model_kwargs",
    "data",
    "subset",
    "val_subset",
    "image_size",
    "in_chans",
    "batch_size",
    "seed",
)


class TrainError(RuntimeError):
    """A run cannot start or continue; the message says what to do."""


# ----------------------------------------------------------------------------- optimisation
def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names excluded from weight decay: every 1-d parameter (norm weights, biases, GCT's
    alpha/gamma/beta, ...) plus the names each module lists in its ``no_weight_decay()``."""
    return {n for n, p in model.named_parameters() if p.ndim <= 1} | collect_no_weight_decay(model)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: decayed (conv/linear weights) and not decayed (see
    :func:`no_weight_decay_names`)."""
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if n in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def get_lr(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step`` (0-based): linear warm-up, then cosine / step / constant."""
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.sched == "cosine":
        t = (step - warm) / max(1, total - warm)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(1.0, t)))
    if cfg.sched == "step":
        epoch = step // steps_per_epoch
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def diverged(what: str, epoch: int, step: int) -> TrainError:
    """The error of a run whose loss, weights or validation loss stopped being finite (nothing of
    it is saved: the last checkpoint stays the last finite one)."""
    return TrainError(f"{what} at epoch {epoch} step {step}; lower --lr or use --amp none")


def _first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or floating buffer holding a NaN/Inf, else ``None``."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


# ----------------------------------------------------------------------------- one epoch
class _Stopper:
    """Turns SIGINT/SIGTERM into a flag checked after every step (installed in the main thread)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def train_one_epoch(
    model: nn.Module,
    loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    *,
    cfg: TrainConfig,
    epoch: int,
    start_step: int,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    totals: torch.Tensor,
    should_stop: Callable[[int], bool],
    progress=None,
) -> int:
    """Train from ``start_step`` to the end of ``epoch`` (or until ``should_stop(step)``).

    ``totals`` (float64 ``[3]``: loss sum, correct, seen, this rank) is updated in place. Returns
    the next step to run (``len(loader)`` when the epoch is complete).
    """
    model.train()
    steps = len(loader)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    next_step = start_step
    t0, seen0 = time.perf_counter(), totals[2].item()
    for step, x, y in loader.iter_epoch(epoch, start_step):
        lr = get_lr(cfg, epoch * steps + step, steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        x = x.to(device, non_blocking=True, memory_format=mf)
        y = y.to(device, non_blocking=True)
        with _autocast(cfg, device):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise diverged(f"loss became {loss.item()}", epoch, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            n = y.numel()
            totals += torch.tensor([loss.item() * n, (logits.argmax(1) == y).sum().item(), n], dtype=torch.float64)
        next_step = step + 1
        if progress is not None:
            dt = time.perf_counter() - t0
            progress(step + 1, steps, lr, totals, (totals[2].item() - seen0) / max(dt, 1e-9))
        if should_stop(next_step):
            break
    return next_step


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, device: torch.device, *, cfg: TrainConfig | None = None) -> dict:
    """Top-1 accuracy and mean cross-entropy over the whole (sharded) set, summed over ranks."""
    model.eval()
    mf = torch.channels_last if cfg is not None and cfg.channels_last else torch.contiguous_format
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    ctx = _autocast(cfg, device) if cfg is not None else contextlib.nullcontext()
    for _, x, y in loader.iter_epoch(0):
        x, y = x.to(device, memory_format=mf), y.to(device)
        with ctx:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        sums += torch.stack(
            [loss.double(), (logits.argmax(1) == y).sum().double(), torch.tensor(y.numel(), device=device).double()]
        )
    all_reduce_sum(sums)
    n = max(sums[2].item(), 1.0)
    return {"val_loss": sums[0].item() / n, "val_acc": sums[1].item() / n, "val_n": int(sums[2].item())}


# ----------------------------------------------------------------------------- the run
def model_spec(cfg: TrainConfig, num_classes: int, in_chans: int) -> dict:
    """``{"name", "kwargs"}`` for :func:`checkpoint.build_model`."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans}
    if cfg.attn is not None or ":" not in cfg.model:
        kwargs["attn"] = cfg.attn
    kwargs.update(cfg.model_kwargs)
    return {"name": cfg.model, "kwargs": kwargs}


# the files a run writes into its directory (``overwrite=True`` removes them before a new run)
RUN_FILES = (ckpt.CONFIG_NAME, "last.safetensors", "last.state.pt", "best.safetensors", "log.csv")
SNAPSHOT_DIR = "snapshots"  # step-<global step>.safetensors, written when cfg.snapshots lists that step


def snapshot_path(run_dir, global_step: int) -> Path:
    """Where the snapshot of ``global_step`` of the run in ``run_dir`` is written."""
    return Path(run_dir) / SNAPSHOT_DIR / f"step-{int(global_step):07d}.safetensors"


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """A new run refuses a directory that is not empty unless ``overwrite``: it may hold another run
    or the user's own files. (Read-only: every rank checks, so every rank raises the same error.)"""
    if not resume and not overwrite and out.is_dir() and any(not _is_temporary(p) for p in out.iterdir()):
        what = "already holds a run" if (out / ckpt.CONFIG_NAME).exists() else "is not empty and holds no run"
        raise TrainError(
            f"{out} {what}; pass --resume {out} to continue a run there, --overwrite to replace the run files "
            f"in it ({', '.join(RUN_FILES)}), or choose another --out"
        )


def _is_temporary(path: Path) -> bool:
    """A temporary copy left by a write that was killed (``.<name>.tmp-<pid>``, see ``atomic_write``)."""
    return path.name.startswith(".") and ".tmp-" in path.name and path.is_file()


def _prepare_out(out: Path, resume: bool, overwrite: bool = False) -> None:
    """Create the run directory (rank 0); with ``overwrite``, remove a previous run's files first."""
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for snap in (out / SNAPSHOT_DIR).glob("step-*.safetensors"):
            snap.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # temporary copies left by a killed run (one writer per run directory)
            for stale in out.glob(f".{name}.tmp-*"):
                stale.unlink(missing_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TrainError(f"cannot write to {out} ({e.strerror or e}); choose a writable --out") from None


def _write_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in history for k in row))  # rows without evaluation lack val_*
    w = csv.DictWriter(buf, fieldnames=fields, restval="")
    w.writeheader()
    w.writerows(history)
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def _sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running stats) so evaluation and checkpoints agree."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for b in model.buffers():
            dist.broadcast(b, 0)


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _setup_numerics(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


@dataclass
class RunState:
    """Where a run stands; everything in it is saved to ``last.state.pt`` and restored on resume.

    ``(epoch, step)`` is the next step to run; ``totals`` (float64 ``[3]``: loss sum, correct,
    seen) are this rank's sums over the current epoch so far.
    """

    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    totals: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    train_time_s: float = 0.0


@dataclass
class _Job:
    """What a run is made of once built: data, model, optimisation, and where it writes."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    train_loader: BatchLoader
    val_loader: BatchLoader
    raw_model: nn.Module  # the plain module (checkpoints, evaluation under DDP)
    model: nn.Module  # what is trained: raw_model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: dict  # config.json
    params: int

    @property
    def steps(self) -> int:
        return len(self.train_loader)


def fit(
    cfg: TrainConfig,
    *,
    resume: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    trust_model_code: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train ``cfg`` (or continue the run in ``resume``); returns a summary dict.

    A new run refuses a ``cfg.out`` that is not empty unless ``overwrite=True`` (which replaces
    the run files there, :data:`RUN_FILES`). Resuming a run killed before its first checkpoint
    starts it from the beginning.

    A resumed run whose ``config.json`` names its model as an import path
    (``package.module:callable``) is refused unless ``trust_model_code=True``: continuing a run
    never imports code named in its files by default.

    Summary keys: ``status`` (``completed`` | ``interrupted`` | ``stopped`` at ``max_steps``),
    ``signal``, ``run_dir``, ``epoch``, ``step``, ``global_step``, ``val_acc`` (last evaluation),
    ``best_acc``, ``history`` (one dict per epoch), ``train_time_s``, ``params``, ``world_size``.
    """
    info, device = init_distributed(cfg.device, cfg.dist_timeout)
    threads = torch.get_num_threads()
    ended = False
    try:
        log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        result = _fit(cfg, info, device, resume, log, trust_model_code, overwrite)
        ended = True
        return result
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only
        cleanup(wait_for_all=ended, timeout_s=min(cfg.dist_timeout, 60.0))


def _fit(
    cfg: TrainConfig, info: DistInfo, device: torch.device, resume, log, trust_model_code: bool, overwrite: bool
) -> dict:
    _setup_numerics(cfg)
    out = Path(resume) if resume is not None else Path(cfg.out)
    saved = _read_resume(cfg, out, trust_model_code) if resume is not None else None
    if resume is not None:
        cfg = cfg.replace(out=str(out))
    _check_out(out, resume is not None, overwrite)
    if info.is_main:
        _prepare_out(out, resume is not None, overwrite)
    barrier()
    job = _build(cfg, info, device, out)
    rs = RunState() if saved is None else _restore(job, saved)
    if saved is None and cfg.initial_checkpoint:  # a resumed run has its own weights
        report = load_initial(job.raw_model, cfg.initial_checkpoint)
        if info.is_main:
            log(describe(cfg.initial_checkpoint, report))
    if resume is not None and info.is_main:
        where = f"at epoch {rs.epoch + 1}/{cfg.epochs}, step {rs.step}/{job.steps}"
        log(f"resuming {out} {where}" if saved else f"{out} has no checkpoint yet; starting it from the beginning")
    if info.is_main:
        with _disk_errors(out):
            ckpt.write_config(out, job.config)  # on resume: same model and data, possibly new epochs/lr
            _write_csv(out / "log.csv", rs.history)  # a kill between last.state.pt and log.csv lost no row
    if rs.epoch == 0 and rs.step == 0:
        with _disk_errors(out):
            _snapshot(job, 0)
    _wrap(job)
    writer = _open_writer(job, rs, log)
    status, signum, last_eval = "completed", None, rs.history[-1] if rs.history else {}
    with _Stopper() as stopper:
        while rs.epoch < cfg.epochs:
            stop = _StopCheck(job, rs, stopper)
            step = _train_epoch(job, rs, stop)
            signum = stop.signum or stopper.signum  # a signal to any rank stops every rank
            if step < job.steps:  # interrupted inside the epoch
                status = "interrupted" if signum is not None else "stopped"
                _sync_buffers(job.raw_model)
                rs.step = step
                _save(job, rs, _gather_totals(job, rs.totals))
                break
            last_eval = _end_epoch(job, rs, last_eval)
            if info.is_main:
                _log_epoch(job, rs, writer, log)
            if stop.hit and rs.epoch < cfg.epochs:
                status = "interrupted" if signum is not None else "stopped"
                break
        signum = signum or stopper.signum
    barrier()
    if writer is not None:
        writer.close()
    if status != "completed" and info.is_main:
        why = f"signal {signal.Signals(signum).name}" if signum else f"max_steps={cfg.max_steps}"
        log(f"stopped by {why} at epoch {rs.epoch + 1}, step {rs.step}; checkpoint saved, continue with --resume {out}")
    return _summary(job, rs, status, signum, last_eval)


# ----------------------------------------------------------------------------- restore / build / save
def _read_resume(cfg: TrainConfig, out: Path, trust_model_code: bool) -> dict | None:
    """The saved training state of the run in ``out``, after checking ``cfg`` may continue it;
    ``None`` for a run stopped before its first checkpoint (neither ``last.*`` file written)."""
    saved = ckpt.read_config(out)
    if not trust_model_code:
        ckpt.refuse_model_code(saved["model"], out / ckpt.CONFIG_NAME)
    old = saved.get("train", {})
    changed = [k for k in _FIXED_ON_RESUME if k in old and _norm(old[k]) != _norm(getattr(cfg, k))]
    if changed:
        raise TrainError(
            f"--resume {out}: {', '.join(f'{k}={getattr(cfg, k)!r} (run has {old[k]!r})' for k in changed)} "
            "differ from the run being resumed; drop those flags or start a new --out"
        )
    if not (out / "last.state.pt").exists():  # killed before its first checkpoint was complete
        return None
    state = ckpt.load_state(out / "last.state.pt")
    done, partial = int(state.get("epoch", 0)), int(state.get("step", 0)) > 0
    if cfg.epochs < done + partial:
        raise TrainError(
            f"--resume {out}: --epochs {cfg.epochs} is fewer than the run has done ({done} epochs"
            + (" and part of the next" if partial else "")
            + f"); give --epochs {done + partial} or more, or start a new --out"
        )
    return state


def _build(cfg: TrainConfig, info: DistInfo, device: torch.device, out: Path) -> _Job:
    """Data (every rank loads the small index; the loader hands each rank its slice), the model
    (same seed on every rank, so the same init), optimizer, scaler and the run's config.json."""
    train_ds, val_ds = build_datasets(
        cfg.data,
        data_dir=cfg.data_dir,
        subset=cfg.subset,
        val_subset=cfg.val_subset,
        seed=cfg.seed,
        in_chans=cfg.in_chans or 3,
        image_size=cfg.image_size,
    )
    workers = cfg.workers if cfg.workers is not None else default_workers(info.world_size)
    shard = dict(rank=info.rank, world_size=info.world_size, num_workers=workers)
    train_aug, val_aug = augment_for(cfg.data, train_ds, train=True), augment_for(cfg.data, val_ds, train=False)
    train_loader = BatchLoader(train_ds, train_aug, global_batch=cfg.batch_size, train=True, seed=cfg.seed, **shard)
    val_batch = min(cfg.batch_size * 2, 512) // info.world_size * info.world_size or info.world_size
    val_loader = BatchLoader(val_ds, val_aug, global_batch=val_batch, train=False, **shard)
    spec = model_spec(cfg, len(train_ds.classes), train_ds.image_shape[0])
    torch.manual_seed(cfg.seed)
    try:
        model = ckpt.build_model(spec)
    except (ValueError, TypeError) as e:
        raise TrainError(f"cannot build model {cfg.model!r} (attn={cfg.attn!r}): {e}") from None
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    config = {
        "format": ckpt.FORMAT,
        "model": spec,
        "train": cfg.to_dict(),
        "data": {
            "spec": cfg.data,
            "classes": list(train_ds.classes),
            "mean": list(train_ds.mean),
            "std": list(train_ds.std),
            "image_shape": list(train_ds.image_shape),
            "source": data_source(cfg.data, cfg.data_dir),
        },
        "params": params,
    }
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    return _Job(
        cfg=cfg,
        info=info,
        device=device,
        out=out,
        train_loader=train_loader,
        val_loader=val_loader,
        raw_model=model,
        model=model,
        optimizer=build_optimizer(model, cfg),
        scaler=scaler,
        config=config,
        params=params,
    )


def _restore(job: _Job, state: dict) -> RunState:
    """Weights, optimizer, scaler and RNG from the run's last checkpoint; the run's position."""
    out, info = job.out, job.info
    if "model" in state:  # the state file holds its own weights
        if ckpt.tensor_digest(state["model"]) != state.get("weights_sha256"):
            raise TrainError(f"{out / 'last.state.pt'} failed its integrity check; cannot resume")
        ckpt.load_tensors(job.raw_model, state["model"], out / "last.state.pt")
    else:  # a run directory written before the weights were kept in the state file
        meta = ckpt.load_weights(job.raw_model, out / "last.safetensors")
        if meta.get("sha256") != state.get("weights_sha256"):
            raise TrainError(f"{out}: last.safetensors and last.state.pt are from different steps; cannot resume")
    try:
        job.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise TrainError(f"{out}: optimizer state does not fit this model ({e})") from None
    if state.get("scaler"):
        job.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], job.device)
    if info.world_size != len(state["epoch_totals"]):
        raise TrainError(f"{out} was saved by {len(state['epoch_totals'])} processes; resume it with as many")
    return RunState(
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        history=list(state["history"]),
        best_acc=float(state["best_acc"]),
        totals=state["epoch_totals"][info.rank].clone(),
        train_time_s=float(state["train_time_s"]),
    )


def _wrap(job: _Job) -> None:
    """torch.compile and DDP around the plain module (checkpoints keep using ``job.raw_model``)."""
    if job.cfg.compile:
        job.model = torch.compile(job.model)
    if job.info.enabled:
        ids = [job.device.index] if job.device.type == "cuda" else None
        job.model = nn.parallel.DistributedDataParallel(job.model, device_ids=ids)


def _open_writer(job: _Job, rs: RunState, log):
    if not (job.info.is_main and job.cfg.tensorboard):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard is not installed; no event files (pip install 'globalctx[train]')")
        return None
    return SummaryWriter(str(job.out / "tb"), purge_step=rs.epoch * job.steps + rs.step)


def _save(job: _Job, rs: RunState, totals_all: list[torch.Tensor], *, best: bool = False) -> None:
    """Rank 0 writes last.safetensors, best.safetensors, then last.state.pt (the commit point: it
    holds its own copy of the weights, so a kill or a full disk between any two writes leaves the
    previous state file, complete, to resume from). Other ranks only contributed their totals."""
    if not job.info.is_main:
        return
    out, extra = job.out, {"epoch": str(rs.epoch), "step": str(rs.step)}
    weights = ckpt.state_tensors(job.raw_model)
    state = {
        "epoch": rs.epoch,
        "step": rs.step,
        "global_step": rs.epoch * job.steps + rs.step,
        "model": weights,
        "optimizer": job.optimizer.state_dict(),
        "scaler": job.scaler.state_dict() if job.scaler.is_enabled() else None,
        "rng": _rng_state(job.device),
        "history": rs.history,
        "best_acc": rs.best_acc,
        "epoch_totals": totals_all,
        "train_time_s": rs.train_time_s,
        "weights_sha256": ckpt.tensor_digest(weights),
    }
    with _disk_errors(out):
        ckpt.save_weights(out / "last.safetensors", job.raw_model, config=job.config, extra=extra)
        if best:
            ckpt.save_weights(
                out / "best.safetensors", job.raw_model, config=job.config, extra={"epoch": str(rs.epoch)}
            )
        ckpt.save_state(out / "last.state.pt", state)


@contextlib.contextmanager
def _disk_errors(out: Path):
    """A failed write (a full disk, a read-only file system) ends the run with one line; the files
    written before it stay in place and the run resumes from its last complete checkpoint."""
    try:
        yield
    except OSError as e:
        why = e.strerror or str(e)
        name = f" {Path(e.filename).name}" if getattr(e, "filename", None) else ""
        raise TrainError(
            f"cannot write{name} in {out} ({why}); the previous checkpoint is kept: free space and "
            f"continue with --resume {out}"
        ) from None


def _snapshot(job: _Job, global_step: int) -> None:
    """Rank 0 saves the weights as :func:`snapshot_path` when ``cfg.snapshots`` lists ``global_step``."""
    if global_step not in job.cfg.snapshots or not job.info.is_main:
        return
    path = snapshot_path(job.out, global_step)
    path.parent.mkdir(exist_ok=True)
    ckpt.save_weights(path, job.raw_model, config=job.config, extra={"global_step": str(global_step)})


def _gather_totals(job: _Job, t: torch.Tensor) -> list[torch.Tensor]:
    if not job.info.enabled:
        return [t.clone()]
    import torch.distributed as dist

    parts = [torch.zeros_like(t, device=job.device) for _ in range(job.info.world_size)]
    dist.all_gather(parts, t.to(job.device))
    return [p.cpu() for p in parts]


# ----------------------------------------------------------------------------- epochs
class _StopCheck:
    """``should_stop`` of one epoch: a signal on any rank, or ``max_steps`` reached; ``hit`` keeps
    the last answer (a stop requested at the last step of an epoch ends the run after it)."""

    def __init__(self, job: _Job, rs: RunState, stopper: _Stopper) -> None:
        self.job, self.epoch, self.stopper, self.hit = job, rs.epoch, stopper, False
        self.signum: int | None = None  # the signal any rank received (every rank knows it)

    def __call__(self, next_step: int) -> bool:
        max_steps = self.job.cfg.max_steps
        _snapshot(self.job, self.epoch * self.job.steps + next_step)
        hit_max = max_steps is not None and self.epoch * self.job.steps + next_step >= max_steps
        self.signum = max_over_ranks(self.stopper.signum or 0, self.job.device) or None
        self.hit = self.signum is not None or hit_max
        return self.hit


def _train_epoch(job: _Job, rs: RunState, stop: _StopCheck) -> int:
    """:func:`train_one_epoch` from ``rs``'s position with a progress bar; returns the next step."""
    bar = _epoch_bar(job, rs)
    t0 = time.perf_counter()
    try:
        step = train_one_epoch(
            job.model,
            job.train_loader,
            job.optimizer,
            cfg=job.cfg,
            epoch=rs.epoch,
            start_step=rs.step,
            device=job.device,
            scaler=job.scaler,
            totals=rs.totals,
            should_stop=stop,
            progress=_bar_update(bar),
        )
    finally:
        rs.train_time_s += time.perf_counter() - t0
        bar.close()
    return step


def _end_epoch(job: _Job, rs: RunState, last_eval: dict) -> dict:
    """Metrics over all ranks, evaluation when due, checkpoint; ``rs`` moves to the next epoch."""
    cfg, steps, info = job.cfg, job.steps, job.info
    _sync_buffers(job.raw_model)
    tot = all_reduce_sum(rs.totals.to(job.device)).cpu()
    row = {
        "epoch": rs.epoch + 1,
        "lr": get_lr(cfg, (rs.epoch + 1) * steps - 1, steps),
        "train_loss": tot[0].item() / max(tot[2].item(), 1),
        "train_acc": tot[1].item() / max(tot[2].item(), 1),
    }
    if (rs.epoch + 1) % cfg.eval_every == 0 or rs.epoch + 1 == cfg.epochs:
        te = time.perf_counter()
        last_eval = evaluate(job.raw_model if info.enabled else job.model, job.val_loader, job.device, cfg=cfg)
        row.update(last_eval, eval_time_s=time.perf_counter() - te)
    row["train_time_s"] = rs.train_time_s
    bad = _first_non_finite(job.raw_model)
    if bad is not None:
        raise diverged(f"weights became non-finite ({bad})", rs.epoch, steps - 1)
    for k in ("train_loss", "val_loss"):
        if k in row and not math.isfinite(row[k]):
            raise diverged(f"{k.replace('_', ' ')} became {row[k]}", rs.epoch, steps - 1)
    rs.history.append(row)
    is_best = "val_acc" in row and row["val_acc"] > rs.best_acc
    rs.best_acc = max(rs.best_acc, row.get("val_acc", rs.best_acc))
    rs.epoch, rs.step = rs.epoch + 1, 0
    rs.totals = torch.zeros(3, dtype=torch.float64)
    _save(job, rs, [rs.totals.clone() for _ in range(info.world_size)], best=is_best)
    return last_eval


def _log_epoch(job: _Job, rs: RunState, writer, log) -> None:
    row = rs.history[-1]
    with _disk_errors(job.out):
        _write_csv(job.out / "log.csv", rs.history)
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"] * job.steps)
        writer.flush()
    log(_epoch_line(row, job.cfg.epochs))


def _summary(job: _Job, rs: RunState, status: str, signum, last_eval: dict) -> dict:
    return {
        "status": status,
        "signal": signum,
        "run_dir": str(job.out),
        "epoch": rs.epoch,
        "step": rs.step,
        "global_step": rs.epoch * job.steps + rs.step,
        "val_acc": last_eval.get("val_acc"),
        "val_loss": last_eval.get("val_loss"),
        "best_acc": rs.best_acc if rs.best_acc >= 0 else None,
        "history": rs.history,
        "train_time_s": rs.train_time_s,
        "params": job.params,
        "world_size": job.info.world_size,
        "steps_per_epoch": job.steps,
        "config": job.config,
    }


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _epoch_line(row: dict, epochs: int) -> str:
    s = f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.4g}"
    s += f"  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
    if "val_acc" in row:
        s += f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
    return s + f"  ({row['train_time_s']:.1f}s)"


def _epoch_bar(job: _Job, rs: RunState) -> Progress:
    """A tqdm bar for the epoch on rank 0 when ``cfg.progress`` and stderr is a terminal."""
    shown = job.cfg.progress and job.info.is_main and sys.stderr.isatty()
    desc = f"epoch {rs.epoch + 1}/{job.cfg.epochs}"
    return Progress(job.steps, mode="bar" if shown else "none", desc=desc, initial=rs.step)


def _bar_update(bar: Progress) -> Callable | None:
    """The ``progress`` callback of :func:`train_one_epoch` showing running loss, accuracy, lr, img/s."""
    if bar.bar is None:
        return None

    def update(step: int, steps: int, lr: float, totals: torch.Tensor, ips: float) -> None:
        n = max(totals[2].item(), 1)
        bar.advance_to(
            step,
            loss=f"{totals[0].item() / n:.3f}",
            acc=f"{totals[1].item() / n:.3f}",
            lr=f"{lr:.3g}",
            img_s=f"{ips:.0f}",
        )

    return update
