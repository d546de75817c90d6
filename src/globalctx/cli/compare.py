"""``globalctx compare``: train one network per block variant under every seed, with identical
settings and, per seed, the same data order and augmentation for every variant (a paired design);
report per variant the mean top-1 with its 95% confidence interval, the paired difference from the
baseline (the first variant) with its interval, a verdict (better / worse / not resolved: whether
that interval excludes 0) and the test-sampling standard error; write ``report.md`` (with a
reading in words), ``results.csv`` (one row per variant and seed), ``summary.json``,
``accuracy.png`` and ``curves.png`` into ``runs/compare-<time>/`` (or ``--out``).

The default (no flags): variants none, se, gc, nl; 8 seeds (0-7); resnet18_small at base_width 16;
a class-balanced 3,000-image training subset of Fashion-MNIST (drawn with the seed); 3 epochs
(batch 64, SGD, cosine); top-1 on the full 10,000-image test set. About 9 minutes on an idle
2-core CPU (the estimate is printed before training, a progress line after each run).
``--preset gcnet-ablation`` / ``nl-ablation`` run the papers' ablation tables (3 seeds, 4,000 training
images), with the paper's figure beside each row; ``--preset gcnet-finding`` runs the study of
GCNet's finding on learned attention maps (NL/SNL/GC/DNL on the canvas tasks, with a positive
control; :mod:`globalctx.compare.finding`). ``--full`` runs the real schedule (width 64, all
60,000 training images, 30 epochs). Any training flag overrides the default.

Nothing is lost, nothing is redone: run the same command again (same ``--out``) or
``globalctx compare --resume DIR`` and only the (variant, seed) runs that are not finished are
trained (a run killed part-way continues from its checkpoint); the report is rebuilt from all of
them. A failing run is reported and the others still run. A directory that is not this comparison
is refused unless ``--overwrite``.

Variant specs (``--variants``, separated by spaces, ``;`` or commas; quote them in a shell)::

{grammar}

Examples::

    globalctx compare
    globalctx compare --seeds 5 --variants "none gc gc(rd_ratio=1/4) gc@after_add"
    globalctx compare --variants "none nl@stages=3+gc" --seeds 0,1,2 --out runs/nl-gc
    globalctx compare --preset gcnet-ablation
    globalctx compare --preset gcnet-finding        # GCNet's finding on learned maps, with a control
    globalctx compare --resume runs/nl-gc          # train only what is missing, rebuild the report
    globalctx compare --variants none,gc --subset 256 --epochs 1 --seeds 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..compare import CompareInterrupted, default_config, run_compare
from ..compare.plan import read_manifest
from ..compare.presets import list_presets
from ..compare.reading import build_reading
from ..compare.report import results_table
from ..compare.run import PRESET_BUDGETS, parse_seeds
from ..compare.variants import GRAMMAR
from ..device import resolve_device
from ..train.config import TrainConfig
from .needs import require_for_run
from .train import add_config_file, add_train_arguments, config_changes, maybe_download


def run_gcnet_finding(args: argparse.Namespace) -> int:
    """``--preset gcnet-finding``: GCNet's finding on learned maps (:mod:`globalctx.compare.finding`).

    Takes ``--seeds`` (default 0,1), ``--out`` / ``--resume`` (default ``runs/finding``) and
    ``--threads``; the study fixes its own tasks, blocks and schedule, so other training flags
    and ``--variants`` are refused rather than ignored.
    """
    from ..compare.finding import run_finding

    if args.variants:
        raise ValueError("--preset gcnet-finding trains its own blocks (nl, snl, gc, dnl); drop --variants")
    changes = {k: v for k, v in config_changes(args).items() if k not in ("threads", "out")}
    if changes:
        raise ValueError(
            f"--preset gcnet-finding fixes its own schedule; these flags would be ignored: {', '.join(sorted(changes))}"
            " (use python -m globalctx.compare.finding or run_finding(settings=...) to change it)"
        )
    if args.resume and args.out and args.out != args.resume:
        raise ValueError(f"--resume {args.resume} and --out {args.out} name two directories; give one")
    out = args.resume or args.out or f"{args.out_root}/finding"
    require_for_run("compare", data="fmnist-canvas", plots=True)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [0, 1]
    try:
        run_finding(out, seeds=seeds, threads=getattr(args, "threads", None))
    except KeyboardInterrupt:
        print(f"interrupted; finished runs are kept, run the same command again to resume ({out})", file=sys.stderr)
        return 130
    print(f"\nreport: {out}/report.md")
    return 0


# presets that are studies of their own rather than a list of variants: name -> command function
STUDIES: dict[str, Callable[[argparse.Namespace], int]] = {"gcnet-finding": run_gcnet_finding}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="train each block variant under several seeds; report intervals, paired differences, verdicts",
        description=__doc__.format(grammar=GRAMMAR),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c = p.add_argument_group("comparison")
    c.add_argument(
        "--variants",
        help="variant specs, the first is the baseline (default: none se gc nl); see the grammar above",
    )
    c.add_argument(
        "--seeds",
        help="seeds: a list (0,1,2) or a count N (seeds --seed .. --seed+N-1) (default: 3; a preset: its own)",
    )
    c.add_argument("--preset", choices=sorted([*list_presets(), *STUDIES]), help="a paper's ablation table")
    c.add_argument("--resume", metavar="DIR", help="continue the comparison in DIR: train only its missing runs")
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a --out that holds other files or another comparison's runs (retrains those runs)",
    )
    c.add_argument("--full", action="store_true", help="the real schedule instead of the 10-minute default")
    c.add_argument("--out", "--output", dest="out", help="comparison directory (default: runs/compare-<time>)")
    c.add_argument("--out-root", default="runs", help="parent of the default comparison directory")
    c.add_argument("--no-latency", dest="latency", action="store_false", help="skip the CPU latency column")
    c.add_argument(
        "--analysis",
        choices=("all", "defaults", "none"),
        help="attention analysis of: every variant with NL/GC/SNL/DNL blocks, only bare block names at their "
        "default placement, or none (default: defaults for a preset, else all)",
    )
    add_train_arguments(p, with_out=False)
    add_config_file(p)
    p.set_defaults(func=run)
    return p


def _settings(args: argparse.Namespace):
    """``(base config, variants, seeds, preset, out)`` from the flags (and a resumed manifest)."""
    changes = config_changes(args)
    if "attn" in changes:
        raise ValueError("compare takes its blocks from --variants (e.g. --variants 'none gc'), not --attn")
    if "max_steps" in changes:
        raise ValueError("--max-steps is not supported by compare (every run must finish)")
    variants, seeds, preset, out = args.variants, args.seeds, args.preset, args.out
    if args.resume:
        if args.out and args.out != args.resume:
            raise ValueError(f"--resume {args.resume} and --out {args.out} name two directories; give one")
        manifest = read_manifest(args.resume)
        if manifest is None:
            raise ValueError(f"--resume {args.resume}: no comparison there (compare.json missing)")
        saved = dict(manifest["base"])
        if "model_kwargs" in changes:
            changes["model_kwargs"] = {**saved.get("model_kwargs", {}), **changes["model_kwargs"]}
        base = TrainConfig.from_dict({**saved, **changes})
        preset = preset or manifest.get("preset")
        if variants is None and (args.preset is None or args.preset == manifest.get("preset")):
            variants = manifest["variants"]
        seeds = seeds if seeds is not None else manifest["seeds"]
        return base, variants, seeds, preset, args.resume
    base = default_config(args.full, preset, **changes)
    if seeds is None:
        seeds = PRESET_BUDGETS.get(preset, {}).get("seeds") if preset and not args.full else None
        if seeds is not None:
            seeds = str(seeds)
    return base, variants, seeds, preset, out


def run(args: argparse.Namespace) -> int:
    if args.preset in STUDIES:
        return STUDIES[args.preset](args)
    base, variants, seeds, preset, out = _settings(args)
    require_for_run("compare", data=base.data, plots=True)  # figures; before the comparison directory exists
    resolve_device(base.device)
    maybe_download(args, base)
    try:
        ctx = run_compare(base, variants, seeds, out_dir=out, out_root=args.out_root, preset=preset,
                          overwrite=args.overwrite, latency=args.latency, analysis=args.analysis)  # fmt: skip
    except CompareInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    print(results_table(ctx))
    if ctx.summary is not None:
        print("\n" + build_reading(ctx.summary).text())
    if ctx.failed:
        print(f"\n{len(ctx.failed)} run(s) failed (listed in the report); run the command again to retry them only")
    print(f"\nreport: {ctx.out_dir / 'report.md'}")
    return 1 if ctx.failed else 0


__all__ = ["add_parser", "run", "STUDIES"]
