"""``globalctx compare``: the main job in a reduced form (real Fashion-MNIST images, 2 variants x 2
seeds, one epoch): its table, verdicts and figures against results.csv; resume of an interrupted
comparison; what it refuses to overwrite; presets, seeds and variant lists."""

import argparse
import csv
import json
import re

import pytest

from globalctx import compare as C
from globalctx.cli import main
from globalctx.cli.compare import _settings, add_parser
from globalctx.compare import plan as P
from globalctx.compare import report as R
from globalctx.compare import run as RUN
from globalctx.compare.presets import get_preset
from globalctx.compare.stats import mean_interval
from globalctx.train import checkpoint as ckpt

TINY = ["--subset", "256", "--val-subset", "300", "--epochs", "1", "--base-width", "8", "--threads", "1",
        "--no-latency", "--no-progress"]  # fmt: skip


def _argv(out, *extra, variants="none,gc"):
    return ["compare", "--variants", variants, "--seeds", "2", *TINY, "--out", str(out), *extra]


def _results(out):
    return {(r["variant"], int(r["seed"])): float(r["top1"]) for r in csv.DictReader(open(out / "results.csv"))}


@pytest.fixture(scope="module")
def uninterrupted(fmnist, tmp_path_factory):
    """One uninterrupted reduced comparison (2 variants x 2 seeds), shared by the tests below."""
    out = tmp_path_factory.mktemp("cmp") / "full"
    assert main(_argv(out)) == 0
    return out


def test_reduced_compare_table_verdicts_figures_agree_with_results_csv(uninterrupted, capsys):
    out = uninterrupted
    for f in ("report.md", "results.csv", "summary.json", "compare.json", "accuracy.png", "curves.png",
              "none/seed0/config.json", "gc/seed1/last.safetensors"):  # fmt: skip
        assert (out / f).is_file(), f
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("gc", "0"), ("gc", "1"), ("none", "0"), ("none", "1")]
    assert all(r["val_n"] == "300" and 0 <= float(r["top1"]) <= 1 and int(r["params"]) > 0 for r in rows)
    acc = _results(out)
    report = (out / "report.md").read_text()
    table = report.split("## Results", 1)[1].split("\n\n", 2)[1]
    lines = {ln.split("|")[2].strip(" `"): [c.strip() for c in ln.split("|")[1:-1]] for ln in table.splitlines()[2:]}
    assert set(lines) == {"none", "gc"}
    assert "verdict" in table.splitlines()[0]
    for v in ("none", "gc"):
        iv = mean_interval([100 * acc[(v, s)] for s in (0, 1)])
        assert lines[v][3] == f"{iv.mean:.2f} ± {iv.half_width:.2f}", lines[v]
    diff = mean_interval([100 * (acc[("gc", s)] - acc[("none", s)]) for s in (0, 1)])
    assert lines["gc"][4] == f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
    expected = "better" if diff.low > 0 else "worse" if diff.high < 0 else "not resolved"
    assert lines["gc"][5] == expected and lines["none"][4] == "(baseline)"
    # summary.json carries the same statistics and the machine
    s = json.loads((out / "summary.json").read_text())
    assert s["statistics"]["differences"][0]["verdict"] == expected
    assert s["statistics"]["variants"][0]["top1"] == pytest.approx([100 * acc[("none", 0)], 100 * acc[("none", 1)]])
    assert {"cpu", "torch", "threads", "machine"} <= set(s["environment"]) and s["environment"]["threads"] == "1"
    # the error-bar figure is referenced in the report; the reading states the resolvable delta
    assert "![accuracy.png](accuracy.png)" in report and "![curves.png](curves.png)" in report
    assert "## Reading" in report and f"about {diff.half_width:.2f} pp" in report
    assert "same machine only" in report
    # the main job's report carries the GCNet query-independence analysis of its GC variant
    assert "## Analysis: query independence (GCNet Table 1)" in report and "this section failed" not in report


