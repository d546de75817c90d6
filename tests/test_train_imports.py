"""The package's floors: every import runs down, never up and never sideways between the floors,
and nothing inside imports the package root (``import globalctx``).

    registry, device, progress < layers < models < convert, catalogue < bench, train < analysis < compare < cli

(``convert`` loads other weights into this package's models, so it sits above ``models``.)
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "globalctx"

FLOOR = {
    "registry": 0,
    "device": 0,
    "progress": 0,
    "extras": 0,
    "layers": 1,
    "models": 2,
    "convert": 2.5,
    "catalogue": 2.5,
    "integrations": 2.5,
    "bench": 3,
    "train": 3,
    "analysis": 4,
    "compare": 5,
    "cli": 6,
    "__main__": 7,
}


def _top(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported(path: Path) -> list[str]:
    """Absolute names of the globalctx modules ``path`` imports (inside functions too)."""
    pkg = list(path.relative_to(SRC).parts[:-1])  # the package the file belongs to
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "globalctx"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(["globalctx", *base, *([node.module] if node.module else [])])
                if not node.module:  # from . import x
                    out += [f"{mod}.{a.name}" for a in node.names]
                    continue
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "globalctx":
                out.append(mod)
    return out


FILES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_imports_run_down(path):
    here = _top(path)
    if here not in FLOOR:
        pytest.fail(f"{path.relative_to(SRC)}: module not placed on a floor of this test")
    for name in _imported(path):
        parts = name.split(".")
        assert len(parts) > 1, f"{path.relative_to(SRC)} imports the package root"
        there = parts[1]
        if there == here:
            continue
        assert FLOOR[there] < FLOOR[here], f"{path.relative_to(SRC)} ({here}) imports {name} ({there}): not below"
