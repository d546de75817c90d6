"""timm's flag spellings, ``-c run.toml``, ``--resume`` given a file, ``--initial-checkpoint``,
and ``bench --channels-last / --amp``."""

import json
import pickle

import pytest
import torch
from torch import nn

from globalctx.cli import build_parser, main
from globalctx.cli.train import config_changes
from globalctx.models import create_model
from globalctx.train.checkpoint import CheckpointError
from globalctx.train.initial import describe, load_initial, read_state_dict

TOML_OK = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def changes(*argv):
    return config_changes(build_parser().parse_args(["train", *argv]))


# ------------------------------------------------------------------------------------- aliases
def test_timm_spellings_mean_ours():
    ours = changes("--out", "r", "--workers", "2", "--grad-clip", "1.5", "--model-kw", "a=1", "--model-kw", "b=x",
                   "--image-size", "32", "--amp", "fp16")  # fmt: skip
    timm = changes("--output", "r", "-j", "2", "--clip-grad", "1.5", "--model-kwargs", "a=1", "b=x",
                   "--img-size", "32", "--amp")  # fmt: skip
    assert ours == timm == {
        "out": "r", "workers": 2, "grad_clip": 1.5, "image_size": 32, "amp": "fp16", "model_kwargs": {"a": 1, "b": "x"},
    }  # fmt: skip


@pytest.mark.parametrize(
    "argv, amp",
    [
        (["--amp"], "fp16"),  # timm's default dtype
        (["--amp", "--amp-dtype", "bfloat16"], "bf16"),
        (["--amp", "--amp-dtype", "float16"], "fp16"),
        (["--amp", "bf16"], "bf16"),
        (["--amp", "none"], "none"),
        (["--amp", "bf16", "--amp-dtype", "bfloat16"], "bf16"),
    ],
)
def test_amp_spellings(argv, amp):
    assert changes(*argv)["amp"] == amp


def test_amp_dtype_without_a_bare_amp_is_refused(capsys):
    assert main(["train", "--amp", "fp16", "--amp-dtype", "bfloat16"]) == 2
    assert "--amp-dtype bf16 goes with a bare --amp" in capsys.readouterr().err


def test_bad_amp_value_names_the_choices(capsys):
    assert main(["train", "--amp", "half"]) == 2
    assert "expected none, bf16 or fp16 (or bfloat16, float16), got 'half'" in capsys.readouterr().err


def test_compare_takes_output_too():
    args = build_parser().parse_args(["compare", "--output", "rep", "-j", "0", "--clip-grad", "2"])
    assert (args.out, args.workers, args.grad_clip) == ("rep", 0, 2.0)


# ---------------------------------------------------------------------------------- -c run.toml
def test_config_file_values_and_flags_over_them(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('model = "resnet18"\nattn = "gc"\nbatch-size = 64\nlr = 1\nchannels_last = true\n'
                 'milestones = [2, 3]\n[model_kwargs]\nbase_width = 16\ndrop_rate = 0.1\n')  # fmt: skip
    got = changes("-c", str(f), "--lr", "0.05", "--model-kw", "base_width=8")
    assert got == {
        "model": "resnet18", "attn": "gc", "batch_size": 64, "lr": 0.05, "channels_last": True, "milestones": (2, 3),
        "model_kwargs": {"base_width": 8, "drop_rate": 0.1},
    }  # fmt: skip
    assert changes("--config", str(f))["lr"] == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("btach_size = 3\n", r"unknown key 'btach_size'; valid keys: .*batch_size"),
        ('epochs = "ten"\n', r"epochs = 'ten' must be a int"),
        ("tensorboard = 1\n", r"tensorboard = 1 must be a bool"),
        ("lr = true\n", r"lr = True must be a int or float"),
        ("model_kwargs = 3\n", r"model_kwargs = 3 must be a table"),
        ("epochs = \n", r"is not valid TOML"),
    ],
)
def test_config_file_errors_name_the_key(tmp_path, capsys, text, match):
    f = tmp_path / "run.toml"
    f.write_text(text)
    assert main(["train", "-c", str(f), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "run").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "-c", str(tmp_path / "nope.toml")]) == 2
    assert "--config" in capsys.readouterr().err


