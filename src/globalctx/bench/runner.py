"""Run benchmark cases: count, time (interleaved, with floors), measure memory; one row per case.

Cases that share an input shape form a *group*: they are timed in one interleaved run together
with the floors of that shape, so every ratio in a row (to the floors, to the baseline) comes
from one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..progress import Progress
from .counting import count_flops, count_params
from .floors import gemm_floor_fn, memory_floor_fn, train_memory_floor_fn, training_gemms
from .latency import set_threads, time_cases
from .memory import peak_memory
from .training import check_mode, is_training, step_fn

__all__ = ["Case", "run_cases", "DTYPES", "shape_str"]

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # run_cases(amp=...)


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


@dataclass
class Case:
    """One thing to measure.

    Args:
        name: row name (``"gc"``, ``"mmcv:gc"``, ``"resnet50"``).
        build: zero-argument constructor of the module, or the module itself.
        input_shape: ``[N, C, *S]``.
        kind: ``"block"``, ``"peer"``, ``"model"`` or ``"module"``; models get no floors.
        group: rows with the same group are timed together. Default: the input shape.
    """

    name: str
    build: Callable[[], nn.Module] | nn.Module
    input_shape: Sequence[int]
    kind: str = "block"
    group: str = ""

    def __post_init__(self):
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if not self.group:
            self.group = shape_str(self.input_shape)


def _ratio(a, b):
    return a / b if (a is not None and b) else None


def run_cases(
    cases: Iterable[Case],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    memory: Sequence[str] = ("alloc",),
    floors: bool = True,
    compile: bool = False,
    baseline: str | None = None,
    progress: str = "auto",
    seed: int = 0,
    channels_last: bool = False,
    amp: str = "none",
    mode: str = "inference",
    clock: str = "wall",
) -> list[dict]:
    """Measure every case; returns one flat dict per case (the CSV/JSON row schema).

    Args:
        cases: the :class:`Case` list.
        device, dtype: where and in which precision modules and inputs live.
        runs, warmup: timed and untimed calls per case (see :func:`~globalctx.bench.latency.time_cases`).
        threads: intra-op threads to pin (``None``: keep torch's setting); reported per row.
        memory: peak-memory methods (``alloc``, ``cuda``, ``rss``; see :mod:`~globalctx.bench.memory`);
            empty for none.
        floors: time the memory and GEMM floors with each group (not for models).
        compile: ``torch.compile`` each module before timing (counts use the eager module).
        baseline: a case name; rows of the same group get ratios against it.
        progress: ``"auto"`` (tqdm, else plain lines), ``"plain"`` or ``"none"``.
        seed: RNG seed for weights and inputs.
        channels_last: modules and 4-D / 5-D inputs in ``channels_last`` (``channels_last_3d``)
            memory format; column ``memory_format``.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``: time (and measure in-process memory) under
            ``torch.autocast`` of that dtype; column ``amp``.
        mode: ``"inference"``, ``"train"`` (forward + backward) or ``"train+step"`` (+ SGD step);
            see :mod:`~globalctx.bench.training`. In the training modes latency and memory are
            those of one step and the floors are the training floors (:mod:`~globalctx.bench.floors`);
            MACs stay those of one forward.
        clock: ``"wall"`` (``time.perf_counter``) or ``"thread"`` (``time.thread_time``: CPU time
            of the calling thread; with ``threads=1`` it ignores time spent descheduled on a
            shared machine).
    """
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp={amp!r} is not valid; choose one of {', '.join(AMP_DTYPES)}")
    check_mode(mode)
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    cases = list(cases)
    if baseline is not None and baseline not in {c.name for c in cases}:
        raise ValueError(f"baseline {baseline!r} is not one of the cases: {sorted({c.name for c in cases})}")
    dev = torch.device(device)
    nthreads = set_threads(threads)
    groups: dict[str, list[Case]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    bar = Progress(len(cases), mode=progress, unit="case")
    rows: list[dict] = []
    try:
        for group, members in groups.items():
            rows.extend(
                _run_group(
                    group, members, dev, dtype, runs, warmup, nthreads, memory, floors, compile, seed, bar, mode,
                    CLOCKS[clock], channels_last=channels_last, amp=amp,
                )  # fmt: skip
            )
    finally:
        bar.close()
    if baseline is not None:
        _add_baseline(rows, baseline)
    return rows


def _memory_format(x: torch.Tensor, channels_last: bool) -> torch.memory_format | None:
    """``channels_last`` / ``channels_last_3d`` for a 4-D / 5-D input when asked, else ``None``."""
    if not channels_last:
        return None
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())


def _autocast(dev: torch.device, amp: str):
    """``torch.autocast`` of the ``amp`` dtype on ``dev`` (a no-op context for ``"none"``)."""
    return torch.autocast(dev.type, dtype=AMP_DTYPES[amp], enabled=amp != "none")


def _under_autocast(fn, dev: torch.device, amp: str):
    def call():
        with _autocast(dev, amp):
            return fn()

    return call


def _run_group(
    group, members, dev, dtype, runs, warmup, nthreads, memory, floors, compile, seed, bar, mode, clock, *,
    channels_last=False, amp="none",
):  # fmt: skip
    rows, timed, mods = [], {}, {}
    train = is_training(mode)
    x_by_shape: dict[tuple, torch.Tensor] = {}
    for c in members:
        row = {
            "group": group,
            "name": c.name,
            "kind": c.kind,
            "input_shape": shape_str(c.input_shape),
            "device": str(dev),
            "dtype": str(dtype).split(".")[-1],
            "threads": nthreads,
            "memory_format": "channels_last" if channels_last else "contiguous",
            "amp": amp,
            "mode": mode,
            "torch": torch.__version__,
            "error": "",
        }
        rows.append(row)
        try:
            torch.manual_seed(seed)
            mod = c.build() if not isinstance(c.build, nn.Module) else c.build
            mod = mod.to(device=dev, dtype=dtype).eval()
            if c.input_shape not in x_by_shape:
                torch.manual_seed(seed)
                x_by_shape[c.input_shape] = torch.randn(c.input_shape, device=dev, dtype=dtype)
            x = x_by_shape[c.input_shape]
            fmt = _memory_format(x, channels_last)
            if fmt is not None:
                mod = mod.to(memory_format=fmt)
                x = x.contiguous(memory_format=fmt)
            row.update(count_params(mod))
            fc = count_flops(mod, x)
            row.update(macs=fc.macs, flops=fc.flops, flops_by_op=fc.by_op)
            run_mod = torch.compile(mod) if compile else mod
            input_grad = c.kind != "model"
            mods[c.name] = (mod, x, fc, input_grad)
            timed[c.name] = _under_autocast(step_fn(run_mod, x, mode, input_grad=input_grad), dev, amp)
            if floors and c.kind != "model":
                gemms = training_gemms(fc.gemms) if train else fc.gemms
                gfn, gscale = gemm_floor_fn(gemms, device=dev, dtype=dtype)
                timed[f"floor:gemm:{c.name}"] = gfn
                row["_gemm_scale"] = gscale
        except Exception as e:  # one bad case must not sink the sweep
            row["error"] = f"{type(e).__name__}: {e}"
    if floors and any(c.kind != "model" for c in members):
        shape = next(c.input_shape for c in members if c.kind != "model")
        if shape not in x_by_shape:
            x_by_shape[shape] = torch.randn(shape, device=dev, dtype=dtype)
        floor_fn = train_memory_floor_fn if train else memory_floor_fn
        timed["floor:memory"] = floor_fn(x_by_shape[shape])
    try:
        bar.note(f"{group}: timing {len(timed)} callables (cases and floors) x {runs} rounds")
        rounds = lambda done, total: bar.note(f"{group}: round {done}/{total}", plain=False)  # noqa: E731
        lat = {}
        if timed:
            lat = time_cases(timed, runs=runs, warmup=warmup, device=dev, on_round=rounds, grad=train, clock=clock)
    except Exception as e:
        lat = {}
        for row in rows:
            row["error"] = row["error"] or f"timing failed: {type(e).__name__}: {e}"
    mem_floor = lat.get("floor:memory", {}).get("median_ms")
    for row in rows:
        name = row["name"]
        scale = row.pop("_gemm_scale", None)
        if name not in lat:
            bar.step(f"{group} {name} (failed)")
            continue
        s = lat[name]
        row.update(latency_ms=s["median_ms"], latency_min_ms=s["min_ms"], latency_max_ms=s["max_ms"], runs=s["runs"])
        g = lat.get(f"floor:gemm:{name}")
        gemm_floor = g["median_ms"] * scale if g else None
        if row["kind"] != "model" and mem_floor is not None:
            row["floor_mem_ms"] = mem_floor
            row["x_mem_floor"] = _ratio(s["median_ms"], mem_floor)
        if gemm_floor is not None:
            row["floor_gemm_ms"] = gemm_floor
            row["x_gemm_floor"] = _ratio(s["median_ms"], gemm_floor)
        if mem_floor is not None and gemm_floor is not None:
            row["x_floor"] = _ratio(s["median_ms"], max(mem_floor, gemm_floor))
        mod, x, _, input_grad = mods[name]
        try:
            methods = _methods_for(memory, x)
            with _autocast(dev, amp):  # in-process methods only; an rss subprocess runs without autocast
                row.update(
                    peak_memory(mod, x, methods=methods, threads=row["threads"], mode=mode, input_grad=input_grad)
                )
        except Exception as e:
            row["error"] = f"memory: {type(e).__name__}: {e}"
        bar.step(f"{group} {name}")
    return rows


def _methods_for(memory: Sequence[str], x: torch.Tensor) -> tuple[str, ...]:
    out = []
    for m in memory:
        if m == "cuda" and x.device.type != "cuda":
            continue
        if m == "rss" and x.device.type != "cpu":
            continue
        out.append(m)
    return tuple(out)


def _mem_of(row):
    for k in ("mem_cuda_mib", "mem_alloc_mib", "mem_rss_cold_mib"):
        if row.get(k) is not None:
            return row[k]
    return None


def _add_baseline(rows: list[dict], baseline: str) -> None:
    names = {r["name"] for r in rows}
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not one of the cases: {sorted(names)}")
    base = {r["group"]: r for r in rows if r["name"] == baseline}
    for r in rows:
        b = base.get(r["group"])
        if b is None:
            continue
        r["baseline"] = baseline
        r["x_latency_vs_base"] = _ratio(r.get("latency_ms"), b.get("latency_ms"))
        r["x_params_vs_base"] = _ratio(r.get("params"), b.get("params"))
        r["x_macs_vs_base"] = _ratio(r.get("macs"), b.get("macs"))
        r["x_mem_vs_base"] = _ratio(_mem_of(r), _mem_of(b))
