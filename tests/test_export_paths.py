"""The README's export table, cell by cell: every ✓ gives the eager numbers, every ✗ still fails.

Paths: ``torch.jit.script``, ``torch.jit.trace``, ``torch.fx.symbolic_trace``, ``torch.export``,
``torch.compile(fullgraph=True)`` (``aot_eager`` backend) and ONNX (``torch.onnx.export`` with
the TorchScript-based exporter, checked by ``onnx.checker`` and run by onnx's reference
evaluator). Block rows run in the default suite; the ResNet-50 rows are ``slow`` (about 30 s each)
and run under ``make test-interop``.
"""

import io
import re
import warnings
from pathlib import Path

import pytest
import torch

import globalctx
from globalctx.layers import list_blocks
from test_block_contract import build, perturb

README = Path(__file__).resolve().parents[1] / "README.md"
PATHS = ("script", "trace", "fx", "export", "compile", "onnx")
MODELS = ("resnet50", "gc_resnet50", "nl_resnet50")
TOL = dict(rtol=1e-4, atol=1e-4)


def read_table() -> dict[str, dict[str, str]]:
    text = README.read_text(encoding="utf-8")
    body = text.split("<!-- export-table -->", 1)[1].split("<!-- /export-table -->", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.strip().splitlines()]
    head = [h.lower() for h in rows[0][1:]]
    assert head == list(PATHS), head
    return {r[0].strip("`"): dict(zip(PATHS, r[1:])) for r in rows[2:]}


TABLE = read_table()


def test_table_has_every_block_and_model():
    assert list(TABLE) == [*list_blocks(), *MODELS]
    assert {c for row in TABLE.values() for c in row.values()} <= {"✓", "✗", "◐"}


def _subject(name):
    if name in MODELS:
        torch.manual_seed(0)
        return globalctx.create_model(name).eval(), torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    return perturb(build(name)).eval(), torch.randn(2, 16, 8, 8)


def _onnx_graph(m, x):
    onnx = pytest.importorskip("onnx", reason="onnx is in the dev extra")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), f, dynamo=False, opset_version=17)
    model = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(model, full_check=True)
    return model


def _onnx_run(model, x):
    from onnx.reference import ReferenceEvaluator

    return torch.from_numpy(ReferenceEvaluator(model).run(None, {model.graph.input[0].name: x.numpy()})[0])


def run_path(m, x, path):
    """The output of ``m`` taken through ``path`` on ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation, tracer warnings
        if path == "script":
            return torch.jit.script(m)(x)
        if path == "trace":
            return torch.jit.trace(m, x, check_trace=False)(x)
        if path == "fx":
            return torch.fx.symbolic_trace(m)(x)
        if path == "export":
            return torch.export.export(m, (x,)).module()(x)
        if path == "compile":
            torch._dynamo.reset()
            return torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    return _onnx_run(_onnx_graph(m, x), x)


CELLS = [
    pytest.param(name, path, marks=[pytest.mark.slow] if name in MODELS else [], id=f"{name}-{path}")
    for name in TABLE
    for path in PATHS
]


@pytest.mark.parametrize("name, path", CELLS)
def test_cell(name, path):
    cell = TABLE[name][path]
    m, x = _subject(name)
    with torch.no_grad():
        want = m(x)
        if cell == "✓":
            torch.testing.assert_close(run_path(m, x, path), want, **TOL)
        elif cell == "✗":
            with pytest.raises(Exception):  # noqa: B017  any failure: the table says unsupported
                run_path(m, x, path)
        else:  # ◐: exports and passes the checker; the reference evaluator refuses the graph
            assert path == "onnx"
            graph = _onnx_graph(m, x)
            with pytest.raises(ValueError, match="Axis must be a rank-0 tensor"):
                _onnx_run(graph, x)


@pytest.mark.parametrize("size", [(9, 9), (16, 16), (8, 7)])
def test_traced_fca_refuses_another_size(size):
    m, x = _subject("fca")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(m, x, check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), m(x))
        want = rf"fca: this module was traced at input size 8x8 and got {size[0]}x{size[1]}"
        with pytest.raises(Exception, match=want):
            traced(torch.randn(2, 16, *size))
        assert m(torch.randn(2, 16, *size)).shape == (2, 16, *size)  # eager takes any size


def test_readme_says_torchscript_is_deprecated():
    text = README.read_text(encoding="utf-8")
    assert re.search(r"TorchScript is deprecated", text)
