"""Every ``python`` code block of README.md and docs/*.md runs.

A block runs in a fresh namespace, inside a temporary working directory. An HTML comment on the
line just above the opening fence changes that:

- ``<!-- example: continues -->``: run in the namespace left by the previous block of the file
  (for a page that builds one example over several blocks);
- ``<!-- example: requires timm torchvision -->``: the block needs those optional packages; it
  carries the ``timm`` marker, so it runs in ``make test-interop`` and not in the default suite;
- ``<!-- example: pseudo-code -->``: not Python meant to run (a signature sketch); so that a
  runnable example is not hidden this way, it is checked not to compile or to contain ``...``.

A page with a failing example fails here with the file and line of the block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*example:\s*(.*?)\s*-->\s*$")


@dataclass
class Example:
    page: Path
    line: int
    code: str
    continues: bool
    requires: tuple[str, ...]
    pseudo: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples_of(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        above = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        words = (DIRECTIVE.search(above).group(1).split() if DIRECTIVE.search(above) else []) or [""]
        kind, args = words[0], tuple(words[1:])
        if kind not in ("", "continues", "requires", "pseudo-code"):
            raise ValueError(f"{page}:{line}: unknown example directive {kind!r}")
        requires = args if kind == "requires" else ()
        out.append(Example(page, line, m.group(1), kind == "continues", requires, kind == "pseudo-code"))
    return out


def _chains() -> list[list[Example]]:
    """Examples grouped so that a ``continues`` block runs after the blocks it continues."""
    chains: list[list[Example]] = []
    for page in PAGES:
        for ex in examples_of(page):
            if ex.continues and chains and chains[-1][0].page == page:
                chains[-1].append(ex)
            else:
                chains.append([ex])
    return chains


def _compiles(code: str) -> bool:
    try:
        compile(code, "<example>", "exec")
    except SyntaxError:
        return False
    return True


def _param(chain: list[Example]):
    requires = sorted({r for ex in chain for r in ex.requires})
    marks = [pytest.mark.timm] if requires else []
    return pytest.param(chain, id=chain[0].id if len(chain) == 1 else f"{chain[0].id}+{len(chain) - 1}", marks=marks)


CHAINS = _chains()


def test_the_pages_have_examples():
    assert sum(len(c) for c in CHAINS) >= 15


@pytest.mark.parametrize("chain", [_param(c) for c in CHAINS])
def test_example_runs(chain: list[Example], tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in sorted({r for ex in chain for r in ex.requires}):
        pytest.importorskip(name)  # only under the timm marker: the interop environment has them
    namespace: dict = {"__name__": "__example__"}
    for ex in chain:
        if ex.pseudo:
            assert "..." in ex.code or not _compiles(ex.code), f"{ex.id}: marked pseudo-code but is runnable Python"
            continue
        try:
            exec(compile(ex.code, ex.id, "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - re-raised with the page and line
            raise AssertionError(f"{ex.id}: example fails: {type(e).__name__}: {e}") from e