def test_rerun_trains_nothing_and_rebuilds_the_report(uninterrupted, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(RUN, "fit", lambda *a, **k: calls.append(a) or pytest.fail("a finished run was retrained"))
    (uninterrupted / "report.md").unlink()
    assert main(_argv(uninterrupted)) == 0
    assert calls == [] and (uninterrupted / "report.md").is_file()
    assert "4 finished already, 0 to train" in capsys.readouterr().err


def test_resume_after_interruption_trains_only_the_rest_and_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    real_fit = RUN.fit
    calls = []

    def killed_in_second_run(cfg, **kw):  # the second run stops after one step, as a kill would leave it
        calls.append((cfg.out, kw.get("resume")))
        if len(calls) == 2:
            real_fit(cfg.replace(max_steps=1), **kw)
            raise KeyboardInterrupt
        return real_fit(cfg, **kw)

    out = tmp_path / "cmp"
    monkeypatch.setattr(RUN, "fit", killed_in_second_run)
    assert main(_argv(out)) == 130
    assert len(calls) == 2 and not (out / "report.md").exists()
    assert (out / "gc/seed0/last.state.pt").is_file()  # the interrupted run left its checkpoint

    calls.clear()
    monkeypatch.setattr(RUN, "fit", lambda cfg, **kw: calls.append((cfg.out, kw.get("resume"))) or real_fit(cfg, **kw))
    assert main(["compare", "--resume", str(out), "--no-latency", "--no-progress"]) == 0
    trained = [(re.sub(r".*/cmp/", "", o), r is not None) for o, r in calls]
    assert trained == [("gc/seed0", True), ("none/seed1", False), ("gc/seed1", False)]  # not none/seed0
    assert _results(out) == _results(uninterrupted)  # same machine, same threads: bit-identical accuracies


def test_a_failing_run_keeps_the_others_and_is_reported(fmnist, tmp_path, monkeypatch, capsys):
    real_fit = RUN.fit

    def fails_for_eca_seed1(cfg, **kw):
        if cfg.out.endswith("eca/seed1"):
            raise RuntimeError("disk full")
        return real_fit(cfg, **kw)

    monkeypatch.setattr(RUN, "fit", fails_for_eca_seed1)
    out = tmp_path / "cmp"
    assert main(_argv(out, variants="none,eca")) == 1
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "`eca`, seed 1: RuntimeError: disk full" in report
    assert len(_results(out)) == 3 and "| ECA | `eca` | 1 |" in report  # the table says eca has one seed
    monkeypatch.setattr(RUN, "fit", real_fit)
    capsys.readouterr()
    assert main(_argv(out, variants="none,eca")) == 0
    assert "3 finished already, 1 to train" in capsys.readouterr().err and len(_results(out)) == 4


def test_refuses_a_directory_that_is_not_this_comparison(fmnist, tmp_path, uninterrupted, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(_argv(other)) == 2
    assert "holds no comparison" in capsys.readouterr().err and (other / "notes.txt").read_text() == "keep me"
    # the same --out with other settings: refused, nothing trained
    argv = _argv(uninterrupted)
    argv[argv.index("--epochs") + 1] = "2"
    assert main(argv) == 2
    assert "holds a comparison with other settings: epochs=2 (found 1)" in capsys.readouterr().err
    # a variant that cannot be built at this width fails before anything is trained
    assert main(_argv(tmp_path / "se8", variants="none,se")) == 2
    assert "variant 'se' does not fit resnet18_small" in capsys.readouterr().err
    assert not list((tmp_path / "se8").glob("*/seed0/last.state.pt"))


def test_finished_is_decided_by_checkpoint_and_config_not_by_the_directory(tmp_path):
    cfg = C.default_config(epochs=2)
    run = P.plan_runs(cfg, ["gc"], [0], tmp_path)[0]
    assert P.run_status(run)[0] == "missing"
    run.run_dir.mkdir(parents=True)
    assert P.run_status(run)[0] == "missing"  # an empty directory is not a run
    (run.run_dir / "x").write_text("")
    assert P.run_status(run)[0] == "other"
    (run.run_dir / "x").unlink()
    config = {"format": ckpt.FORMAT, "model": {"name": "m", "kwargs": {}}, "train": run.config.to_dict()}
    ckpt.write_config(run.run_dir, config)
    assert P.run_status(run)[0] == "partial"  # config matches, no checkpoint yet
    config["train"]["epochs"] = 3
    ckpt.write_config(run.run_dir, config)
    status, why = P.run_status(run)
    assert status == "other" and "epochs=2 (found 3)" in why


def test_presets_expand_to_the_documented_lists():
    gc = get_preset("gcnet-ablation").variants()
    assert gc == ["none", "nl@stages=3@indices=-1@before_add", "snl@stages=3@indices=-1", "gc@stages=3@indices=-1",
                  "gc(rd_ratio=1/4)@stages=3@indices=-1", "gc", "gc@after_add", "gc@stages=2", "gc@stages=3",
                  "gc@stages=4", "snl", "gc(norm=false)", "gc(rd_ratio=1/4)", "gc(pooling=avg)",
                  "gc(pooling=avg,fusion=mul)", "gc(fusion=mul)"]  # fmt: skip
    nl = get_preset("nl-ablation").variants()
    assert nl == ["none", "nl(pairwise=gaussian)@stages=3@indices=-2", "nl@stages=3@indices=-2",
                  "nl(pairwise=dot_product)@stages=3@indices=-2", "nl(pairwise=concatenation)@stages=3@indices=-2",
                  "nl@stages=1@indices=-2", "nl@stages=2@indices=-2", "nl@stages=4@indices=-2", "nl"]  # fmt: skip
    for name, budget in C.PRESET_BUDGETS.items():
        cfg = C.default_config(preset=name)
        want = {k: budget.get(k, C.DEFAULT_SETTINGS[k]) for k in ("subset", "epochs")}
        assert (cfg.subset, cfg.epochs, cfg.val_subset) == (want["subset"], want["epochs"], None)
    p = argparse.ArgumentParser().add_subparsers()
    args = add_parser(p).parse_args(["--preset", "gcnet-ablation"])
    base, variants, seeds, preset, _ = _settings(args)
    budget = C.PRESET_BUDGETS["gcnet-ablation"]
    assert (variants, seeds, preset, base.subset) == (None, str(budget["seeds"]), "gcnet-ablation", budget["subset"])


def test_seeds_and_variant_lists():
    assert C.parse_seeds("3") == [0, 1, 2] and C.parse_seeds("3", first=5) == [5, 6, 7]
    assert C.parse_seeds("0,4,2") == [0, 4, 2] and C.parse_seeds("7,") == [7] and C.parse_seeds([1, 2]) == [1, 2]
    for bad in ("0", "1,1", "a", "-1,2"):
        with pytest.raises(ValueError, match="seeds"):
            C.parse_seeds(bad)
    assert C.parse_variant_list("none,gc") == ["none", "gc"]
    assert C.parse_variant_list("none gc(pooling=avg,fusion=mul) gc@stages=3,4;nl@indices=0,-1") == [
        "none", "gc(pooling=avg,fusion=mul)", "gc@stages=3,4", "nl@indices=0,-1"]  # fmt: skip
    assert C.parse_variant_list("gc(rd_ratio=0.25), gc(rd_ratio=1/4), none") == ["gc(rd_ratio=1/4)", "none"]
    with pytest.raises(ValueError, match="unknown block 'xx'"):
        C.parse_variant_list("gc,xx")
    run, skipped = C.resolve_variants(None)
    assert run[0] == "none" and set(run) | set(skipped) == set(C.DEFAULT_VARIANTS)


def test_run_dir_names_are_stable_and_safe():
    assert P.run_dir_name("none") == "none" and P.run_dir_name("gc") == "gc"
    a = P.run_dir_name("gc(rd_ratio=1/4)@stages=3")
    assert re.fullmatch(r"[a-z0-9_-]+", a) and a == P.run_dir_name("gc(rd_ratio=1/4)@stages=3")
    assert a != P.run_dir_name("gc(rd_ratio=1/4)@stages=4")


def test_default_config_is_the_documented_one():
    cfg = C.default_config()
    assert (cfg.model, cfg.model_kwargs, cfg.subset, cfg.epochs, cfg.val_subset) == (
        "resnet18_small", {"base_width": 16}, C.DEFAULT_SETTINGS["subset"], C.DEFAULT_SETTINGS["epochs"], None)
    assert C.default_config(True).subset is None and C.default_config(epochs=1).eval_every == 1
    assert C.DEFAULT_VARIANTS[0] == "none" and C.DEFAULT_SEEDS >= 3


def test_compare_extra_sections_and_a_failing_one(tmp_path):
    seen = []

    def extra(ctx):
        seen.append(ctx.variants)
        return ("Extra statistics", "extra section body")

    def broken(ctx):
        raise RuntimeError("boom")

    ctx = C.CompareContext(tmp_path, C.default_config(), ["none"])
    sections = C.build_report_sections(ctx, [extra, lambda ctx: None, broken])
    titles = [t for t, _ in sections]
    # no finished run: no statistics; no attention blocks: no analysis; the failing one becomes a note
    assert titles == ["Settings", "Results", "Context", "Extra statistics", "broken"], titles
    assert sections[3][1] == "extra section body" and "boom" in sections[-1][1] and seen == [["none"]]
    path = R.write_report(ctx, sections=[extra])
    assert "## Extra statistics\n\nextra section body" in path.read_text()


def test_a_signal_stops_the_comparison_and_keeps_the_checkpoint(fmnist, tmp_path, monkeypatch, capsys):
    real_fit = RUN.fit

    def signalled_in_first_run(cfg, **kw):  # what fit returns after SIGINT/SIGTERM: checkpoint saved
        res = real_fit(cfg.replace(max_steps=2), **kw)
        return {**res, "status": "interrupted", "signal": 2}

    monkeypatch.setattr(RUN, "fit", signalled_in_first_run)
    out = tmp_path / "cmp"
    assert main(_argv(out, variants="none,eca")) == 130
    err = capsys.readouterr().err
    assert f"continue with globalctx compare --resume {out}" in err and not (out / "report.md").exists()
    run = P.plan_runs(C.default_config(), ["none"], [0], out)[0]
    assert (run.run_dir / "last.state.pt").is_file() and P.finished_state(run) is None
