"""The ``globalctx`` command: ``main`` and one module per subcommand (``blocks``, ``bench``,
``train``, ``eval``, ``compare``, ``analyze``), each exposing ``add_parser(subparsers)``; shared
flag helpers in :mod:`globalctx.cli.flags`. Heavy optional imports (matplotlib, tensorboard, ...)
stay inside the command functions.

Every command ends a user error (a bad value, a missing file, an unusable checkpoint) with one line
``globalctx <cmd>: error: <message>`` and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..extras import MissingExtraError
from . import analyze, bench, blocks, compare, eval, train
from .flags import user_errors

__all__ = ["CommandParser", "UsageError", "build_parser", "main"]

COMMANDS = (blocks, bench, train, eval, compare, analyze)


class UsageError(Exception):
    """A command line that does not parse; :func:`main` prints it as one line (exit status 2)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message} (see {prog} --help)")


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors become :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="globalctx",
        description="Global-context blocks for ConvNets: catalogue, benchmarks, training, analysis.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (*user_errors(), MissingExtraError) as e:
        print(f"globalctx {args.command}: error: {_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