# ------------------------------------------------------------------------------ --resume FILE
def test_resume_given_a_file_says_what_to_give(tmp_path, capsys):
    f = tmp_path / "best.safetensors"
    f.write_bytes(b"x")
    assert main(["train", "--resume", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"globalctx train: error: --resume {f} is a file; give the run directory that holds it ({tmp_path}) "
        f"to continue that run, or --initial-checkpoint {f} to start a new run from its weights"
    )
    assert "JSON" not in err


def test_resume_and_initial_checkpoint_together_are_refused(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--initial-checkpoint", str(tmp_path / "w.pt")]) == 2
    assert "--initial-checkpoint starts a new run" in capsys.readouterr().err


# ---------------------------------------------------------------------- --initial-checkpoint
def _model(attn=None, num_classes=10, seed=0):
    torch.manual_seed(seed)
    return create_model("resnet18_small", num_classes=num_classes, in_chans=1, base_width=8, attn=attn)


def _perturbed(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    return m


def _same(a: nn.Module, b: nn.Module, keys) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in keys)


def test_globalctx_safetensors_loads_every_key(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    src = _perturbed(_model("gc", seed=1))
    f = tmp_path / "w.safetensors"
    safetensors.save_file(src.state_dict(), str(f))
    dst = _model("gc")
    rep = load_initial(dst, f)
    assert rep["layout"] == "globalctx"
    assert (rep["missing"], rep["unexpected"], rep["mismatched"]) == ([], [], [])
    assert _same(src, dst, src.state_dict())


def test_torchvision_layout_into_a_model_with_blocks_reports_the_blocks(tmp_path):
    src = _perturbed(_model(None, seed=1))
    f = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, f)  # DDP + container
    dst = _model("gc")
    rep = load_initial(dst, f)
    assert rep["layout"] == "torchvision"
    assert rep["missing"] and all(".attn_" in k for k in rep["missing"])
    assert rep["unexpected"] == [] and rep["mismatched"] == []
    assert _same(src, dst, [k for k in src.state_dict() if not k.endswith("num_batches_tracked")])
    line = describe(f, rep)
    assert line.startswith(f"initial weights {f} (torchvision layout): loaded ") and "missing" in line


@pytest.mark.parametrize("layout, attn", [("timm", "se"), ("mmcv", "gc")])
def test_timm_and_mmcv_layouts_go_through_the_converters(tmp_path, layout, attn):
    from globalctx.convert import to_layout

    src = _perturbed(create_model("resnet50", attn={"block": attn, "position": "before_add"}, num_classes=7))
    f = tmp_path / f"{layout}.pt"
    torch.save(to_layout(src, layout=layout), f)
    dst = create_model("resnet50", attn={"block": attn, "position": "before_add"}, num_classes=7)
    rep = load_initial(dst, f)
    assert rep["layout"] == layout
    assert (rep["missing"], rep["unexpected"], rep["mismatched"]) == ([], [], [])
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)


def test_another_head_is_reported_as_mismatched_and_not_loaded(tmp_path):
    src = _perturbed(_model(None, num_classes=5, seed=1))
    f = tmp_path / "w.pt"
    torch.save(src.state_dict(), f)
    dst = _model(None, num_classes=10)
    fc_before = dst.fc.weight.detach().clone()
    rep = load_initial(dst, f)
    assert sorted(m.split(" ")[0] for m in rep["mismatched"]) == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.fc.weight, fc_before)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)


