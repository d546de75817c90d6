"""``globalctx compare``: the README's main job in a reduced form (real Fashion-MNIST images, two
variants, one epoch), its files, printed table and extra report sections."""

import csv

import pytest

from globalctx import compare as C
from globalctx.cli import main
from globalctx.compare import report as R


def test_compare_reduced_main_job(fmnist, tmp_path, capsys):
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
    assert "## Results" in report
    assert "94.9%" in report and "256 images" in report and "200 images" in report
    # the main job's report carries the GCNet query-independence analysis of its GC variant
    assert "## Analysis: query independence (GCNet Table 1)" in report and "this section failed" not in report
    assert (out / "analysis_stats.png").is_file()


def test_compare_extra_sections_and_a_failing_one(tmp_path):
    seen = []

    def extra(ctx):
        seen.append(ctx.variants)
        return ("Extra statistics", "extra section body")

    def broken(ctx):
        raise RuntimeError("boom")

    ctx = C.CompareContext(tmp_path, C.default_config(), ["none"], rows=[{"variant": "none", "top1": 0.5}])
    sections = C.build_report_sections(ctx, [extra, lambda ctx: None, broken])
    titles = [t for t, _ in sections]
    # no run has attention blocks: the analysis section adds nothing; the failing one becomes a note
    assert titles == ["Settings", "Results", "Context", "Extra statistics", "broken"], titles
    assert sections[3][1] == "extra section body" and "boom" in sections[-1][1] and seen == [["none"]]
    path = R.write_report(ctx, sections=[extra])
    assert "## Extra statistics\n\nextra section body" in path.read_text()


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
