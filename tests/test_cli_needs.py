"""Every command checks the optional packages it cannot run without before doing any work.

A missing package is simulated by a ``None`` entry in ``sys.modules`` (Python's own way to make an
import fail with ModuleNotFoundError), in this process or in a child process.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from globalctx.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _hide(monkeypatch, *names):
    for name in names:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_error(capsys, cmd: str, needs: str, missing: str, extra: str = "train") -> None:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    verb = "are" if "," in missing else "is"
    assert err == (
        f"globalctx {cmd}: error: {needs} needs {missing}, which {verb} not installed: pip install 'globalctx[{extra}]'"
    )


def test_train_without_safetensors_stops_before_the_run_directory(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "safetensors")
    out = tmp_path / "run"
    assert main(["train", "--subset", "64", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "train", "training", "safetensors")
    assert not out.exists()


def test_train_with_imagefolder_data_needs_pillow_too(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "safetensors", "PIL")
    out = tmp_path / "run"
    assert main(["train", "--data", f"imagefolder:{tmp_path}/a,{tmp_path}/b", "--out", str(out)]) == 2
    _one_line_error(capsys, "train", "training", "safetensors, PIL")
    assert not out.exists()


def test_resume_without_safetensors_is_refused_before_anything(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"train": {"epochs": 1}}')
    before = sorted(p.name for p in run.iterdir())
    _hide(monkeypatch, "safetensors")
    assert main(["train", "--resume", str(run)]) == 2
    _one_line_error(capsys, "train", "training", "safetensors")
    assert sorted(p.name for p in run.iterdir()) == before


def test_compare_without_matplotlib_stops_before_the_report_directory(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "matplotlib")
    out = tmp_path / "cmp"
    assert main(["compare", "--variants", "none", "--subset", "64", "--epochs", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, "compare", "compare", "matplotlib")
    assert not out.exists()


def test_eval_without_safetensors(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "safetensors")
    assert main(["eval", str(tmp_path / "best.safetensors")]) == 2
    _one_line_error(capsys, "eval", "evaluation", "safetensors")


def test_analyze_without_matplotlib_stops_before_the_output_directory(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "matplotlib")
    out = tmp_path / "analysis"
    assert main(["analyze", str(tmp_path / "missing-run"), "--out", str(out)]) == 2
    _one_line_error(capsys, "analyze", "analysis", "matplotlib")
    assert not out.exists()


def test_bench_plot_without_matplotlib_stops_before_measuring(tmp_path, monkeypatch, capsys):
    import globalctx.cli.bench as bench_cli

    _hide(monkeypatch, "matplotlib")
    monkeypatch.setattr(bench_cli, "run_cases", lambda *a, **k: pytest.fail("benchmark ran before the check"))
    png = tmp_path / "latency.png"
    assert main(["bench", "blocks", "--blocks", "se", "--plot", str(png)]) == 2
    _one_line_error(capsys, "bench", "--plot", "matplotlib", extra="viz")
    assert not png.exists()


def test_a_fresh_process_without_safetensors_gets_one_line(tmp_path):
    """No earlier import in this process can hide the failure: a child interpreter blocks the import."""
    out = tmp_path / "run"
    code = (
        "import sys; sys.modules['safetensors'] = None\n"
        "from globalctx.cli import main\n"
        f"raise SystemExit(main(['train', '--epochs', '1', '--subset', '64', '--out', {str(out)!r}]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""}
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "globalctx train: error: training needs safetensors, which is not installed: pip install 'globalctx[train]'"
    ]
    assert not out.exists()
