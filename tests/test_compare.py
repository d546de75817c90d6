"""``globalctx compare``: the README's main job in a reduced form (real Fashion-MNIST images, two
variants, one epoch), its files, printed table and the report-section hook."""

import csv

import pytest

from globalctx.cli import main
from globalctx.train import compare as C


def test_compare_reduced_main_job(fmnist, tmp_path, capsys, monkeypatch):
    seen = []

    def extra(ctx):
        seen.append(sorted(ctx.run_dirs))
        return ("Extra statistics", "hook section body")

    # the registered sections (the attention analysis) stay, plus a test hook and one that adds nothing
    monkeypatch.setattr(C, "_EXTRA_SECTIONS", [*C._EXTRA_SECTIONS, extra, lambda ctx: None])
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--subset",
        "256",
        "--val-subset",
        "200",
        "--epochs",
        "1",
        "--variants",
        "none,gc",
        "--base-width",
        "8",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| none |" in printed and "| gc |" in printed and str(out / "report.md") in printed
    for f in ("report.md", "results.csv", "curves.png", "none/config.json", "gc/best.safetensors"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["variant"] for r in rows] == ["none", "gc"]
    for r in rows:
        assert 0.0 <= float(r["top1"]) <= 1.0 and int(r["params"]) > 0 and float(r["macs_m"]) > 0
    assert float(rows[0]["delta_pp"]) == 0.0
    assert int(rows[1]["params"]) > int(rows[0]["params"])  # the gc blocks add parameters
    report = (out / "report.md").read_text()
    assert "## Results" in report and "## Extra statistics\n\nhook section body" in report
    assert "94.9%" in report and "256 images" in report and "200 images" in report
    assert seen == [["gc", "none"]]
    # the main job's report carries the GCNet query-independence analysis of its GC variant
    assert "## Analysis: query independence (GCNet Table 1)" in report and "this section failed" not in report
    assert (out / "analysis_stats.png").is_file()


def test_compare_sections_survive_a_failing_hook(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(C, "_EXTRA_SECTIONS", [])
    C.register_report_section(broken)
    ctx = C.CompareContext(tmp_path, C.default_config(), ["none"], rows=[{"variant": "none", "top1": 0.5}])
    titles = [t for t, _ in C.build_report_sections(ctx)]
    assert titles[:2] == ["Settings", "Results"] and titles[-1] == "broken"
    assert "boom" in C.build_report_sections(ctx)[-1][1]


def test_resolve_variants():
    run, skipped = C.resolve_variants(None)
    assert run[0] == "none" and set(run) | set(skipped) == set(C.DEFAULT_VARIANTS)
    assert C.resolve_variants("none, gc")[0] == ["none", "gc"]
    with pytest.raises(ValueError, match="unknown variants \\['xx'\\]"):
        C.resolve_variants("gc,xx")


def test_default_config_is_the_documented_one():
    cfg = C.default_config()
    assert (cfg.model, cfg.model_kwargs, cfg.subset, cfg.epochs) == ("resnet18_small", {"base_width": 16}, 5000, 4)
    assert C.default_config(True).subset is None and C.default_config(epochs=1).epochs == 1
