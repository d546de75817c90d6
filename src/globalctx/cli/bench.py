"""``globalctx bench``: parameters, FLOPs, latency and peak memory of blocks and models, side by side.

Examples::

    globalctx bench blocks --shape 8,1024,14,14
    globalctx bench blocks --blocks nl,gc,snl,se --sizes 16,32,64,96 --channels 256 -b 1
    globalctx bench models --models resnet50,gc_resnet50,se_resnet50 --input 8,3,224,224
    globalctx bench blocks --blocks gc,se --out results.csv --out results.json --plot latency.png
    globalctx bench blocks --blocks gc,se,nl --shape 8,1024,14,14 --mode train
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from functools import partial
from pathlib import Path

import torch

from ..bench.peers import available_peers, peer_for
from ..bench.report import machine_info, plot_rows, print_table, write_rows
from ..bench.runner import DTYPES, Case, run_cases
from ..bench.training import MODES
from ..device import resolve_device
from ..extras import require
from ..layers import create_block, get_block, list_blocks
from ..models import create_model, list_models
from .flags import add_batch_size, add_device, add_threads, int_list, number, positive_int, shape
from .train import amp_changes, amp_mode

__all__ = ["add_parser", "build_parser", "run", "split_names", "parse_block_spec"]

OUT_SUFFIXES = (".csv", ".json")


def split_names(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: ``"gc:fusion=('add','mul'),se"`` -> 2 names."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return [t.strip() for t in out if t.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("measurement")
    add_device(g, default="auto")
    g.add_argument(
        "--mode",
        default="inference",
        choices=list(MODES),
        help="what one timed call is: inference (eval, inference_mode), train (train mode, forward + "
        "backward with dL/dx for blocks), train+step (+ an SGD momentum step); floors follow the mode "
        "(default: inference)",
    )
    g.add_argument(
        "--dtype", default="fp32", choices=["fp32", "fp16", "bf16", "fp64"], help="precision of weights and input"
    )
    g.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "thread"],
        help="wall (perf_counter) or thread (CPU time of the calling thread: with --threads 1 it leaves "
        "out time spent descheduled on a shared machine) (default: wall)",
    )
    g.add_argument("--compile", action="store_true", help="time torch.compile(module) (counts use the eager module)")
    g.add_argument(
        "--channels-last", action="store_true", help="modules and 4-D/5-D inputs in channels_last memory format"
    )
    g.add_argument(
        "--amp",
        type=amp_mode,
        nargs="?",
        const=True,
        default=None,
        metavar="{none,bf16,fp16}",
        help="time under torch.autocast of this dtype (weights stay --dtype); a bare --amp takes --amp-dtype "
        "(default fp16, as timm)",
    )
    g.add_argument("--amp-dtype", type=amp_mode, default=None, help="with a bare --amp: float16 or bfloat16")
    g.add_argument(
        "--runs", type=positive_int, default=20, help="timed calls per case; the median is reported (default: 20)"
    )
    g.add_argument(
        "--warmup", type=number(int, low=0), default=3, help="untimed calls per case before timing (default: 3)"
    )
    add_threads(g, help="pin torch intra-op threads to this count (default: torch's setting); reported in every row")
    g.add_argument(
        "--memory",
        default="auto",
        help="peak-memory methods, comma-separated from alloc (torch allocator events), cuda "
        "(max_memory_allocated), rss (fresh subprocess per case, process high-water mark; slow), "
        "or none; auto = cuda on a CUDA device, alloc otherwise (default: auto)",
    )
    g.add_argument(
        "--no-floors",
        action="store_true",
        help="skip the floors (x.sum + x.clone memory floor, bare-GEMM floor) timed with each group",
    )
    g.add_argument(
        "--baseline",
        default=None,
        help="case name to report ratios against (latency, params, MACs, memory) within each group",
    )
    g.add_argument("--seed", type=number(int, low=0), default=0, help="seed for weights and inputs (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        action="append",
        default=[],
        metavar="PATH",
        help="write the rows to PATH (.csv or .json, with machine info); repeat for several files",
    )
    o.add_argument(
        "--plot", metavar="PATH", help="write a PNG of latency and memory per case (log scale; needs matplotlib)"
    )
    o.add_argument(
        "--table",
        default="auto",
        choices=["auto", "rich", "plain", "markdown", "none"],
        help="terminal table style; auto = rich when installed, else plain (default: auto)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines on stderr")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` (with ``blocks`` and ``models``) to the ``globalctx`` command."""
    p = subparsers.add_parser(
        "bench",
        help="parameters, FLOPs, latency and peak memory of blocks and models",
        description="Measure blocks or whole models: parameters, MACs/FLOPs (attention matmuls included), "
        "median latency of interleaved runs, peak memory, ratios to floors and to a baseline.",
        epilog="examples:\n"
        "  globalctx bench blocks --shape 8,1024,14,14\n"
        "  globalctx bench blocks --blocks nl,gc,snl,se --sizes 16,32,64,96 --channels 256 -b 1\n"
        "  globalctx bench models --models resnet50,gc_resnet50,se_resnet50 --input 8,3,224,224\n"
        "  globalctx bench blocks --blocks gc,se --out r.csv --out r.json --plot latency.png\n"
        "  globalctx bench blocks --blocks gc,se,nl --shape 8,1024,14,14 --mode train\n"
        "see 'globalctx bench blocks --help' and 'globalctx bench models --help' for every flag",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bench_what", metavar="WHAT")
    b = sub.add_parser(
        "blocks",
        help="registered blocks at one feature shape, or over a range of resolutions",
        description="Every registered block (or --blocks) at --shape, or at square sizes --sizes with "
        "--channels and --batch. mmcv/timm equivalents are added when importable (--peers).",
    )
    b.add_argument(
        "--blocks",
        type=split_names,
        default=None,
        help="comma-separated block names (default: all registered); options as name:key=value/key=value, "
        "e.g. nl:pairwise='dot_product'/subsample=True",
    )
    b.add_argument("--shape", type=shape(3, 5), default=None, help="input shape N,C,*S (default: 8,1024,14,14)")
    b.add_argument(
        "--sizes", type=int_list, default=None, help="spatial sizes to sweep, e.g. 16,32,64,96 (square, --dims dims)"
    )
    b.add_argument("--channels", type=positive_int, default=256, help="channels C for --sizes (default: 256)")
    add_batch_size(b, default=8, help="batch N for --sizes (default: 8)")
    b.add_argument("--dims", type=int, default=2, choices=[1, 2, 3], help="spatial dims for --sizes (default: 2)")
    b.add_argument(
        "--peers",
        default="auto",
        choices=["auto", "none"],
        help="auto: add mmcv/timm equivalents of the chosen blocks when importable (2-D inputs only)",
    )
    _common(b)
    b.set_defaults(func=run, bench_what="blocks")
    m = sub.add_parser(
        "models",
        help="whole models (from globalctx.create_model)",
        description="Whole models at --input; ratios against the first model unless --baseline says otherwise.",
    )
    m.add_argument(
        "--models", type=split_names, default=["resnet50"], help="comma-separated model names (default: resnet50)"
    )
    m.add_argument(
        "--input", type=shape(3, 5), default=(8, 3, 224, 224), help="input shape N,C,H,W (default: 8,3,224,224)"
    )
    m.add_argument("--num-classes", type=number(int, low=0), default=1000, help="classifier width (default: 1000)")
    _common(m)
    m.set_defaults(func=run, bench_what="models")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globalctx")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def parse_block_spec(spec: str) -> tuple[str, str, dict]:
    """``"nl:pairwise='dot_product'/subsample=True"`` -> (row name, block name, options)."""
    name, _, opts = spec.partition(":")
    options = {}
    for item in filter(None, opts.split("/")):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"block option {item!r} in {spec!r} is not key=value")
        try:
            options[key.strip()] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            options[key.strip()] = val
    return spec, name.strip(), options


