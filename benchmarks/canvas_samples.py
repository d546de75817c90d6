"""A PNG grid of samples of the two canvas tasks (``fmnist-canvas``, ``fmnist-pairs``).

Each panel is one test-split canvas with its label; the items' boxes are outlined (the model never
sees the outlines). Needs matplotlib (an optional extra).

Usage::

    python benchmarks/canvas_samples.py --out benchmarks/results/analysis
"""

from __future__ import annotations

import argparse
from pathlib import Path

from globalctx.train.canvas import CANVAS_TASKS, ITEM, build_canvas_datasets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/analysis", help="output directory")
    p.add_argument("--per-task", type=int, default=12, help="samples per task (default 12)")
    p.add_argument("--cols", type=int, default=6, help="panels per row (default 6)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    p.add_argument("--force", action="store_true", help="overwrite an existing canvas_samples.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    out = Path(args.out)
    target = out / "canvas_samples.png"
    if target.exists() and not args.force:
        p.error(f"{target} exists; pass --force to overwrite it")
    rows_per_task = -(-args.per_task // args.cols)
    fig, axes = plt.subplots(
        rows_per_task * len(CANVAS_TASKS), args.cols, figsize=(1.9 * args.cols, 2.1 * rows_per_task * len(CANVAS_TASKS))
    )
    for t, task in enumerate(CANVAS_TASKS):
        _, test = build_canvas_datasets(task, data_dir=args.data_dir, n_train=1, n_test=args.per_task, seed=args.seed)
        for i in range(rows_per_task * args.cols):
            ax = axes[t * rows_per_task + i // args.cols, i % args.cols]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(test):
                ax.axis("off")
                continue
            ax.imshow(test.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
            for y, x in test.boxes[i].tolist():
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), ITEM, ITEM, fill=False, ec="tab:orange", lw=0.8, ls=":"))
            if task == "fmnist-canvas":
                title = test.classes[int(test.labels[i])]
            else:
                a, b = (short_class_name(int(c)) for c in test.item_classes[i])
                title = f"{test.classes[int(test.labels[i])]} ({a}/{b})"
            ax.set_title(title, fontsize=7)
        axes[t * rows_per_task, 0].set_ylabel(task, fontsize=8)
    fig.suptitle(f"Canvas tasks (test split, seed {args.seed}): label above each canvas; item boxes dotted", fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")
    return 0


def short_class_name(c: int) -> str:
    from globalctx.train.data import FASHION_MNIST_CLASSES

    return FASHION_MNIST_CLASSES[c].split("/")[0]


if __name__ == "__main__":
    raise SystemExit(main())
