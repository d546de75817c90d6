"""One progress display for long commands: a tqdm bar on stderr, plain ``[done/total] text``
lines, or nothing (tqdm is imported only when a bar is wanted)."""

from __future__ import annotations

import sys

__all__ = ["Progress", "PROGRESS_MODES"]

PROGRESS_MODES = ("auto", "bar", "plain", "none")


class Progress:
    """Progress of ``total`` steps, starting at ``initial``.

    Args:
        total: number of steps.
        mode: ``"auto"`` (a tqdm bar when tqdm is importable, else plain lines), ``"bar"`` (a tqdm
            bar when importable, else nothing), ``"plain"`` (one line per step on stderr) or
            ``"none"``.
        desc: label of the bar.
        initial: steps already done (a resumed epoch).
        unit: what a step is (``"case"``, ``"it"``).
    """

    def __init__(self, total: int, *, mode: str = "auto", desc: str | None = None, initial: int = 0, unit: str = "it"):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode {mode!r} is not valid; choose one of {', '.join(PROGRESS_MODES)}")
        self.total, self.done, self.mode, self.bar = total, initial, mode, None
        if mode in ("auto", "bar"):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self.mode = "plain" if mode == "auto" else "none"
            else:
                self.bar = tqdm(
                    total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True
                )

    def advance_to(self, done: int, text: str = "", **postfix) -> None:
        """Move to ``done`` steps; the bar shows ``text`` or the ``postfix`` values."""
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(refresh=False, **postfix)
            elif text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(done - self.done)
        elif self.mode == "plain":
            print(f"[{done}/{self.total}] {text}", file=sys.stderr, flush=True)
        self.done = done

    def step(self, text: str = "") -> None:
        """One more step done."""
        self.advance_to(self.done + 1, text)

    def note(self, text: str, *, plain: bool = True) -> None:
        """Show ``text`` without advancing (the bar's postfix; a plain line if ``plain``)."""
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        elif self.mode == "plain" and plain:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
