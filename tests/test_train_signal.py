"""SIGTERM in the middle of a run: the process saves a checkpoint and exits cleanly (128 + signal),
and ``--resume`` ends with weights bit-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import torch

from globalctx.cli import main
from globalctx.train import checkpoint as ckpt

ARGS = [
    "train",
    "--attn",
    "gc",
    "--base-width",
    "8",
    "--subset",
    "128",
    "--val-subset",
    "64",
    "--epochs",
    "3",
    "-b",
    "16",
    "--lr",
    "0.05",
    "--threads",
    "1",
    "--no-tensorboard",
    "--no-progress",
]  # 8 steps per epoch


def test_sigterm_saves_and_resume_is_bit_identical(fmnist, tmp_path, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "globalctx", *ARGS, "--out", str(run)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = []
    try:
        for line in proc.stderr:  # wait for the end of the first epoch, then interrupt the second
            lines.append(line)
            if line.startswith("epoch 1/3"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "stopped by signal SIGTERM" in rest and "Traceback" not in rest
    st = ckpt.load_state(run / "last.state.pt")
    assert 8 <= st["global_step"] < 24  # stopped after epoch 1, before the end

    assert main([*ARGS[:1], "--resume", str(run), "--json", "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["status"] == "completed" and resumed["global_step"] == 24 and len(resumed["history"]) == 3

    assert main([*ARGS, "--out", str(tmp_path / "ref"), "--json"]) == 0  # uninterrupted, same settings
    a, _ = ckpt.read_weights(tmp_path / "ref" / "last.safetensors")
    b, _ = ckpt.read_weights(run / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
