"""Snapshots during training and the query-independence statistics over them, on a tiny run."""

import json

import pytest
import torch

from globalctx.analysis.over_training import list_snapshots, over_training
from globalctx.cli import main
from globalctx.models import Placement
from globalctx.train.checkpoint import CheckpointError, read_weights
from globalctx.train.config import TrainConfig
from globalctx.train.loop import fit, snapshot_path

pytest.importorskip("safetensors")


def _tiny(out, **kw):
    nl = Placement("nl", stages=(4,), indices=(-1,), position="after_add", embed_gain=1.0).to_dict()
    base = dict(model="resnet18_small", attn=nl, model_kwargs={"base_width": 4}, subset=64, val_subset=16,
                epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.0, threads=1, out=str(out), tensorboard=False,
                progress=False, snapshots=(0, 2, 5, 8))  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_snapshots_written_at_steps_and_analysed(tmp_path):
    run = tmp_path / "run"
    fit(_tiny(run), log=lambda s: None)
    snaps = list_snapshots(run)
    assert [s for s, _ in snaps] == [0, 2, 5, 8]  # 4 steps per epoch, 2 epochs
    first, _ = read_weights(snapshot_path(run, 0))
    last, _ = read_weights(snapshot_path(run, 8))
    final, _ = read_weights(run / "last.safetensors")
    assert all(torch.equal(last[k], final[k]) for k in final)  # the step-8 snapshot is the end of training
    assert not all(torch.equal(first[k], final[k]) for k in final)  # the step-0 snapshot is the init
    x = torch.randn(8, 1, 28, 28)
    ot = over_training(run, [x], max_queries=16)
    assert ot.steps == [0, 2, 5, 8] and ot.blocks == ["layer4.1.attn_add"]
    cos = ot.series("layer4.1.attn_add", "att_cos")
    assert len(cos) == 4 and len(set(cos)) == 4  # the maps change over training
    assert all(0 < v < 1 for v in ot.series("layer4.1.attn_add", "att_entropy"))


def test_cli_over_training(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    fit(_tiny(run, epochs=1, snapshots=(0, 4)), log=lambda s: None)
    out = tmp_path / "a"
    assert main(["analyze", str(run), "--over-training", "--images", "10", "--out", str(out)]) == 0
    d = json.loads((out / "over_training.json").read_text())
    assert d["steps"] == [0, 4] and (out / "over_training.png").stat().st_size > 1000
    assert "| 4 |" in (out / "over_training.md").read_text()


def test_no_snapshots_names_the_flag(tmp_path):
    run = tmp_path / "run"
    fit(_tiny(run, epochs=1, snapshots=()), log=lambda s: None)
    with pytest.raises(CheckpointError, match="--snapshots"):
        over_training(run, [torch.randn(2, 1, 28, 28)])


def test_bad_snapshots_refused():
    with pytest.raises(ValueError, match="snapshots"):
        TrainConfig(snapshots=(-1,))


def test_train_cli_snapshots_flag(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--model", "resnet18_small", "--attn", "gc", "--base-width", "16", "--subset", "32",
            "--val-subset", "8", "--epochs", "1", "--batch-size", "16", "--snapshots", "2,0", "--threads", "1",
            "--out", str(run), "--no-tensorboard", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert [s for s, _ in list_snapshots(run)] == [0, 2]
    bad = [*args]
    bad[bad.index("2,0")], bad[bad.index(str(run))] = "2,x", str(tmp_path / "x")
    try:
        code = main(bad)
    except SystemExit as e:  # argparse's own exit
        code = e.code
    assert code != 0 and not (tmp_path / "x").exists()
