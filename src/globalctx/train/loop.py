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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import BatchLoader, augment_for, build_datasets, default_workers
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_flag, cleanup, init_distributed

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
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    for mod_name, m in model.named_modules():
        fn = getattr(m, "no_weight_decay", None)
        if callable(fn):
            for n in fn():
                names.add(f"{mod_name}.{n}" if mod_name else n)
    return names


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
            raise TrainError(f"loss became {loss.item()} at epoch {epoch} step {step}; lower --lr or use --amp none")
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


def _prepare_out(out: Path, resume: bool) -> None:
    if not resume and (out / ckpt.CONFIG_NAME).exists():
        raise TrainError(f"{out} already holds a run; pass --resume {out} to continue it, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
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


def fit(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train ``cfg`` (or continue the run in ``resume``); returns a summary dict.

    Summary keys: ``status`` (``completed`` | ``interrupted`` | ``stopped`` at ``max_steps``),
    ``signal``, ``run_dir``, ``epoch``, ``step``, ``global_step``, ``val_acc`` (last evaluation),
    ``best_acc``, ``history`` (one dict per epoch), ``train_time_s``, ``params``, ``world_size``.
    """
    info, device = init_distributed(cfg.device, cfg.dist_timeout)
    threads = torch.get_num_threads()
    try:
        return _fit(cfg, info, device, resume, log or (lambda s: print(s, file=sys.stderr, flush=True)))
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only
        cleanup()


def _fit(cfg: TrainConfig, info: DistInfo, device: torch.device, resume, log) -> dict:
    _setup_numerics(cfg)
    out = Path(resume) if resume is not None else Path(cfg.out)
    state: dict[str, Any] | None = None
    if resume is not None:
        saved = ckpt.read_config(out)
        old = saved.get("train", {})
        changed = [k for k in _FIXED_ON_RESUME if k in old and _norm(old[k]) != _norm(getattr(cfg, k))]
        if changed:
            raise TrainError(
                f"--resume {out}: {', '.join(f'{k}={getattr(cfg, k)!r} (run has {old[k]!r})' for k in changed)} "
                "differ from the run being resumed; drop those flags or start a new --out"
            )
        state = ckpt.load_state(out / "last.state.pt")
        cfg = cfg.replace(out=str(out))
    if info.is_main:
        _prepare_out(out, resume is not None)
    barrier()

    # data: every rank loads the (small) index; the loader hands each rank its slice
    train_ds, val_ds = build_datasets(
        cfg.data,
        data_dir=cfg.data_dir,
        subset=cfg.subset,
        val_subset=cfg.val_subset,
        seed=cfg.seed,
        in_chans=cfg.in_chans or 3,
        image_size=cfg.image_size,
    )
    in_chans = train_ds.image_shape[0]
    num_classes = len(train_ds.classes)
    workers = cfg.workers if cfg.workers is not None else default_workers(info.world_size)
    train_loader = BatchLoader(
        train_ds,
        augment_for(cfg.data, train_ds, train=True),
        global_batch=cfg.batch_size,
        train=True,
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=workers,
    )
    val_loader = BatchLoader(
        val_ds,
        augment_for(cfg.data, val_ds, train=False),
        global_batch=min(cfg.batch_size * 2, 512) // info.world_size * info.world_size or info.world_size,
        train=False,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=workers,
    )
    steps = len(train_loader)

    # model: same seed on every rank -> same init (DDP also broadcasts it)
    spec = model_spec(cfg, num_classes, in_chans)
    torch.manual_seed(cfg.seed)
    try:
        model = ckpt.build_model(spec)
    except (ValueError, TypeError) as e:
        raise TrainError(f"cannot build model {cfg.model!r} (attn={cfg.attn!r}): {e}") from None
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
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
        },
        "params": params,
    }

    epoch, start_step, history, best = 0, 0, [], -1.0
    totals = torch.zeros(3, dtype=torch.float64)
    train_time = 0.0
    if state is not None:
        meta = ckpt.load_weights(model, out / "last.safetensors")
        if meta.get("sha256") != state.get("weights_sha256"):
            raise TrainError(f"{out}: last.safetensors and last.state.pt are from different steps; cannot resume")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise TrainError(f"{out}: optimizer state does not fit this model ({e})") from None
        scaler.load_state_dict(state["scaler"]) if state.get("scaler") else None
        _set_rng_state(state["rng"], device)
        epoch, start_step = int(state["epoch"]), int(state["step"])
        history, best = list(state["history"]), float(state["best_acc"])
        totals = state["epoch_totals"][info.rank].clone() if info.world_size == len(state["epoch_totals"]) else None
        if totals is None:
            raise TrainError(f"{out} was saved by {len(state['epoch_totals'])} processes; resume it with as many")
        train_time = float(state["train_time_s"])
        if info.is_main:
            log(f"resuming {out} at epoch {epoch + 1}/{cfg.epochs}, step {start_step}/{steps}")
    if info.is_main:
        ckpt.write_config(out, config)  # on resume: same model and data, possibly new epochs/lr

    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if info.is_main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"), purge_step=epoch * steps + start_step)
        except ImportError:
            log("tensorboard is not installed; no event files (pip install 'globalctx[train]')")

    def save(tag_best: bool = False, *, epoch_: int, step_: int, totals_all: list[torch.Tensor]) -> None:
        """Rank 0 writes last.* (and best.safetensors); other ranks only contribute their totals."""
        if not info.is_main:
            return
        m = ckpt.save_weights(
            out / "last.safetensors", raw_model, config=config, extra={"epoch": str(epoch_), "step": str(step_)}
        )
        ckpt.save_state(
            out / "last.state.pt",
            {
                "epoch": epoch_,
                "step": step_,
                "global_step": epoch_ * steps + step_,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": _rng_state(device),
                "history": history,
                "best_acc": best,
                "epoch_totals": totals_all,
                "train_time_s": train_time,
                "weights_sha256": m["sha256"],
            },
        )
        if tag_best:
            ckpt.save_weights(out / "best.safetensors", raw_model, config=config, extra={"epoch": str(epoch_)})

    def gather_totals(t: torch.Tensor) -> list[torch.Tensor]:
        if not info.enabled:
            return [t.clone()]
        import torch.distributed as dist

        parts = [torch.zeros_like(t, device=device) for _ in range(info.world_size)]
        dist.all_gather(parts, t.to(device))
        return [p.cpu() for p in parts]

    bar = _Progress(cfg, info, epoch)
    status, signum = "completed", None
    pos = (epoch, start_step)  # (epoch, step) of the next step to run
    last_eval: dict = history[-1] if history else {}
    with _Stopper() as stopper:
        stop_hit = [False]

        def should_stop(next_step: int) -> bool:
            global_next = epoch * steps + next_step
            hit_max = cfg.max_steps is not None and global_next >= cfg.max_steps
            stop_hit[0] = broadcast_flag(stopper.signum is not None, device) or hit_max
            return stop_hit[0]

        while epoch < cfg.epochs:
            bar.start(epoch, steps, start_step)
            t0 = time.perf_counter()
            step = train_one_epoch(
                model,
                train_loader,
                optimizer,
                cfg=cfg,
                epoch=epoch,
                start_step=start_step,
                device=device,
                scaler=scaler,
                totals=totals,
                should_stop=should_stop,
                progress=bar.update,
            )
            train_time += time.perf_counter() - t0
            bar.close()
            if step < steps:  # interrupted inside the epoch
                status = "interrupted" if stopper.signum is not None else "stopped"
                _sync_buffers(raw_model)
                save(epoch_=epoch, step_=step, totals_all=gather_totals(totals))
                pos = (epoch, step)
                break
            # end of epoch: metrics over all ranks, evaluation, checkpoint
            _sync_buffers(raw_model)
            tot = all_reduce_sum(totals.to(device)).cpu()
            row = {
                "epoch": epoch + 1,
                "lr": get_lr(cfg, (epoch + 1) * steps - 1, steps),
                "train_loss": tot[0].item() / max(tot[2].item(), 1),
                "train_acc": tot[1].item() / max(tot[2].item(), 1),
            }
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                te = time.perf_counter()
                last_eval = evaluate(raw_model if info.enabled else model, val_loader, device, cfg=cfg)
                row.update(last_eval, eval_time_s=time.perf_counter() - te)
            row["train_time_s"] = train_time
            history.append(row)
            is_best = "val_acc" in row and row["val_acc"] > best
            best = max(best, row.get("val_acc", best))
            epoch, start_step = epoch + 1, 0
            totals = torch.zeros(3, dtype=torch.float64)
            save(is_best, epoch_=epoch, step_=0, totals_all=[totals.clone() for _ in range(info.world_size)])
            pos = (epoch, 0)
            if info.is_main:
                _write_csv(out / "log.csv", history)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch * steps)
                    writer.flush()
                log(_epoch_line(row, cfg.epochs))
            if stop_hit[0] and epoch < cfg.epochs:
                status = "interrupted" if stopper.signum is not None else "stopped"
                break
        signum = stopper.signum
    barrier()
    if writer is not None:
        writer.close()
    if status != "completed" and info.is_main:
        why = f"signal {signal.Signals(signum).name}" if signum else f"max_steps={cfg.max_steps}"
        log(f"stopped by {why} at epoch {pos[0] + 1}, step {pos[1]}; checkpoint saved, continue with --resume {out}")
    return {
        "status": status,
        "signal": signum,
        "run_dir": str(out),
        "epoch": epoch,
        "step": pos[1],
        "global_step": pos[0] * steps + pos[1],
        "val_acc": last_eval.get("val_acc"),
        "val_loss": last_eval.get("val_loss"),
        "best_acc": best if best >= 0 else None,
        "history": history,
        "train_time_s": train_time,
        "params": params,
        "world_size": info.world_size,
        "steps_per_epoch": steps,
        "config": config,
    }


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _epoch_line(row: dict, epochs: int) -> str:
    s = f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.4g}"
    s += f"  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
    if "val_acc" in row:
        s += f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
    return s + f"  ({row['train_time_s']:.1f}s)"


class _Progress:
    """tqdm bar on rank 0 (when ``cfg.progress`` and stderr is a terminal), else nothing."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, epoch: int) -> None:
        self.enabled = cfg.progress and info.is_main and sys.stderr.isatty()
        self.cfg, self.bar = cfg, None

    def start(self, epoch: int, steps: int, start_step: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=steps,
                initial=start_step,
                desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def update(self, step: int, steps: int, lr: float, totals: torch.Tensor, ips: float) -> None:
        if self.bar is not None:
            n = max(totals[2].item(), 1)
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(
                loss=f"{totals[0].item() / n:.3f}",
                acc=f"{totals[1].item() / n:.3f}",
                lr=f"{lr:.3g}",
                img_s=f"{ips:.0f}",
                refresh=False,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
