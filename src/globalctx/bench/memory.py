"""Peak memory of one forward call, or of one training step (``mode``, see
:mod:`~globalctx.bench.training`: forward + backward, optionally + optimizer step; parameter
gradients, ``dL/dx`` and the optimizer's momentum buffers are then part of what is counted, except
buffers that already exist from earlier steps).

Three measurements, each reported in MiB *above what was live before the call* (parameters and
the input are not counted; the output is):

``alloc`` (any device, default on CPU)
    The torch allocator's event stream, recorded by ``torch.profiler`` with
    ``profile_memory=True``: every allocation and free of a tensor during the call, in order;
    the peak of their running sum. Resolution: exact bytes of tensor storage. Blind to memory
    that does not go through the torch allocator (oneDNN / MKL scratch buffers, Python objects).

``cuda`` (CUDA devices)
    ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory
    allocated before the call. Resolution: exact bytes as seen by the caching allocator (blocks
    rounded to 512 B); cuBLAS/cuDNN workspaces are included when they come from that allocator.

``rss`` (CPU, Linux)
    The process high-water mark, in a *fresh subprocess per case* so nothing measured earlier
    is already resident. The module is pickled to a temporary file (``torch.save``), the child
    loads it, builds the input, resets its peak with ``/proc/self/clear_refs`` and reads
    ``VmHWM - VmRSS(before)`` around the call. Two numbers: ``cold`` (the very first call, which
    includes one-time initialisation such as oneDNN primitives and OpenMP thread pools, a few
    MiB) and ``warm`` (a later call). Resolution: one page (4 KiB), but only growth beyond pages
    the process already holds is seen: glibc recycles freed heap memory, so ``warm`` reads about
    0 for temporaries smaller than the malloc mmap threshold (32 MiB at most) that fit in what
    earlier calls freed. It sees everything, MKL/oneDNN scratch included.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["MIB", "alloc_peak", "cuda_peak", "rss_peak", "peak_memory"]

MIB = float(1 << 20)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (the profiler library prints start/stop lines there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def alloc_peak(fn: Callable[[], object], device: torch.device | str = "cpu", *, grad: bool = False) -> float:
    """Peak bytes allocated by the torch allocator during ``fn()`` above the start, in MiB
    (``grad``: autograd enabled, for a training step)."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    activities = [ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    mode = torch.enable_grad() if grad else torch.inference_mode()
    with _quiet_native_stderr(), mode, profile(activities=activities, profile_memory=True) as prof:
        out = fn()
        del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    want = dev.type
    events = [e for e in events if str(e.device_type()).split(".")[-1].lower() == want]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / MIB


def cuda_peak(fn: Callable[[], object], device: torch.device | str = "cuda", *, grad: bool = False) -> float:
    """``max_memory_allocated`` during ``fn()`` minus the memory allocated before it, in MiB."""
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    with torch.enable_grad() if grad else torch.inference_mode():
        out = fn()
        torch.cuda.synchronize(dev)
        del out
    return (torch.cuda.max_memory_allocated(dev) - base) / MIB


# ---------------------------------------------------------------------------------------------
# fresh-subprocess high-water mark (CPU)

_CHILD = "globalctx.bench.memory"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child_main(spec_path: str) -> None:  # runs in the fresh subprocess
    from .training import grad_context, step_fn

    spec = torch.load(spec_path, weights_only=False)
    torch.set_num_threads(spec["threads"])
    module: nn.Module = spec["module"]
    dtype = getattr(torch, spec["dtype"])
    mode = spec.get("mode", "inference")
    x = torch.randn(spec["input_shape"], dtype=dtype)
    out = {}
    with grad_context(mode):
        call = step_fn(module, x, mode, input_grad=spec.get("input_grad", True))
        for key in ("cold", "warm"):
            if key == "warm":
                for _ in range(spec["warmup"]):
                    call()
            if not _reset_hwm():
                out[key] = None
                continue
            before = _status_kib("VmRSS")
            y = call()
            out[key] = (_status_kib("VmHWM") - before) / 1024.0
            del y
    print(json.dumps(out))