class _Payload:
    """Unpickling this would write a file: the weights-only loader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_object_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "was-unpickled"
    f = tmp_path / "evil.pt"
    with open(f, "wb") as fh:
        pickle.dump({"state_dict": {"conv1.weight": _Payload(marker)}}, fh)
    with pytest.raises(CheckpointError, match="is not a weights-only checkpoint"):
        read_state_dict(f)
    assert not marker.exists()


def test_a_file_without_tensors_and_a_missing_file(tmp_path):
    f = tmp_path / "cfg.pt"
    torch.save({"lr": 0.1}, f)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_state_dict(f)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    g = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(1)}, g)
    with pytest.raises(CheckpointError, match="no key matches this model"):
        load_initial(_model(None), g)


def test_missing_initial_checkpoint_stops_before_the_run_directory(tmp_path, capsys):
    pytest.importorskip("safetensors")
    out = tmp_path / "run"
    assert main(["train", "--initial-checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_train_starts_from_the_initial_weights(fmnist, tmp_path, capsys):
    pytest.importorskip("safetensors")
    from globalctx.train.checkpoint import read_weights

    src = _perturbed(_model("gc", seed=1))
    f = tmp_path / "init.pt"
    torch.save(src.state_dict(), f)
    out = tmp_path / "run"
    flags = ["--attn", "gc", "--base-width", "8", "--subset", "64", "--val-subset", "50", "-b", "32",
             "--lr", "1e-9", "--wd", "0", "--threads", "1", "--no-tensorboard", "--no-progress"]  # fmt: skip
    assert main(["train", *flags, "--epochs", "1", "--max-steps", "1", "--initial-checkpoint", str(f),
                 "--out", str(out)]) == 0  # fmt: skip
    assert f"initial weights {f} (globalctx layout): loaded " in capsys.readouterr().err
    got, _ = read_weights(out / "last.safetensors")
    for k, v in src.state_dict().items():
        if k.endswith(".weight") and v.dim() == 4:  # conv weights: one step at lr 1e-9 moves them by < 1e-6
            torch.testing.assert_close(got[k], v, rtol=0, atol=1e-5)
    assert json.loads((out / "config.json").read_text())["train"]["initial_checkpoint"] == str(f)


# ------------------------------------------------------------------- bench --channels-last --amp
class _Spy(nn.Module):
    """Records the memory format of its input and whether autocast is on."""

    seen: list = []

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        _Spy.seen.append((x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
                          torch.is_autocast_enabled("cpu"), self.conv.weight.is_contiguous()))  # fmt: skip
        return self.conv(x)


@pytest.mark.parametrize("channels_last, amp", [(False, "none"), (True, "bf16")])
def test_bench_runs_under_the_asked_memory_format_and_autocast(channels_last, amp):
    from globalctx.bench.runner import Case, run_cases

    _Spy.seen = []
    rows = run_cases([Case("spy", _Spy, (2, 4, 5, 5))], runs=2, warmup=1, memory=(), floors=False,
                     progress="none", channels_last=channels_last, amp=amp)  # fmt: skip
    assert rows[0]["error"] == ""
    assert (rows[0]["memory_format"], rows[0]["amp"]) == ("channels_last" if channels_last else "contiguous", amp)
    timed = _Spy.seen[-3:]
    assert all(s == (channels_last, amp != "none", not channels_last) for s in timed), timed


def test_bench_cli_flags(tmp_path):
    out = tmp_path / "r.json"
    assert main(["bench", "blocks", "--blocks", "se", "--shape", "2,16,6,6", "--runs", "2", "--warmup", "1",
                 "--no-floors", "--memory", "none", "--no-progress", "--table", "none", "--channels-last",
                 "--amp", "--amp-dtype", "bfloat16", "--out", str(out)]) == 0  # fmt: skip
    row = json.loads(out.read_text())["rows"][0]
    assert (row["memory_format"], row["amp"]) == ("channels_last", "bf16")


def test_compare_reads_a_config_file_too(tmp_path):
    f = tmp_path / "cmp.toml"
    f.write_text("epochs = 2\nsubset = 128\n")
    args = build_parser().parse_args(["compare", "-c", str(f), "--epochs", "3"])
    got = config_changes(args)
    assert (got["epochs"], got["subset"]) == (3, 128)