def _block_cases(args) -> list[Case]:
    specs = args.blocks or list_blocks()
    if args.shape is not None and args.sizes is not None:
        raise ValueError("give --shape or --sizes, not both")
    if args.sizes is not None:
        shapes = [(args.batch_size, args.channels) + (s,) * args.dims for s in args.sizes]
    else:
        shapes = [args.shape or (8, 1024, 14, 14)]
    parsed = [parse_block_spec(s) for s in specs]
    for _, name, _ in parsed:
        get_block(name)  # unknown names fail before anything runs
    peers = available_peers() if args.peers == "auto" else {}
    cases = []
    for shp in shapes:
        c = shp[1]
        for row, name, opts in parsed:
            cases.append(Case(row, partial(create_block, name, c, **opts), shp, kind="block"))
            if len(shp) == 4 and not opts:
                for peer in peer_for(name, peers):
                    cases.append(Case(peer, partial(peers[peer], c), shp, kind="peer"))
    return cases


def _model_cases(args) -> list[Case]:
    known = set(list_models())
    bad = [m for m in args.models if m not in known]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; known models: {', '.join(sorted(known))}")
    in_chans = args.input[1]
    return [
        Case(
            m,
            partial(create_model, m, num_classes=args.num_classes, in_chans=in_chans),
            args.input,
            kind="model",
            group=f"models@{'x'.join(map(str, args.input))}",
        )
        for m in args.models
    ]


