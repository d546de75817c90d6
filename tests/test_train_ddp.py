"""torchrun DDP on CPU (gloo): 2 processes give the same weights as 1 process with the same global
batch; a crashed rank makes the job fail instead of hanging.

This file also provides the model used by the spawned processes (``test_train_ddp:tiny_net``):
GroupNorm instead of BatchNorm, because BatchNorm statistics are per process under DDP (there is no
SyncBatchNorm on CPU), so only a model without batch statistics can match exactly.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import globalctx
from globalctx.cli import main
from globalctx.train import checkpoint as ckpt

HERE = Path(__file__).resolve().parent


class _Tiny(nn.Module):
    def __init__(self, num_classes, in_chans, attn, crash_rank, crash_step):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(4, 16)
        self.attn = globalctx.create_block(attn, 16) if attn else nn.Identity()
        self.fc = nn.Linear(16, num_classes)
        self.crash_rank, self.crash_step, self.calls = crash_rank, crash_step, 0

    def forward(self, x):
        self.calls += self.training
        if self.calls == self.crash_step and int(os.environ.get("RANK", "0")) == self.crash_rank:
            raise RuntimeError("simulated crash of one rank")
        x = torch.relu(self.norm1(self.conv1(x)))
        x = self.attn(torch.relu(self.norm2(self.conv2(x))))
        return self.fc(x.mean((2, 3)))


def tiny_net(num_classes=10, in_chans=1, attn=None, crash_rank=-1, crash_step=-1):
    return _Tiny(num_classes, in_chans, attn, crash_rank, crash_step)


_ARGS = [
    "train",
    "--model",
    "test_train_ddp:tiny_net",
    "--attn",
    "gc",
    "--subset",
    "128",
    "--val-subset",
    "64",
    "--epochs",
    "2",
    "-b",
    "32",
    "--lr",
    "0.05",
    "--threads",
    "1",
    "--no-tensorboard",
    "--no-progress",
]


def _train(nproc, out, *extra, timeout=540):  # generous: a loaded machine slows both ranks
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "globalctx",
        *_ARGS,
        "--out",
        str(out),
        *extra,
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.perf_counter() - t0


def test_ddp_two_processes_match_one(fmnist, tmp_path):
    # the reference: the same command line in this process, without torchrun
    argv = _ARGS + ["--out", str(tmp_path / "one")]
    assert main(argv) == 0
    p2, _ = _train(2, tmp_path / "two")
    assert p2.returncode == 0, p2.stderr[-3000:]
    a, _ = ckpt.read_weights(tmp_path / "one" / "last.safetensors")
    b, _ = ckpt.read_weights(tmp_path / "two" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # the weights moved (the comparison is not trivially between two initial states): the run's
    # initial weights are those drawn after torch.manual_seed(seed=0)
    torch.manual_seed(0)
    init = tiny_net(attn="gc")
    assert any(not torch.allclose(init.state_dict()[k], a[k]) for k in a if k.endswith("weight"))
    # metrics are all-reduced: both runs evaluated all 64 images and agree
    h1 = ckpt.load_state(tmp_path / "one" / "last.state.pt")["history"]
    h2 = ckpt.load_state(tmp_path / "two" / "last.state.pt")["history"]
    assert h1[-1]["val_n"] == h2[-1]["val_n"] == 64
    assert h2[-1]["val_acc"] == pytest.approx(h1[-1]["val_acc"], abs=1 / 64)
    assert h2[-1]["train_loss"] == pytest.approx(h1[-1]["train_loss"], rel=1e-4)


def test_ddp_crashed_rank_fails_fast(fmnist, tmp_path):
    p, dt = _train(
        2, tmp_path / "crash", "--model-kw", "crash_rank=1", "--model-kw", "crash_step=2", "--dist-timeout", "30"
    )
    assert p.returncode != 0
    assert "simulated crash of one rank" in p.stderr
    assert dt < 200
    # rank 0 did not write a checkpoint past the crash
    assert not (tmp_path / "crash" / "last.state.pt").exists()


def _rank_pid(parent: int, rank: int, deadline: float) -> int:
    """The pid of the worker process of ``rank`` started by the torchrun process ``parent``."""
    while time.monotonic() < deadline:
        for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
        time.sleep(0.2)
    raise AssertionError(f"no worker of rank {rank} under torchrun {parent}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process in /proc")
def test_ddp_sigterm_to_one_rank_names_the_signal(fmnist, tmp_path):
    import signal

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    args = [a if a != "2" else "20" for a in _ARGS]  # 20 epochs: the signal lands inside the run, however slow
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "globalctx",
           *args, "--out", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        worker = _rank_pid(proc.pid, 1, time.monotonic() + 120)
        for line in proc.stderr:  # after the first epoch, SIGTERM to rank 1 only
            lines.append(line)
            if line.startswith("epoch 1/20"):
                os.kill(worker, signal.SIGTERM)
                break
        rest = proc.communicate(timeout=180)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + rest
    assert "stopped by signal SIGTERM" in text and "max_steps=None" not in text, text[-3000:]
    st = ckpt.load_state(tmp_path / "run" / "last.state.pt")
    assert 4 <= st["global_step"] < 80, st["global_step"]  # saved after epoch 1, before the end
