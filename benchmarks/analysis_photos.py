"""GCNet Figure 1 on real photographs: attention maps of NL/DNL/GC blocks on scikit-image's photos.

Six photographs bundled with scikit-image (``skimage.data``) go through a ResNet with global-context
blocks plugged in; for every block the script writes a GCNet Figure 1 style PNG (each image with
three query points and the attention map of each query, upsampled) and prints the
query-independence statistics of the six photos as markdown.

The model is either a trained run (``--run RUN_DIR`` from ``globalctx train``; grey models see
the photos in grey) or, without ``--run``, a freshly initialised ``--model`` with ``--attn``
blocks (seeded; say so when you show the figure).

Usage::

    python benchmarks/analysis_photos.py --run runs/nl --out benchmarks/results/analysis
    python benchmarks/analysis_photos.py --model resnet18_small --attn nl --base-width 16 \\
        --embed-gain 1 --out photos_random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import globalctx
from globalctx.analysis import (
    block_kind,
    capture,
    find_blocks,
    plot_attention,
    plot_statistics,
    query_independence,
)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")
# fixed query points (fractions of height, width): upper left, centre, lower right
QUERIES = torch.tensor([[0.3, 0.3], [0.5, 0.55], [0.75, 0.8]], dtype=torch.float64)


def load_photos(size: int, in_chans: int) -> torch.Tensor:
    """The six photos, centre-cropped to a square and resized to ``size``, as floats in [0, 1]."""
    from skimage import color, data, transform

    out = []
    for name in PHOTOS:
        img = getattr(data, name)()
        img = img.astype("float64") / (255.0 if img.max() > 1 else 1.0)
        if img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., :3]
        if in_chans == 1 and img.ndim == 3:
            img = color.rgb2gray(img)
        if in_chans == 3 and img.ndim == 2:
            img = color.gray2rgb(img)
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        img = transform.resize(img, (size, size), anti_aliasing=True)
        t = torch.from_numpy(img).float()
        out.append(t[None] if t.dim() == 2 else t.permute(2, 0, 1))  # [C, H, W]
    return torch.stack(out)  # [6, C, H, W]


def _shrink(png: Path) -> None:
    """Re-save a PNG with a 256-colour palette (about 3x smaller; photos overlaid with heatmaps)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="run directory or .safetensors from `globalctx train`")
    p.add_argument("--model", default="resnet18_small", help="model when no --run (default resnet18_small)")
    p.add_argument("--attn", default="nl", help="block when no --run (default nl)")
    p.add_argument("--base-width", type=int, default=16, help="base width when no --run (default 16)")
    p.add_argument("--in-chans", type=int, default=3, choices=(1, 3), help="channels when no --run (default 3)")
    p.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    p.add_argument("--seed", type=int, default=0, help="init seed when no --run (default 0)")
    p.add_argument(
        "--embed-gain",
        type=float,
        default=None,
        help="re-draw the linear layers of NL/DNL blocks with std gain/sqrt(fan_in) (an untrained, "
        "non-uniform attention for illustration; default: keep the model's weights)",
    )
    p.add_argument("--max-queries", type=int, default=256, help="see globalctx.analysis.query_independence")
    p.add_argument("--dpi", type=int, default=72, help="PNG resolution (default 72: panels ~ image size)")
    p.add_argument("--no-stats", action="store_true", help="figures only (skip the statistics)")
    p.add_argument("--prefix", default="photos", help="file name prefix (default photos)")
    p.add_argument("--out", required=True, help="output directory for the PNGs")
    args = p.parse_args(argv)

    if args.run:
        from globalctx.train.checkpoint import load_model

        model, cfg = load_model(args.run)
        in_chans = int(cfg["model"]["kwargs"].get("in_chans", 3))
        mean, std = cfg.get("data", {}).get("mean", [0.0]), cfg.get("data", {}).get("std", [1.0])
        source = (
            f"trained run `{Path(args.run).name}` ({cfg['model']['name']}, attn={cfg['model']['kwargs'].get('attn')})"
        )
    else:
        torch.manual_seed(args.seed)
        in_chans = args.in_chans
        model = globalctx.create_model(
            args.model, num_classes=10, in_chans=in_chans, attn=args.attn, base_width=args.base_width
        ).eval()
        mean, std = [0.5] * in_chans, [0.25] * in_chans
        source = f"randomly initialised {args.model} + {args.attn} (seed {args.seed}, no training)"

    if args.embed_gain is not None:
        g = torch.Generator().manual_seed(args.seed)
        for block in find_blocks(model).values():
            if block_kind(block) != "pairwise":
                continue
            for m in block.modules():
                if isinstance(m, torch.nn.Linear):
                    with torch.no_grad():
                        m.weight.normal_(0.0, args.embed_gain / m.in_features**0.5, generator=g)
        source += f", NL/DNL linear layers re-drawn with gain {args.embed_gain:g}"

    photos = load_photos(args.size, in_chans)  # [6, C, H, W] in [0, 1]
    x = (photos - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), capture(model, queries=QUERIES, record_io=False) as rec:
        model(x)
    for block in rec.blocks:
        png = out / f"{args.prefix}_{block}.png"
        plot_attention(photos, rec, block, png, title=f"{block} on scikit-image photos: {source}", dpi=args.dpi)
        _shrink(png)
        print(f"wrote {png}")
    if args.no_stats:
        return 0
    stats = query_independence(model, [x], max_queries=args.max_queries)
    plot_statistics(stats, out / f"{args.prefix}_stats.png", title=f"Statistics on the 6 photos: {source}")
    print(f"\nSource: {source}; photos {', '.join(PHOTOS)} at {args.size}x{args.size}.\n")
    print(stats.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
