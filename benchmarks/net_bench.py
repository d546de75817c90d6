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

``--mode train`` times one training step instead (``train()`` mode, forward, cross-entropy
against fixed random labels, backward, SGD momentum step); ``--mode both`` times inference and
the training step in the same interleaved rounds. ``--clock thread`` counts the CPU time of the
calling thread (use with ``--threads 1`` on a shared machine: time spent descheduled is left out).
The spread column gives the p25-p75 of the per-round overhead ratios.

Example::

    python benchmarks/net_bench.py --rounds 5 --reps 3 --out benchmarks/results/models.md
    python benchmarks/net_bench.py --only "GC r16 c3-c5 (gc_resnet50),SE r16 c3-c5 (GC's placement)" \
        --mode both --rounds 5 --reps 1 --threads 1 --clock thread
"""

from __future__ import annotations

import argparse
import datetime
import os
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


def _train_step(model):
    """One SGD training step of ``model`` on ``x`` with fixed labels (forward, loss, backward, step)."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    labels = {}

    def step(x):
        model.train()
        if x.shape[0] not in labels:
            labels[x.shape[0]] = torch.randint(0, 1000, (x.shape[0],), generator=torch.Generator().manual_seed(0))
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels[x.shape[0]])
        loss.backward()
        opt.step()

    return step


def _time(model, x, reps, mode="inference", clock=time.perf_counter):
    import torch

    times, faults = [], []
    ctx = torch.enable_grad() if mode == "train" else torch.no_grad()
    fn = model.train_step if mode == "train" else (lambda x: model.eval()(x))
    with ctx:
        for _ in range(reps):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = clock()
            fn(x)
            times.append(clock() - t0)
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
    ap.add_argument("--mode", choices=("inference", "train", "both"), default="inference",
                    help="inference (eval, no_grad), train (one SGD training step), or both in the same rounds")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall (perf_counter) or thread (CPU time of the calling thread; use with --threads 1)")
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
        m.train_step = _train_step(m)
        models[label] = m
        info[label] = {"params": sum(p.numel() for p in m.parameters()), "macs": _macs(m, args.size)}
    x = torch.randn(args.batch, 3, args.size, args.size)
    modes = ("inference", "train") if args.mode == "both" else (args.mode,)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    for m in models.values():
        for mode in modes:
            _time(m, x, args.warmup, mode)

    keys = [(label, mode) for mode in modes for label in models]
    lat: dict[tuple, list[float]] = {k: [] for k in keys}
    flt: dict[tuple, list[float]] = {k: [] for k in keys}
    for r in range(args.rounds):
        order = keys if r % 2 == 0 else list(reversed(keys))  # alternate the order
        for label, mode in order:
            t, f = _time(models[label], x, args.reps, mode, clock)
            lat[label, mode].append(t)
            flt[label, mode].append(f)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    tables = [_table(variants, info, lat, flt, mode) for mode in modes]
    from globalctx.bench.report import machine_info

    header = (
        f"command: `python benchmarks/net_bench.py {' '.join(sys.argv[1:])}`  \n"
        f"machine: {machine_info()['cpu']}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {args.size}x{args.size}, fp32, "
        f"malloc {args.malloc}, clock {args.clock}  \n"
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"rounds {args.rounds} x reps {args.reps}\n"
    )
    table = header + "\n" + "\n\n".join(tables) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 0


def _table(variants, info, lat, flt, mode):
    what = "inference latency (eval, no_grad)" if mode == "inference" else "training step (fwd + loss + bwd + SGD)"
    lines = [
        f"{what}:",
        "",
        "| variant | params | GMACs/img | ms (median) | p25-p75 ms | overhead vs baseline (median of "
        "per-round ratios) | p25-p75 of the ratios | MAC overhead | faults/call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, _name, _, base in variants:
        ts = sorted(lat[label, mode])
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0], ts[0], ts[0]]
        if base:
            ratios = [a / b - 1 for a, b in zip(lat[label, mode], lat[base, mode])]
            rq = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
            ov = f"{100 * statistics.median(ratios):+.1f} %"
            spread = f"{100 * rq[0]:+.1f} .. {100 * rq[2]:+.1f} %"
            mac_ov = f"{100 * (info[label]['macs'] / info[base]['macs'] - 1):+.2f} %"
        else:
            ov, spread, mac_ov = "baseline", "-", "-"
        lines.append(
            f"| {label} | {info[label]['params']:,} | {info[label]['macs'] / 1e9:.3f} | "
            f"{1e3 * statistics.median(ts):.0f} | {1e3 * q[0]:.0f}-{1e3 * q[2]:.0f} | {ov} | {spread} | {mac_ov} | "
            f"{statistics.median(flt[label, mode]):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
