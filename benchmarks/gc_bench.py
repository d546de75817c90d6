"""GC, SE and the other scale-fusion blocks against the memory floor and mmcv's ContextBlock,
for inference and for a training step (forward + backward, dL/dx included).

The floor of a memory-bound block is about two reads and one write of ``x``; it is measured as
``x.sum(spatial)`` + ``x.clone()`` on the same tensor in the same run. The training floor adds the
backward's passes, ``dy.sum(spatial)`` + ``dy + x`` (see :mod:`globalctx.bench.floors`). Every case
runs once per round, in a rotating order, so drift on a shared machine hits all cases alike;
medians over rounds are reported, with ratios taken within the run, and the p25-p75 of the
per-round ratios as their spread. ``--breakdown`` also times GC's and SE's stages on their own
(context, transform, fusion) in the same rounds; ``--compile`` adds ``torch.compile`` of GC and SE
as a measured column.

    python benchmarks/gc_bench.py [--rounds 30] [--threads 2] [--modes inference,train]
        [--clock wall|thread] [--breakdown] [--compile] [--json out.json]

On a shared machine use ``--threads 1 --clock thread`` (CPU time of the timing thread).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch

import globalctx
from globalctx.bench.floors import memory_floor_fn, train_memory_floor_fn
from globalctx.bench.report import machine_info
from globalctx.bench.training import grad_context, step_fn

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]
BLOCKS = ("gc", "se", "eca", "fca", "gct", "srm")


def _mmcv_gc(c):
    try:
        from mmcv.cnn.bricks import ContextBlock
    except ImportError:
        return None
    return ContextBlock(c, ratio=1 / 16, pooling_type="att", fusion_types=("channel_add",))


def _randomized(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    return m.eval()


def _time_rounds(fns: dict, rounds: int, warmup: int, clock, grad: bool) -> dict[str, list[float]]:
    """Per-round times (ms) of every callable, interleaved with a rotating order."""
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    with torch.enable_grad() if grad else torch.inference_mode():
        for n in names:
            for _ in range(warmup):
                fns[n]()
        for r in range(rounds):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                t0 = clock()
                fns[n]()
                out[n].append((clock() - t0) * 1e3)
    return out


def _breakdown(block, x, mode):
    """Stage callables of a GlobalContextBlock: context, transform, fusion (each alone)."""
    train = mode != "inference"
    with grad_context(mode):
        xin = x.detach().requires_grad_(train)
        ctx = block.context(xin).detach().requires_grad_(train)
        t = block.transform(ctx).detach().requires_grad_(train)

    def stage(f, *args):
        if not train:
            return lambda: f(*args)
        params = [p for p in block.parameters() if p.requires_grad]

        def run():
            for p in params:
                p.grad = None
            y = f(*args)
            y.backward(torch.ones_like(y))

        return run

    return {
        "context": stage(block.context, xin),
        "transform": stage(block.transform, ctx),
        "fusion": stage(block.fusion, xin, t),
    }


def bench_shape(shape, mode: str, rounds: int, clock, breakdown=False, compile=False, warmup=5) -> dict:
    torch.manual_seed(0)
    x = torch.randn(shape)
    c = shape[1]
    floor_fn = (memory_floor_fn if mode == "inference" else train_memory_floor_fn)(x)
    mods = {name: _randomized(globalctx.create_block(name, c)) for name in BLOCKS}
    ref = _mmcv_gc(c)
    diff = float("nan")
    if ref is not None:
        ref = _randomized(ref)
        globalctx.convert.from_mmcv(mods["gc"], ref.state_dict())
        mods["mmcv_gc"] = ref
        with torch.inference_mode():
            diff = (mods["gc"](x) - ref(x)).abs().max().item()
    fns = {"floor": floor_fn}
    for name, m in mods.items():
        fns[name] = step_fn(m, x, mode)
    if compile:
        for name in ("gc", "se"):
            fns[f"{name}_compiled"] = step_fn(torch.compile(mods[name]), x, mode)
    if breakdown:
        for name in ("gc", "se"):
            for stage, fn in _breakdown(mods[name], x, mode).items():
                fns[f"{name}.{stage}"] = fn
    times = _time_rounds(fns, rounds, warmup, clock, grad=mode != "inference")
    floor = times["floor"]
    out = {"shape": list(shape), "mode": mode, "floor_ms": statistics.median(floor), "max_abs_diff_vs_mmcv": diff}
    for k, ts in times.items():
        out[f"{k}_ms"] = statistics.median(ts)
        if k != "floor":
            ratios = sorted(t / f for t, f in zip(ts, floor))
            q = statistics.quantiles(ratios, n=4)
            out[f"{k}_x_floor"] = statistics.median(ratios)
            out[f"{k}_x_floor_iqr"] = [q[0], q[2]]
    if "mmcv_gc" in times:
        out["mmcv_gc_x_gc"] = statistics.median(a / b for a, b in zip(times["mmcv_gc"], times["gc"]))
    return out


def _print(rows, names):
    head = f"{'shape':<15}{'floor ms':>9}" + "".join(f"{n:>14}" for n in names)
    print(head)
    for r in rows:
        cells = []
        for n in names:
            v = r.get(f"{n}_x_floor")
            cells.append(f"{v:>14.2f}" if v is not None else f"{'-':>14}")
        print(f"{'x'.join(map(str, r['shape'])):<15}{r['floor_ms']:>9.3f}" + "".join(cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per case (default 30)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--modes", default="inference", help="comma-separated: inference, train (default inference)")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall", help="perf_counter or thread_time")
    ap.add_argument("--breakdown", action="store_true", help="also time GC's and SE's stages alone")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of GC and SE")
    ap.add_argument("--shapes", default="", help="only these shapes, e.g. 8x2048x7x7,8x1024x14x14")
    ap.add_argument("--json", default="", help="write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    shapes = SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    info = machine_info()
    when = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"{info['cpu']}, torch {torch.__version__}, {args.threads} threads, clock {args.clock}, median of "
          f"{args.rounds} interleaved rounds, fp32; {when}; ratios = time / floor of the same round")
    rows = []
    for mode in args.modes.split(","):
        print(f"\n[{mode}]")
        mode_rows = [bench_shape(s, mode, args.rounds, clock, args.breakdown, args.compile) for s in shapes]
        names = [k[:-8] for k in mode_rows[0] if k.endswith("_x_floor")]
        _print(mode_rows, names)
        for r in mode_rows:
            if "mmcv_gc_x_gc" in r:
                print(f"  {'x'.join(map(str, r['shape']))}: mmcv/gc {r['mmcv_gc_x_gc']:.2f}, "
                      f"gc x floor p25-p75 {r['gc_x_floor_iqr'][0]:.2f}-{r['gc_x_floor_iqr'][1]:.2f}, "
                      f"max |gc - mmcv| {r['max_abs_diff_vs_mmcv']:.1e}")
        rows += mode_rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "date": when, "threads": args.threads, "clock": args.clock,
                       "rounds": args.rounds, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
