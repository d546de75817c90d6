"""Channel-attention presets: forward time against the memory floor (and a GEMM floor for the
second-order ones), parameter and FLOP overhead, at the four ResNet-50 stage shapes.

Memory floor: ``t(x.sum(spatial)) + t(x.clone())`` on the same tensor, timed in the same rounds
as the block (each round runs block, sum, clone back to back, so drift hits them alike); medians,
and the ratio of minima (closer to the uncontended cost on a shared machine).
GEMM floor (gsop, soca, enc, ban): the block's own large GEMMs (``torch.bmm``/``matmul`` with
``out=`` into preallocated buffers, no other op), timed the same way; these blocks are
compute-bound, so this is the floor that matters for them. FLOPs are
``torch.utils.flop_counter.FlopCounterMode`` counts (GEMM / conv ops only, 2 per multiply-add;
element-wise work is not counted).

    python benchmarks/channel_bench.py [--threads 2] [--rounds 15] [--budget 2.0] [--clock wall|cpu]
                                       [--presets eca,fca,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import globalctx  # noqa: F401  (registers the presets)
from globalctx.bench import time_cases
from globalctx.layers import create_block

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]
PRESETS = ["eca", "fca", "srm", "gct", "rcan", "dia", "enc", "gsop", "soca", "ban"]
# SoCA at C=2048, N=8: 1.6 TFLOP per forward (12 Newton-Schulz GEMMs of 2048^3 per sample), tens
# of seconds per call on a 2-core CPU; skipped by default (its GEMM-floor ratio is measured at C<=1024).
SKIP = {("soca", 2048)}
# official stage settings where a preset has them
STAGE_OPTS = {
    "eca": {256: {"kernel_size": 3}, 512: {"kernel_size": 5}, 1024: {"kernel_size": 5}, 2048: {"kernel_size": 7}},
    "fca": {256: {"dct_size": 56}, 512: {"dct_size": 28}, 1024: {"dct_size": 14}, 2048: {"dct_size": 7}},
}


def _gemm_floor(name: str, blk, x: torch.Tensor):
    """A callable running only the block's big GEMMs into preallocated outputs (None if not second-order)."""
    n, c = x.shape[:2]
    xf = x.flatten(2)  # [N, C, L]
    ll = xf.shape[-1]
    if name == "soca":
        cov = torch.empty(n, c, c)
        m1, m2 = torch.randn(n, c, c), torch.randn(n, c, c)
        out = torch.empty(n, c, c)
        it = blk.context.iterations
        n_mm = 1 + 3 * (it - 2) + 2 if it > 1 else 1  # Newton-Schulz matmuls

        def fn():
            torch.bmm(xf, xf.transpose(1, 2), out=cov)
            for _ in range(n_mm):
                torch.bmm(m1, m2, out=out)

        return fn
    if name == "gsop":
        d = blk.context.cov_channels
        w = blk.context.reduce.weight
        r = torch.empty(n, d, ll)
        cov = torch.empty(n, d, d)

        we = w.expand(n, -1, -1)

        def fn():
            torch.bmm(we, xf, out=r)
            torch.bmm(r, r.transpose(1, 2), out=cov)

        return fn
    if name == "enc":
        k = blk.context.encoding.num_codes
        w = blk.context.proj.weight
        we = w.expand(n, -1, -1)
        p = torch.empty(n, c, ll)
        cw = torch.randn(k, c).expand(n, -1, -1)
        dist = torch.empty(n, k, ll)
        a = torch.randn(n, k, ll)
        e = torch.empty(n, k, c)

        def fn():
            torch.bmm(we, xf, out=p)  # 1x1 projection
            torch.bmm(cw, p, out=dist)  # codeword distances
            torch.bmm(a, p.transpose(1, 2), out=e)  # aggregation

        return fn
    if name == "ban":
        m = blk.rd_channels
        pp = m * (m + 1) // 2
        w1 = blk.reduce.conv.weight.expand(n, -1, -1)
        w2 = blk.outer.conv.weight.expand(n, -1, -1)
        v = torch.empty(n, m, ll)
        b = torch.randn(n, pp, ll)
        o = torch.empty(n, c, ll)

        def fn():
            torch.bmm(w1, xf, out=v)  # 1x1 reduction
            torch.bmm(w2, b, out=o)  # 1x1 conv on the bilinear features

        return fn
    return None


