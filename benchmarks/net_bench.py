"""Whole-network cost of each block at its paper placement: ResNet-50, CPU, batch 8, 224x224.

For every variant: parameters, MACs (``torch.utils.flop_counter``: conv/mm/bmm only; the CPU
SDPA kernel of NL/DNL is not counted; MACs = FLOPs / 2, at batch 1), forward latency (eval,
``no_grad``, fp32) and minor page faults per forward. Runs are interleaved (round-robin over
the models, ``--rounds`` rounds of ``--reps`` timed calls each); the overhead of a variant is the median over rounds of
``latency(variant) / latency(baseline of the same round) - 1``.

glibc's malloc mmaps every allocation above its threshold fresh on each call and page-faults
it; on ResNet-50 at batch 8 that adds noise as large as the effects measured here. With
``--malloc tuned`` (default) the script re-executes itself with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge> MALLOC_TOP_PAD_=1GiB`` so freed memory is
reused (no faults after warm-up); ``--malloc default`` measures what users get without tuning.
The page-fault column shows which regime a run was in.

Example::

    python benchmarks/net_bench.py --rounds 5 --reps 3 --out benchmarks/results/models.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import time

TUNED_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(64 << 30), "MALLOC_TOP_PAD_": str(1 << 30)}

# (label, model name, create_model kwargs, baseline label)
VARIANTS = [
    ("resnet50", "resnet50", {}, None),
    ("GC r16 c3-c5 (gc_resnet50)", "gc_resnet50", {}, "resnet50"),
    ("GC r16 c2-c5", "gc_resnet50_c2c5", {}, "resnet50"),
    ("GC r4 c3-c5", "gc_resnet50_r4", {}, "resnet50"),
    ("SE r16 c3-c5 (GC's placement)", "resnet50", {"attn": "SE_C3C5"}, "resnet50"),
    ("SE r16 c2-c5 (se_resnet50)", "se_resnet50", {}, "resnet50"),
    ("SNL c3-c5", "snl_resnet50", {}, "resnet50"),
    ("ECA k=3,5,5,7", "eca_resnet50", {}, "resnet50"),
    ("FcaNet top16", "fca_resnet50", {}, "resnet50"),
    ("SRM", "srm_resnet50", {}, "resnet50"),
    ("GCT before every conv", "gct_resnet50", {}, "resnet50"),
    ("NL x1 (res4)", "nl_resnet50_1", {}, "resnet50"),
    ("NL x5 (res3+res4)", "nl_resnet50", {}, "resnet50"),
    ("DNL (res4[-2], res5[0,-2,-1])", "dnl_resnet50", {}, "resnet50"),
    ("resnet50, stage-4 stride 1", "resnet50", {"last_stride": 1}, None),
    ("GSoP (last block per stage)", "gsop_resnet50", {}, "resnet50, stage-4 stride 1"),
]


def _build(name, kw):
    import globalctx
    from globalctx.models import Placement

    kw = dict(kw)
    if kw.get("attn") == "SE_C3C5":
        kw["attn"] = Placement("se", stages=(2, 3, 4))
    return globalctx.create_model(name, **kw).eval()


def _macs(model, size):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, size, size))
    return fc.get_total_flops() / 2


def _time(model, x, reps):
    import torch

    times, faults = [], []
    with torch.no_grad():
        for _ in range(reps):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return statistics.median(times), statistics.median(faults)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed calls per model per round (median)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--malloc", choices=("tuned", "default"), default="tuned")
    ap.add_argument("--only", default="", help="comma-separated labels or model names to run (baselines added)")
    ap.add_argument("--out", default="", help="write the markdown table here as well")
    args = ap.parse_args(argv)

    if args.malloc == "tuned" and any(os.environ.get(k) != v for k, v in TUNED_ENV.items()):
        env = dict(os.environ, **TUNED_ENV)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = VARIANTS
    if args.only:
        want = set(args.only.split(","))
        keep = {lab for lab, name, _, _ in VARIANTS if lab in want or name in want}
        keep |= {base for lab, _, _, base in VARIANTS if lab in keep and base}
        variants = [v for v in VARIANTS if v[0] in keep]
    import globalctx

    known = set(globalctx.list_models())
    variants = [v for v in variants if v[1] in known]

    models, info = {}, {}
    for label, name, kw, _ in variants:
        m = _build(name, kw)
        models[label] = m
        info[label] = {"params": sum(p.numel() for p in m.parameters()), "macs": _macs(m, args.size)}
    x = torch.randn(args.batch, 3, args.size, args.size)
    for m in models.values():
        _time(m, x, args.warmup)

    lat: dict[str, list[float]] = {k: [] for k in models}
    flt: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))  # alternate the order
        for label in order:
            t, f = _time(models[label], x, args.reps)
            lat[label].append(t)
            flt[label].append(f)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    lines = [
        "| variant | params | GMACs/img | latency ms (median) | p25-p75 ms | overhead vs baseline (median of "
        "per-round ratios) | MAC overhead | faults/fwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _name, _, base in variants:
        ts = sorted(lat[label])
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0], ts[0], ts[0]]
        if base:
            ratios = [a / b - 1 for a, b in zip(lat[label], lat[base])]
            ov = f"{100 * statistics.median(ratios):+.1f} %"
            mac_ov = f"{100 * (info[label]['macs'] / info[base]['macs'] - 1):+.2f} %"
        else:
            ov, mac_ov = "baseline", "-"
        lines.append(
            f"| {label} | {info[label]['params']:,} | {info[label]['macs'] / 1e9:.3f} | "
            f"{1e3 * statistics.median(ts):.0f} | {1e3 * q[0]:.0f}-{1e3 * q[2]:.0f} | {ov} | {mac_ov} | "
            f"{statistics.median(flt[label]):.0f} |"
        )
    header = (
        f"command: `python benchmarks/net_bench.py {' '.join(sys.argv[1:])}`  \n"
        f"machine: {platform.machine()} {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, fp32, eval, "
        f"malloc {args.malloc}  \n"
        f"date: {datetime.date.today().isoformat()}, rounds {args.rounds} x reps {args.reps}\n"
    )
    table = header + "\n" + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