def check_out_paths(paths: list[str], plot: str | None) -> None:
    """Refuse, before anything is measured, an ``--out`` with an unknown suffix and any output path
    whose directory does not exist or cannot be written."""
    for path in paths:
        if Path(path).suffix.lower() not in OUT_SUFFIXES:
            raise ValueError(f"--out {path}: the file name must end in .csv or .json")
    for path in [*paths, *([plot] if plot else [])]:
        parent = Path(path).parent
        if Path(path).is_dir():
            raise ValueError(f"{path} is a directory; give a file name")
        if not parent.is_dir():
            raise ValueError(f"{path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise ValueError(f"{path}: directory {parent} is not writable")


def _memory_methods(text: str, device: torch.device) -> tuple[str, ...]:
    if text == "auto":
        return ("cuda",) if device.type == "cuda" else ("alloc",)
    if text == "none":
        return ()
    methods = tuple(split_names(text))
    for m in methods:
        if m not in ("alloc", "cuda", "rss"):
            raise ValueError(f"unknown --memory method {m!r}; choose from alloc, cuda, rss, none, auto")
    return methods


def run(args) -> int:
    dev = resolve_device(args.device)
    memory = _memory_methods(args.memory, dev)
    check_out_paths(args.out, args.plot)
    if args.plot:  # checked before anything is measured
        require("viz", "matplotlib", feature="--plot")
    cases = _block_cases(args) if args.bench_what == "blocks" else _model_cases(args)
    baseline = args.baseline
    if args.bench_what == "models" and baseline is None:
        baseline = args.models[0]
    if baseline in ("", "none"):
        baseline = None
    rows = run_cases(
        cases,
        device=dev,
        dtype=DTYPES[args.dtype],
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        memory=memory,
        floors=not args.no_floors,
        compile=args.compile,
        baseline=baseline,
        progress="none" if args.no_progress else "auto",
        seed=args.seed,
        channels_last=args.channels_last,
        amp=amp_changes(args).get("amp", "none"),
        mode=args.mode,
        clock=args.clock,
    )
    if args.table != "none":
        info = machine_info()
        numerics = (" channels_last" if args.channels_last else "") + (f" amp {rows[0]['amp']}" if rows else "")
        torch_info = f"{info['threads']} threads, torch {info['torch']}"
        print(f"# {info['cpu']}, {torch_info}, {dev} {args.dtype}{numerics}, {args.mode}")
        print_table(rows, style=args.table)
    for path in args.out:
        write_rows(rows, path)
        print(f"wrote {path}", file=sys.stderr)
    if args.plot:
        plot_rows(rows, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0
