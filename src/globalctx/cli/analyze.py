"""``globalctx analyze RUN_DIR_OR_CHECKPOINT``: query-independence statistics and attention figures.

Loads the model with the config saved next to its weights (``globalctx.train.checkpoint``),
evaluates a fixed, class-balanced subset of the validation split (the normalisation stored with
the run), and writes ``analysis.md``, ``stats.json`` and PNG figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..analysis.report import analyse, eval_batches
from ..device import resolve_device
from ..train.checkpoint import CheckpointError, load_model
from .flags import add_batch_size, add_device, add_trust_model_code, number, positive_int
from .needs import require_for_run

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="attention maps and GCNet's query-independence statistics of a trained model",
        description=(
            "Analyse the NL/DNL/GC/SNL blocks of a trained model: mean cosine distance between "
            "positions of the block inputs, outputs (z - x) and attention maps, JSD of the attention "
            "maps (GCNet Table 1), per block; GCNet Figure 1 style attention figures; analysis.md."
        ),
    )
    p.add_argument("path", help="run directory or .safetensors checkpoint written by `globalctx train`")
    p.add_argument(
        "--data",
        default=None,
        help="fashion-mnist or imagefolder:TRAIN_DIR,VAL_DIR (default: the run's own data spec)",
    )
    p.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are (see `train`)")
    p.add_argument("--out", default=None, help="output directory (default: <run dir>/analysis)")
    p.add_argument(
        "--images", type=positive_int, default=256, help="validation images for the statistics (default 256)"
    )
    add_batch_size(p, default=64, help="batch size (default 64)")
    p.add_argument("--figure-images", type=positive_int, default=6, help="rows of each attention figure (default 6)")
    p.add_argument("--queries", type=positive_int, default=3, help="query points per figure row (default 3)")
    p.add_argument(
        "--max-queries",
        type=positive_int,
        default=256,
        help="attention statistics are exact up to this many positions, sampled above (default 256)",
    )
    p.add_argument("--blocks", nargs="*", default=None, help="block names to analyse (default: all)")
    p.add_argument(
        "--seed", type=number(int, low=0), default=0, help="seed of the image subset and query samples (default 0)"
    )
    p.add_argument(
        "--over-training",
        action="store_true",
        help="the statistics at every snapshot of the run (trained with --snapshots), plotted against the step: "
        "over_training.md/.json/.png in --out",
    )
    add_device(p, default="auto")
    add_trust_model_code(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    require_for_run("analysis", data=args.data, plots=True)  # before the output directory exists
    src = Path(args.path)
    if not src.exists():
        raise CheckpointError(f"{src} does not exist; give a run directory or a .safetensors file")
    device = resolve_device(args.device)
    if getattr(args, "over_training", False):
        return _run_over_training(args, src, device)
    model, config = load_model(src, device=device, trust_model_code=args.trust_model_code)
    loader, spec, n_images = eval_batches(
        config, data=args.data, data_dir=args.data_dir, images=args.images, batch_size=args.batch_size, seed=args.seed
    )
    train_cfg = config.get("train", {}) or {}
    run_dir = src if src.is_dir() else src.parent
    out = Path(args.out) if args.out else run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)

    name = config.get("model", {}).get("name", "model")
    attn = train_cfg.get("attn") or config.get("model", {}).get("kwargs", {}).get("attn")
    label = f"{name}" + (f" + {attn}" if attn else "")
    section, stats = analyse(
        model,
        loader,
        out_dir=out,
        title=label,
        max_batches=None,
        max_queries=args.max_queries,
        queries=args.queries,
        images=args.figure_images,
        seed=args.seed,
        blocks=args.blocks,
        heading_level=2,
        device=device,
    )
    header = [
        f"# Analysis of `{src.name}` ({label})",
        "",
        f"Data: `{spec}`, validation split, {n_images} images (class-balanced subset, seed {args.seed}). "
        f"Command: `globalctx analyze {args.path} --data {spec} --images {args.images} "
        f"--max-queries {args.max_queries} --queries {args.queries} --seed {args.seed}`.",
        "",
    ]
    (out / "analysis.md").write_text("\n".join(header) + section)
    if stats is not None:
        (out / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / 'analysis.md'}")
    return 0


def _run_over_training(args, src: Path, device) -> int:
    from ..analysis.over_training import over_training, write_over_training
    from ..train.checkpoint import read_config, refuse_model_code

    if not src.is_dir():
        raise CheckpointError(f"--over-training needs a run directory with snapshots/, got the file {src}")
    config = read_config(src)
    if not args.trust_model_code:
        refuse_model_code(config["model"], src / "config.json")
    loader, spec, n_images = eval_batches(
        config, data=args.data, data_dir=args.data_dir, images=args.images, batch_size=args.batch_size, seed=args.seed
    )
    ot = over_training(
        src,
        loader,
        max_queries=args.max_queries,
        seed=args.seed,
        blocks=args.blocks,
        device=device,
        trust_model_code=args.trust_model_code,
    )
    out = Path(args.out) if args.out else src / "analysis"
    path = write_over_training(ot, out, title=f"{src.name}, {n_images} validation images of {spec}")
    print(f"wrote {path}")
    return 0
