"""GC and SE forward time against mmcv's ContextBlock and the memory floor.

The floor of a memory-bound block is about two reads and one write of ``x``; it is measured as
``t(x.sum(spatial)) + t(x.clone())`` on the same tensor in the same run. Every case runs once per
round, in a rotating order, so drift on a shared machine hits all cases alike; medians over
rounds are reported, with ratios taken within the run.

    python benchmarks/gc_bench.py [--rounds 30] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import globalctx
from globalctx.bench import time_cases

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]


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


def bench_shape(shape, rounds: int, warmup: int = 5) -> dict:
    torch.manual_seed(0)
    x = torch.randn(shape)
    c = shape[1]
    cases = {
        "floor_sum": lambda: x.sum((2, 3)),
        "floor_clone": lambda: x.clone(),
        "gc": _randomized(globalctx.create_block("gc", c)),
        "se": _randomized(globalctx.create_block("se", c)),
    }
    ref = _mmcv_gc(c)
    if ref is not None:
        ref = _randomized(ref)
        globalctx.convert.from_mmcv(cases["gc"], ref.state_dict())
        cases["mmcv_gc"] = ref
        with torch.inference_mode():
            diff = (cases["gc"](x) - ref(x)).abs().max().item()
    else:
        diff = float("nan")
    fns = {k: (v if not isinstance(v, torch.nn.Module) else (lambda m=v: m(x))) for k, v in cases.items()}
    med = {k: r["median_ms"] for k, r in time_cases(fns, runs=rounds, warmup=warmup).items()}
    floor = med["floor_sum"] + med["floor_clone"]
    out = {"shape": list(shape), "floor_ms": floor, "max_abs_diff_vs_mmcv": diff}
    for k, v in med.items():
        out[f"{k}_ms"] = v
        if not k.startswith("floor"):
            out[f"{k}_x_floor"] = v / floor
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds per case (default 30)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--json", default="", help="write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"median of {args.rounds} interleaved rounds, fp32, inference_mode")
    rows = []
    head = f"{'shape':<18}{'floor ms':>9}{'gc ms':>8}{'gc/floor':>9}{'se ms':>8}{'se/floor':>9}" \
           f"{'mmcv ms':>9}{'mmcv/floor':>11}{'mmcv/gc':>8}"
    print(head)
    for shape in SHAPES:
        r = bench_shape(shape, args.rounds)
        rows.append(r)
        mm = r.get("mmcv_gc_ms", float("nan"))
        print(f"{'x'.join(map(str, shape)):<18}{r['floor_ms']:>9.3f}{r['gc_ms']:>8.3f}{r['gc_x_floor']:>9.2f}"
              f"{r['se_ms']:>8.3f}{r['se_x_floor']:>9.2f}{mm:>9.3f}{r.get('mmcv_gc_x_floor', float('nan')):>11.2f}"
              f"{mm / r['gc_ms']:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
