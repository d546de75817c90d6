"""``globalctx compare``: train one network per global-context block (none/se/gc/snl/nl/dnl, those
registered) under identical settings and seeds; write ``runs/compare-<time>/report.md``,
``results.csv`` and ``curves.png``, and print the table.

The default (no flags) is sized to finish in about 10 minutes on a 2-core CPU for six variants:
resnet18_small at base_width 16, a fixed class-balanced 5,000-image subset of Fashion-MNIST,
4 epochs (batch 64, SGD, cosine), evaluated once at the end on a fixed class-balanced 2,000-image
subset of the test set. ``--full`` runs
the real schedule (width 64, all 60,000 training and 10,000 test images, 30 epochs). Any training
flag overrides the default.

Examples::

    globalctx compare
    globalctx compare --variants none,gc --subset 256 --epochs 1
    globalctx compare --full --device cuda
"""

from __future__ import annotations

import argparse

from ..compare import default_config, results_table, run_compare
from ..device import resolve_device
from .needs import require_for_run
from .train import add_config_file, add_train_arguments, config_changes, maybe_download


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="train each block variant under identical settings and write a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--variants",
        help="comma-separated block names, 'none' = no block (default: none,se,gc,snl,nl,dnl - those registered)",
    )
    p.add_argument("--full", action="store_true", help="the real schedule instead of the 10-minute default")
    p.add_argument("--out", "--output", dest="out", help="report directory (default: runs/compare-<time>)")
    p.add_argument("--out-root", default="runs", help="parent of the default report directory")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip the CPU latency column")
    add_train_arguments(p, with_out=False)
    add_config_file(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = default_config(args.full, **config_changes(args))
    if "max_steps" in vars(args):
        raise ValueError("--max-steps is not supported by compare (every variant must finish)")
    require_for_run("compare", data=cfg.data, plots=True)  # curves.png; before the report directory exists
    resolve_device(cfg.device)
    maybe_download(args, cfg)
    ctx = run_compare(cfg, args.variants, out_dir=args.out, out_root=args.out_root, latency=args.latency)
    print(results_table(ctx.rows))
    print(f"\nreport: {ctx.out_dir / 'report.md'}")
    return 0


__all__ = ["add_parser", "run"]