def rss_peak(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    warmup: int = 2,
    threads: int | None = None,
    timeout: float = 600.0,
    mode: str = "inference",
    input_grad: bool = True,
) -> dict[str, float | None]:
    """Peak RSS growth of one forward (or one training step, ``mode``) in a fresh subprocess (CPU,
    Linux): ``{"cold", "warm"}`` MiB. In a training mode "cold" is the first step after one
    forward that builds the output gradient (:func:`~globalctx.bench.training.step_fn`).

    The module must be picklable by ``torch.save`` with its class importable in a new process
    (true for every ``globalctx`` block and model). Raises ``RuntimeError`` with the child's
    error output when the child fails.
    """
    if not os.path.exists("/proc/self/status"):
        raise RuntimeError("rss measurement needs Linux /proc")
    fd, path = tempfile.mkstemp(suffix=".pt", prefix="globalctx-mem-")
    os.close(fd)
    try:
        spec = {
            "module": module,
            "input_shape": list(input_shape),
            "dtype": str(dtype).split(".")[-1],
            "warmup": warmup,
            "threads": threads or torch.get_num_threads(),
            "mode": mode,
            "input_grad": input_grad,
        }
        try:
            torch.save(spec, path)
        except (AttributeError, TypeError, pickle.PicklingError) as e:
            raise RuntimeError(f"rss measurement needs a picklable module (class importable by name): {e}") from e
        res = subprocess.run(
            [sys.executable, "-m", _CHILD, path], capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        os.unlink(path)
    if res.returncode != 0:
        raise RuntimeError(f"memory subprocess failed ({res.returncode}):\n{res.stderr.strip()[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def peak_memory(
    module: nn.Module,
    x: torch.Tensor,
    *,
    methods: Sequence[str] = ("alloc",),
    threads: int | None = None,
    mode: str = "inference",
    input_grad: bool = True,
) -> dict[str, float | None]:
    """Peak memory of ``module(x)`` (or of one training step, ``mode``) by the chosen ``methods``
    (``alloc``, ``cuda``, ``rss``). In a training mode the step is run twice first, so gradients
    and optimizer buffers of earlier steps are live before the measured one (steady state).

    Returns a dict with keys ``mem_alloc_mib``, ``mem_cuda_mib``, ``mem_rss_cold_mib``,
    ``mem_rss_warm_mib`` for the methods asked for. ``cuda`` is silently skipped on CPU tensors
    and ``rss`` on non-CPU ones (their keys are then ``None``).
    """
    known = ("alloc", "cuda", "rss")
    for m in methods:
        if m not in known:
            raise ValueError(f"unknown memory method {m!r}; choose from {known}")
    from .training import is_training, step_fn

    out: dict[str, float | None] = {}
    grad = is_training(mode)
    call = step_fn(module, x, mode, input_grad=input_grad) if grad and methods else (lambda: module(x))
    if grad and methods:
        for _ in range(2):
            call()
    if "alloc" in methods:
        out["mem_alloc_mib"] = alloc_peak(call, x.device, grad=grad)
    if "cuda" in methods:
        out["mem_cuda_mib"] = cuda_peak(call, x.device, grad=grad) if x.device.type == "cuda" else None
    if "rss" in methods:
        if x.device.type == "cpu":
            r = rss_peak(module, x.shape, dtype=x.dtype, threads=threads, mode=mode, input_grad=input_grad)
            out["mem_rss_cold_mib"], out["mem_rss_warm_mib"] = r["cold"], r["warm"]
        else:
            out["mem_rss_cold_mib"] = out["mem_rss_warm_mib"] = None
    return out


if __name__ == "__main__":
    _child_main(sys.argv[1])
