"""Nothing lost, no silent wrong answer, around a run directory: a run killed before its first
checkpoint resumes from the start; ``--out`` refuses a non-empty directory that is not this run
(``--overwrite`` replaces deliberately); a resume never shrinks the epochs below what was done."""

import json

import pytest
import torch

from globalctx.cli import main
from globalctx.train import checkpoint as ckpt
from globalctx.train.config import TrainConfig
from globalctx.train.loop import RUN_FILES, TrainError, fit

pytest.importorskip("safetensors", reason="checkpoints are safetensors files")

TINY = dict(
    model="resnet18_small",
    model_kwargs={"base_width": 8},
    subset=64,
    val_subset=50,
    epochs=1,
    batch_size=32,
    lr=0.05,
    warmup_epochs=0.5,
    tensorboard=False,
    progress=False,
    threads=1,
)  # 2 steps per epoch
FLAGS = ["--base-width", "8", "--subset", "64", "--val-subset", "50", "-b", "32", "--lr", "0.05",
         "--warmup-epochs", "0.5", "--threads", "1", "--no-tensorboard", "--no-progress"]  # fmt: skip


def quiet(_):
    pass


def test_resume_of_a_run_killed_before_its_first_checkpoint(fmnist, tmp_path, capsys):
    ref = tmp_path / "ref"
    fit(TrainConfig(**TINY, out=str(ref)), log=quiet)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((ref / "config.json").read_text().replace(str(ref), str(run)))
    # what a run leaves when it is killed after writing config.json, before its first checkpoint
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
    assert main(["train", "--resume", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "completed" and res["global_step"] == 2
    a, _ = ckpt.read_weights(ref / "last.safetensors")
    b, _ = ckpt.read_weights(run / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run as one never interrupted


def _snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    "files",
    [
        {"log.csv": "my,own\n1,2\n", "best.safetensors": "mine"},  # a user's files, no run
        {"last.safetensors": "x", "last.state.pt": "y"},  # a run whose config.json is missing
        {"notes.txt": "keep me"},
    ],
)
def test_out_refuses_a_non_empty_directory(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = _snapshot(out)
    with pytest.raises(TrainError, match=r"not empty and holds no run; pass --resume .* --overwrite"):
        fit(TrainConfig(**TINY, out=str(out)), log=quiet)
    assert main(["train", *FLAGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before  # nothing written, nothing lost


def test_overwrite_replaces_the_run_files_only(fmnist, tmp_path, capsys):
    out = tmp_path / "out"
    fit(TrainConfig(**TINY, out=str(out)), log=quiet)
    (out / "notes.txt").write_text("keep me")
    assert main(["train", *FLAGS, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", *FLAGS, "--out", str(out), "--max-steps", "1", "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 1
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "best.safetensors").exists()  # the old run's best is gone with it
    assert set(RUN_FILES) - {"best.safetensors", "log.csv"} <= {p.name for p in out.iterdir()}
    assert main(["train", "--resume", str(out), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_resume_refuses_fewer_epochs_than_done(fmnist, tmp_path, capsys):
    out = tmp_path / "run"
    fit(TrainConfig(**{**TINY, "epochs": 2}, out=str(out)), log=quiet)
    before = _snapshot(out)
    assert main(["train", "--resume", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 1 is fewer than the run has done (2 epochs); give --epochs 2 or more" in err, err
    assert _snapshot(out) == before and json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    # stopped inside epoch 2: 1 full epoch and part of the next are done
    part = tmp_path / "part"
    fit(TrainConfig(**{**TINY, "epochs": 2}, out=str(part), max_steps=3), log=quiet)
    with pytest.raises(TrainError, match=r"\(1 epochs and part of the next\); give --epochs 2"):
        fit(TrainConfig(**{**TINY, "epochs": 1}, out=str(part)), resume=part, log=quiet)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"gamma": -1.0}, "gamma must be > 0"),
        ({"gamma": float("nan")}, "gamma must be a finite number"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"warmup_epochs": float("nan")}, "warmup_epochs must be a finite number"),
        ({"lr": float("inf")}, "lr must be a finite number"),
    ],
)
def test_config_refuses_nonsense_numbers(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **change})
