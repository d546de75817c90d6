"""A run killed at any instant resumes from its last complete checkpoint, and a full disk during a
checkpoint fails with one line and keeps the previous checkpoint; a divergence in the last step
of an epoch is never saved.

The kill is injected, not timed: a child process counts every write boundary of the run
(before a file is written, once its temporary copy is complete, once it is in place) and
``os._exit``\\ s at the k-th one; for every k, resuming the directory it left ends with files
bit-identical to a run never killed.
"""

import csv
import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from globalctx.cli import main
from globalctx.train import checkpoint as ckpt
from globalctx.train.config import TrainConfig
from globalctx.train.loop import TrainError, fit

pytest.importorskip("safetensors", reason="checkpoints are safetensors files")

TINY = dict(
    model="resnet18_small",
    model_kwargs={"base_width": 4},
    subset=32,
    val_subset=16,
    epochs=2,
    batch_size=16,
    lr=0.05,
    warmup_epochs=0.5,
    tensorboard=False,
    progress=False,
    threads=1,
)  # 2 steps per epoch

# Forks from a parent that has imported torch but run nothing (no thread pool to inherit): each
# kill and each resume is one cheap child instead of one interpreter start.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    from globalctx.train import checkpoint as ckpt
    from globalctx.train.config import TrainConfig
    from globalctx.train.loop import fit

    from globalctx.train.data import load_fashion_mnist

    tiny, root = json.loads(sys.argv[1]), Path(sys.argv[2])
    load_fashion_mnist(train=True), load_fashion_mnist(train=False)  # decoded once, inherited by the children
    original = ckpt.atomic_write

    def inject(kill_at, seen):
        def tick(label):
            seen.append(label)
            if len(seen) == kill_at:
                os._exit(137)  # what SIGKILL leaves: no finally, no flush, temporary files stay

        def atomic_write(path, write):
            name = Path(path).name
            tick("before " + name)

            def complete(tmp):
                write(tmp)
                tick("written " + name)  # the temporary copy is complete, not yet in place

            original(path, complete)
            tick("replaced " + name)

        ckpt.atomic_write = atomic_write

    def child(fn):
        pid = os.fork()
        if pid == 0:
            try:
                fn()
            except BaseException as e:
                print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def quiet(_):
        pass

    def reference():
        seen = []
        inject(0, seen)
        fit(TrainConfig(**tiny, out=str(root / "ref")), log=quiet)
        (root / "boundaries.json").write_text(json.dumps(seen))

    assert child(reference) == 0
    boundaries = json.loads((root / "boundaries.json").read_text())
    codes = {}
    for k in range(1, len(boundaries) + 1):
        run = root / f"k{k}"
        killed = child(lambda: (inject(k, []), fit(TrainConfig(**tiny, out=str(run)), log=quiet)))
        # what the messages say to do: --resume a run, or the same command again when killed
        # before its config.json was in place (only temporary files there)
        resume = run if (run / "config.json").exists() else None
        resumed = child(lambda: fit(TrainConfig(**tiny, out=str(run)), resume=resume, log=quiet))
        codes[k] = [boundaries[k - 1], killed, resumed]
    print(json.dumps(codes))
    """
)


def _files(run):
    tensors = {n: ckpt.read_weights(run / n)[0] for n in ("last.safetensors", "best.safetensors")}
    state = ckpt.load_state(run / "last.state.pt")
    with open(run / "log.csv", newline="") as f:  # every column but the timings
        log = [{k: v for k, v in row.items() if not k.endswith("time_s")} for row in csv.DictReader(f)]
    return tensors, state, log


@pytest.mark.slow
def test_killed_at_every_write_boundary_resumes(fmnist, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(TINY), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    labels = [label for label, _, _ in codes.values()]
    # every file of both checkpoints, each at its three boundaries
    for name in ("config.json", "last.safetensors", "best.safetensors", "last.state.pt", "log.csv"):
        assert {f"before {name}", f"written {name}", f"replaced {name}"} <= set(labels), labels
    assert len(labels) >= 24  # two epochs of checkpoints
    ref_t, ref_s, ref_log = _files(tmp_path / "ref")
    for k, (label, killed, resumed) in codes.items():
        assert killed == 137, f"kill {k} ({label}) did not happen"
        assert resumed == 0, f"resume after a kill at {label} failed: {proc.stderr[-2000:]}"
        t, s, log = _files(tmp_path / f"k{k}")
        for n in ref_t:
            assert all(torch.equal(ref_t[n][key], t[n][key]) for key in ref_t[n]), f"{n} differs after {label}"
        assert s["global_step"] == ref_s["global_step"] and s["weights_sha256"] == ref_s["weights_sha256"], label
        assert log == ref_log and len(log) == 2, f"log.csv differs after a kill at {label}"


def test_a_state_file_killed_before_is_resumed_without_the_newer_weights(fmnist, tmp_path):
    """The case that made a run unresumable: the new last.safetensors in place, the state file not."""
    run = tmp_path / "run"
    fit(TrainConfig(**{**TINY, "epochs": 1}, out=str(run)), log=lambda _: None)
    old_state = (run / "last.state.pt").read_bytes()
    res = fit(TrainConfig(**TINY, out=str(run)), resume=run, log=lambda _: None)
    assert res["status"] == "completed"
    final = ckpt.read_weights(run / "last.safetensors")[0]
    (run / "last.state.pt").write_bytes(old_state)  # last.safetensors is epoch 2's, the state epoch 1's
    res = fit(TrainConfig(**TINY, out=str(run)), resume=run, log=lambda _: None)
    assert res["status"] == "completed" and res["global_step"] == 4
    again = ckpt.read_weights(run / "last.safetensors")[0]
    assert all(torch.equal(final[k], again[k]) for k in final)


@pytest.mark.parametrize("failing", ["last.safetensors", "best.safetensors", "last.state.pt", "log.csv"])
def test_disk_full_during_a_checkpoint(failing, fmnist, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fit(TrainConfig(**{**TINY, "epochs": 1}, out=str(run)), log=lambda _: None)
    before = ckpt.load_state(run / "last.state.pt")
    original = ckpt.atomic_write

    def full(path, write):
        if os.path.basename(path) == failing:

            def partial(tmp):
                with open(tmp, "wb") as f:
                    f.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)

            return original(path, partial)
        return original(path, write)

    monkeypatch.setattr(ckpt, "atomic_write", full)
    argv = ["train", "--resume", str(run), "--epochs", "2", "--threads", "1", "--no-tensorboard", "--no-progress"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and "Traceback" not in "".join(lines), lines
    err = errors[0]
    assert "No space left on device" in err and "--resume" in err and failing in err and str(run) in err, err
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # no temporary file left behind
    monkeypatch.setattr(ckpt, "atomic_write", original)
    state = ckpt.load_state(run / "last.state.pt")
    if failing in ("last.safetensors", "best.safetensors"):
        assert state["global_step"] == before["global_step"]  # the previous checkpoint, untouched
    res = fit(TrainConfig(**TINY, out=str(run)), resume=run, log=lambda _: None)
    assert res["status"] == "completed" and res["global_step"] == 4


def test_divergence_in_the_last_step_of_an_epoch_is_not_saved(fmnist, tmp_path, capsys):
    run = tmp_path / "run"
    fit(TrainConfig(**{**TINY, "epochs": 1}, out=str(run)), log=lambda _: None)
    before = {n: (run / n).read_bytes() for n in ("last.safetensors", "best.safetensors", "last.state.pt")}
    with pytest.raises(TrainError, match=r"became .* at epoch 1 step 1; lower --lr"):
        fit(TrainConfig(**{**TINY, "lr": 1e10}, out=str(run)), resume=run, log=lambda _: None)
    assert {n: (run / n).read_bytes() for n in before} == before  # the last finite checkpoint stays
    out = tmp_path / "fresh"
    assert main(["train", "--base-width", "4", "--subset", "32", "--val-subset", "16", "-b", "16",
                 "--epochs", "1", "--lr", "1e10", "--threads", "1", "--no-tensorboard", "--no-progress",
                 "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lower --lr" in err, err
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()


def test_a_run_directory_of_the_earlier_layout_still_resumes(fmnist, tmp_path):
    """State files written before they held the weights: resumed from last.safetensors, checked
    to be from the same step."""
    ref = tmp_path / "ref"
    fit(TrainConfig(**TINY, out=str(ref)), log=lambda _: None)
    run = tmp_path / "run"
    fit(TrainConfig(**{**TINY, "epochs": 1}, out=str(run)), log=lambda _: None)
    state = ckpt.load_state(run / "last.state.pt")
    del state["model"]  # the earlier layout: weights only in last.safetensors
    ckpt.save_state(run / "last.state.pt", state)
    res = fit(TrainConfig(**TINY, out=str(run)), resume=run, log=lambda _: None)
    assert res["status"] == "completed" and res["global_step"] == 4
    a, b = ckpt.read_weights(ref / "last.safetensors")[0], ckpt.read_weights(run / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and an earlier-layout pair from different steps is still refused, not silently mixed
    state = ckpt.load_state(run / "last.state.pt")
    del state["model"]
    state["weights_sha256"] = "0" * 64
    ckpt.save_state(run / "last.state.pt", state)
    with pytest.raises(TrainError, match="from different steps"):
        fit(TrainConfig(**{**TINY, "epochs": 3}, out=str(run)), resume=run, log=lambda _: None)