CLOCK = time.perf_counter


def _time_round(fns: dict, rounds: int, warmup: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """Median and minimum ms per callable over interleaved rounds (:func:`globalctx.bench.time_cases`)."""
    res = time_cases(fns, runs=rounds, warmup=warmup, clock=CLOCK)
    return {k: r["median_ms"] for k, r in res.items()}, {k: r["min_ms"] for k, r in res.items()}


def bench(shape, name: str, rounds: int, budget_s: float) -> dict | None:
    if (name, shape[1]) in SKIP:
        return None  # see SKIP
    torch.manual_seed(0)
    x = torch.randn(shape)
    c = shape[1]
    blk = create_block(name, c, **STAGE_OPTS.get(name, {}).get(c, {})).eval()
    params = sum(p.numel() for p in blk.parameters())
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            blk(x)
        flops = fc.get_total_flops()
        t0 = time.perf_counter()
        blk(x)
        single = time.perf_counter() - t0
        n_rounds = max(2, min(rounds, int(budget_s / max(single, 1e-6))))
        warmup = 1 if single < budget_s else 0  # the two calls above already warmed up
        fns = {"block": lambda: blk(x), "sum": lambda: x.sum((2, 3)), "clone": lambda: x.clone()}
        gemm = _gemm_floor(name, blk, x)
        if gemm is not None:
            fns["gemm"] = gemm
        med, best = _time_round(fns, n_rounds, warmup)
    floor = med["sum"] + med["clone"]
    out = {
        "preset": name,
        "shape": list(shape),
        "params": params,
        "mflops": flops / 1e6,
        "rounds": n_rounds,
        "block_ms": med["block"],
        "mem_floor_ms": floor,
        "x_mem_floor": med["block"] / floor,
        "min_block_ms": best["block"],
        "min_x_mem_floor": best["block"] / (best["sum"] + best["clone"]),
    }
    if gemm is not None:
        out["gemm_floor_ms"] = med["gemm"]
        out["x_gemm_floor"] = med["block"] / med["gemm"]
        out["min_x_gemm_floor"] = best["block"] / best["gemm"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of block time per case (caps rounds)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: CPU time of the calling thread (forces --threads 1), robust to other "
        "processes on a shared machine since time spent descheduled is not counted",
    )
    args = ap.parse_args(argv)
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.thread_time
        args.threads = 1
    torch.set_num_threads(args.threads)
    rows = []
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}, "
        f"clock {args.clock}"
    )
    head = ("preset", "shape", "params", "MFLOP", "ms", "floor", "x floor", "min x", "gemm", "x gemm", "min x")
    print("{:6} {:18} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6} {:>8} {:>6} {:>6}".format(*head))
    for shape in SHAPES:
        for name in args.presets.split(","):
            r = bench(shape, name, args.rounds, args.budget)
            if r is None:
                print(f"{name:6} {str(tuple(shape)):18} skipped (compute-bound, see SKIP)", flush=True)
                continue
            rows.append(r)
            g = (
                f"{r['gemm_floor_ms']:8.2f} {r['x_gemm_floor']:6.2f} {r['min_x_gemm_floor']:6.2f}"
                if "gemm_floor_ms" in r
                else ""
            )
            print(
                f"{name:6} {str(tuple(shape)):18} {r['params']:9d} {r['mflops']:9.1f} {r['block_ms']:9.2f} "
                f"{r['mem_floor_ms']:7.2f} {r['x_mem_floor']:7.2f} {r['min_x_mem_floor']:6.2f} {g}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"torch": torch.__version__, "threads": args.threads, "clock": args.clock, "rows": rows}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
