"""The positive control of the GCNet-finding study: a short training on ``fmnist-pairs`` whose NL maps
move away from uniform; and the study's resumability and report on a tiny configuration."""

import json

import pytest

from globalctx.analysis.over_training import over_training
from globalctx.analysis.report import eval_batches
from globalctx.compare.finding import run_finding, run_spec
from globalctx.train.checkpoint import read_config
from globalctx.train.loop import fit

pytest.importorskip("safetensors")


def test_control_nl_maps_leave_uniform(tmp_path):
    cfg = run_spec("fmnist-pairs", "nl", 0, tmp_path / "nl", settings={"subset": 1280, "val_subset": 64,
                   "batch_size": 32, "model_kwargs": {"base_width": 8}}, threads=1, snapshots=True)  # fmt: skip
    cfg = cfg.replace(snapshots=(0, 40))
    fit(cfg, log=lambda s: None)
    loader, _, _ = eval_batches(read_config(tmp_path / "nl"), images=64, batch_size=32)
    ot = over_training(tmp_path / "nl", loader)
    (block,) = ot.blocks
    ent = ot.series(block, "att_entropy")
    assert ot.steps == [0, 40]
    assert ent[1] < 0.95 and ent[1] < ent[0] - 0.02, ent  # learned maps: lower entropy than at init


@pytest.mark.slow
def test_study_resumes_and_reports(tmp_path):
    pytest.importorskip("matplotlib")
    tiny = {"subset": 128, "val_subset": 32, "batch_size": 32, "model_kwargs": {"base_width": 8}}
    kw = dict(seeds=(0, 1), blocks=("nl", "gc", "dnl"), settings=tiny, images=16, threads=1, log=lambda s: None)
    first = run_finding(tmp_path, **kw)
    assert len(first["runs"]) == 2 * 3 * 2 and (tmp_path / "report.md").exists()
    assert (tmp_path / "maps_fmnist-pairs_dnl.png").exists() and (tmp_path / "over_training_fmnist-canvas.png").exists()
    again = run_finding(tmp_path, **kw)  # everything finished: nothing retrained
    assert again["train_s_this_call"] == 0.0
    assert [r["val_acc"] for r in again["runs"]] == [r["val_acc"] for r in first["runs"]]
    dnl = next(r for r in first["runs"] if r["block"] == "dnl")
    assert {"unary_entropy", "common_share", "att_cos"} <= set(dnl) and 0 <= dnl["common_share"] <= 1
    saved = json.loads((tmp_path / "finding.json").read_text())
    assert set(saved["accuracy"]) == {"fmnist-canvas", "fmnist-pairs"}
    other = tmp_path / "fmnist-canvas" / "nl" / "seed0"
    assert read_config(other)["train"]["lr"] == 0.05
    with pytest.raises(ValueError, match="other settings"):
        run_finding(tmp_path, **{**kw, "settings": {**tiny, "lr": 0.01}})
