"""Files from others are data: a run's config.json or a lone .safetensors file's metadata naming the
model as ``package.module:callable`` is refused by every loader (eval, analyze, train --resume, the
Python API) before anything is imported or called; ``trust_model_code`` / ``--trust-model-code``
loads it deliberately."""

import json
import sys

import pytest
import torch
from torch import nn

from globalctx.analysis import report_section
from globalctx.cli import main
from globalctx.train import checkpoint as ckpt
from globalctx.train.config import TrainConfig
from globalctx.train.loop import fit

pytest.importorskip("safetensors", reason="checkpoints are safetensors files")


def _payload(marker) -> dict:
    """A config whose model, if built, runs a command creating ``marker``."""
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "format": ckpt.FORMAT,
        "model": {"name": "subprocess:run", "kwargs": {"args": [sys.executable, "-c", code]}},
        "train": TrainConfig(model="subprocess:run", tensorboard=False, progress=False).to_dict(),
        "data": {"spec": "fashion-mnist", "image_shape": [1, 28, 28]},
    }


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "MARKER"
    yield m
    assert not m.exists(), "a loader ran code named inside a file"


@pytest.fixture
def run_dir(tmp_path, marker):
    d = tmp_path / "run"
    d.mkdir()
    ckpt.write_config(d, _payload(marker))
    for name in ("best.safetensors", "last.safetensors"):
        meta = ckpt.save_weights(d / name, nn.Linear(2, 2))
    state = {"epoch": 0, "step": 1, "history": [], "best_acc": -1.0, "weights_sha256": meta["sha256"]}
    ckpt.save_state(d / "last.state.pt", state)  # a resumable-looking run
    return d


@pytest.fixture
def lone_file(tmp_path, marker):
    d = tmp_path / "download"
    d.mkdir()
    path = d / "model.safetensors"
    ckpt.save_weights(path, nn.Linear(2, 2), config=_payload(marker))
    return path


REFUSAL = "names its model as the import path 'subprocess:run'"


@pytest.mark.parametrize("which", ["run_dir", "lone_file"])
def test_load_model_refuses_model_code(which, request):
    path = request.getfixturevalue(which)
    with pytest.raises(ckpt.CheckpointError, match=REFUSAL) as e:
        ckpt.load_model(path)
    assert "--trust-model-code" in str(e.value) and "trust_model_code=True" in str(e.value)


@pytest.mark.parametrize("which", ["run_dir", "lone_file"])
@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_commands_refuse_model_code(command, which, request, capsys):
    path = request.getfixturevalue(which)
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"globalctx {command}: error:"), err
    assert REFUSAL in err and "--trust-model-code" in err


def test_resume_refuses_model_code(run_dir, capsys):
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and REFUSAL in err and "--trust-model-code" in err, err
    saved = json.loads((run_dir / "config.json").read_text())
    with pytest.raises(ckpt.CheckpointError, match=REFUSAL):
        fit(TrainConfig.from_dict(saved["train"]), resume=run_dir, log=lambda s: None)
    assert json.loads((run_dir / "config.json").read_text()) == saved  # nothing rewritten


def test_analysis_api_refuses_model_code(run_dir):
    with pytest.raises(ckpt.CheckpointError, match=REFUSAL):
        report_section(run_dir, [torch.zeros(1, 1, 28, 28)])


def test_trusted_model_code_loads(tmp_path):
    """The deliberate path: the user's own callable, named in a file they trust."""
    from globalctx.models import create_model

    kwargs = {"name": "resnet18_small", "num_classes": 10, "in_chans": 1, "base_width": 8}
    model = create_model(**kwargs)
    path = tmp_path / "own.safetensors"
    config = {"format": ckpt.FORMAT, "model": {"name": "globalctx.models:create_model", "kwargs": kwargs}}
    ckpt.save_weights(path, model, config=config)
    with pytest.raises(ckpt.CheckpointError, match="import path 'globalctx.models:create_model'"):
        ckpt.load_model(path)
    loaded, cfg = ckpt.load_model(path, trust_model_code=True)
    assert cfg["model"]["name"] == "globalctx.models:create_model"
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))


def test_registered_names_need_no_flag(tmp_path):
    from globalctx.models import create_model

    kwargs = {"num_classes": 10, "in_chans": 1, "base_width": 8}
    path = tmp_path / "plain.safetensors"
    ckpt.save_weights(path, create_model("resnet18_small", **kwargs), config={"format": ckpt.FORMAT,
                      "model": {"name": "resnet18_small", "kwargs": kwargs}})  # fmt: skip
    model, _ = ckpt.load_model(path)
    assert sum(p.numel() for p in model.parameters()) > 0
