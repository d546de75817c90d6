"""Flag helpers shared by every ``globalctx`` command: one device flag, one batch flag, one shape
parser, and number types that check their range when the command line is parsed (the message
names the flag, e.g. ``argument --gamma: must be a finite number > 0, got -1``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "add_batch_size",
    "add_device",
    "add_threads",
    "add_trust_model_code",
    "device_name",
    "int_list",
    "number",
    "positive_int",
    "shape",
    "user_errors",
]


def number(
    kind: type = float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float | int]:
    """An argparse type: a finite ``kind`` (``int`` or ``float``) in ``[low, high]`` (a bound is
    excluded when ``low_open`` / ``high_open``); anything else is refused naming the valid range."""
    lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
    hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
    what = ("an integer" if kind is int else "a finite number") + (" " if lo or hi else "")
    what += " and ".join(s for s in (lo, hi) if s)

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (
            (kind is float and not math.isfinite(v))
            or (low is not None and (v <= low if low_open else v < low))
            or (high is not None and (v >= high if high_open else v > high))
        ):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


positive_int = number(int, low=1)


def int_list(text: str) -> tuple[int, ...]:
    """``"8,256,14,14"`` or ``"8x256x14x14"`` -> positive integers."""
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return vals


def shape(min_len: int = 3, max_len: int = 5) -> Callable[[str], tuple[int, ...]]:
    """An argparse type for an input shape ``N,C,*S`` of ``min_len`` to ``max_len`` positive integers."""

    def parse(text: str) -> tuple[int, ...]:
        vals = int_list(text)
        if not min_len <= len(vals) <= max_len:
            spatial = f"{min_len - 2}..{max_len - 2}" if min_len != max_len else str(min_len - 2)
            raise argparse.ArgumentTypeError(f"expected N,C and {spatial} spatial sizes, got {text!r}")
        return vals

    parse.__name__ = "shape"
    return parse


def device_name(text: str) -> str:
    """An argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (availability is checked when the
    command runs, by :func:`globalctx.device.resolve_device`)."""
    from ..device import DEVICE_CHOICES

    index = text[5:] if text.startswith("cuda:") else ""
    if text not in ("auto", "cpu", "cuda") and not index.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; choose {DEVICE_CHOICES}")
    return text


def add_device(p, *, default=argparse.SUPPRESS) -> None:
    """``--device`` (auto = CUDA when available, else CPU), the same in every command."""
    p.add_argument(
        "--device", type=device_name, default=default, help="auto (default: cuda when available, else cpu), cpu, cuda"
    )


def add_batch_size(p, *, default, help: str) -> None:
    """``-b/--batch-size`` (``--batch`` is kept as a hidden spelling)."""
    p.add_argument("-b", "--batch-size", dest="batch_size", type=positive_int, default=default, help=help)
    p.add_argument("--batch", dest="batch_size", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_threads(p, *, default=None, help: str = "torch intra-op threads (default: torch's choice)") -> None:
    p.add_argument("--threads", type=positive_int, default=default, help=help)


def add_trust_model_code(p: argparse.ArgumentParser) -> None:
    """``--trust-model-code``: the deliberate way to open a file that names its model as code."""
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        help="allow a run or checkpoint whose config names its model as package.module:callable: that code is "
        "imported and called (only for files you trust; registered model names need no flag)",
    )


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that end a command with one line ``globalctx <cmd>: error: ...`` (exit 2) instead of a
    traceback: bad values, missing or unreadable files, unusable checkpoints, data or runs."""
    from ..train.checkpoint import CheckpointError
    from ..train.data import DataError
    from ..train.loop import TrainError

    return (TrainError, DataError, CheckpointError, ValueError, OSError)
