"""``globalctx blocks``: the block catalogue (:func:`globalctx.catalogue.catalogue`), each registered
block with its parameter count and a forward check at a typical shape."""

from __future__ import annotations

import argparse

import torch

from ..catalogue import catalogue, format_table
from .flags import add_threads, shape

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = catalogue(args.shape)
    print(f"globalctx block catalogue at input {list(args.shape)} (torch {torch.__version__}, eval mode, fp32)")
    print(format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def add_parser(sub) -> None:
    p = sub.add_parser("blocks", help="list every registered block with parameters and a forward check")
    p.add_argument(
        "--shape", type=shape(3, 5), default=(2, 256, 14, 14), help="input shape N,C,*S (default: 2,256,14,14)"
    )
    add_threads(p)
    p.set_defaults(func=run)
