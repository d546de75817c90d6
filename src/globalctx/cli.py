"""The ``globalctx`` command. Each subcommand lives in its own module exposing
``add_parser(subparsers)``; modules are imported only to build the parser, and keep their heavy
imports (matplotlib, tensorboard, ...) inside the command function."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module with add_parser(subparsers); a module not present yet is skipped
_COMMANDS = {
    "blocks": "globalctx.catalogue",
    "bench": "globalctx.bench.cli",
    "train": "globalctx.train.cli",
    "eval": "globalctx.train.cli_eval",
    "compare": "globalctx.train.cli_compare",
    "analyze": "globalctx.analysis.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="globalctx",
        description="Global-context blocks for ConvNets: catalogue, benchmarks, training, analysis.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name):
                continue  # that subsystem is not part of this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
