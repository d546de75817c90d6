"""Trainer: decay groups, schedule, config validation, end-to-end runs on a few hundred real
Fashion-MNIST images, exact resume, checkpoint safety, error paths and the train/eval CLI."""

import json
import pickle

import pytest
import torch
from torch import nn

import globalctx
from globalctx.cli import main
from globalctx.train import checkpoint as ckpt
from globalctx.train.config import TrainConfig
from globalctx.train.loop import TrainError, fit, get_lr, no_weight_decay_names, param_groups

SMALL = dict(
    model="resnet18_small",
    model_kwargs={"base_width": 8},  # the narrowest width at which gc/se keep >= 1 reduced channel
    subset=128,
    val_subset=100,
    epochs=2,
    batch_size=32,
    lr=0.05,
    warmup_epochs=0.5,
    tensorboard=False,
    progress=False,
    threads=1,  # on a busy shared machine one thread is many times faster than two
)  # 4 steps per epoch


def quiet(_):
    pass


# ----------------------------------------------------------------------------- pieces
class _WithNoDecay(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.table = nn.Parameter(torch.zeros(4, 4))  # 2-d, excluded only through no_weight_decay()

    def no_weight_decay(self):
        return {"table"}


def test_param_groups_honour_no_weight_decay():
    m = nn.Sequential(_WithNoDecay(), nn.Linear(4, 2))
    skip = no_weight_decay_names(m)
    assert skip == {"0.conv.bias", "0.bn.weight", "0.bn.bias", "0.table", "1.bias"}
    decay, no_decay = param_groups(m, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(m[0].conv.weight), id(m[1].weight)}
    assert len(no_decay["params"]) == 5


def test_param_groups_with_registered_blocks():
    for name in globalctx.list_blocks():
        blk = globalctx.create_block(name, 16)
        listed = set(blk.no_weight_decay()) if hasattr(blk, "no_weight_decay") else set()
        skip = no_weight_decay_names(blk)
        assert listed <= skip, name
        for n, p in blk.named_parameters():
            if p.ndim > 1 and n not in listed:
                assert n not in skip, (name, n)


def test_lr_schedule():
    cfg = TrainConfig(epochs=4, lr=0.2, warmup_epochs=1, sched="cosine")
    lrs = [get_lr(cfg, s, 10) for s in range(40)]
    assert lrs[0] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.2) and lrs[10] == pytest.approx(0.2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.002
    step = TrainConfig(epochs=4, lr=0.2, warmup_epochs=0, sched="step", milestones=(2, 3), gamma=0.1)
    assert [round(get_lr(step, s * 10, 10), 6) for s in range(4)] == [0.2, 0.2, 0.02, 0.002]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(opt="adam"), "choose one of sgd, adamw"),
        (dict(amp="fp8"), "choose one of none, bf16, fp16"),
        (dict(epochs=0), "epochs must be a positive integer"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(label_smoothing=1.5), "label_smoothing"),
        (dict(warmup_epochs=20, epochs=10), "warmup_epochs"),
    ],
)
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_config_roundtrip():
    cfg = TrainConfig(attn="gc", model_kwargs={"base_width": 8}, sched="step")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"epochz": 3})


# ----------------------------------------------------------------------------- end to end
def test_train_end_to_end_then_load_model_and_eval(fmnist, tmp_path, capsys):
    cfg = TrainConfig(**{**SMALL, "tensorboard": True}, attn="gc", out=str(tmp_path / "run"))
    res = fit(cfg, log=quiet)
    assert res["status"] == "completed" and len(res["history"]) == 2 and res["steps_per_epoch"] == 4
    h = res["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]  # it learns something
    assert 0.0 <= res["val_acc"] <= 1.0 and h[-1]["val_n"] == 100
    run = tmp_path / "run"
    for f in ("config.json", "last.safetensors", "last.state.pt", "best.safetensors", "log.csv"):
        assert (run / f).is_file(), f
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert len((run / "log.csv").read_text().strip().splitlines()) == 3
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {
        "name": "resnet18_small",
        "kwargs": {"num_classes": 10, "in_chans": 1, "attn": "gc", "base_width": 8},
    }

    model, conf = ckpt.load_model(run / "last.safetensors")
    assert not model.training and conf["train"]["attn"] == "gc"
    ref = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="gc", base_width=8)
    assert model.state_dict().keys() == ref.state_dict().keys()
    # eval of the saved weights reproduces the run's own last evaluation
    assert main(["eval", str(run / "last.safetensors"), "--subset", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["val_n"] == 100 and out["val_acc"] == pytest.approx(res["val_acc"])
    # a lone .safetensors (no config.json beside it) rebuilds from its metadata
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run / "best.safetensors").read_bytes())
    m2, _ = ckpt.load_model(lone)
    best = ckpt.read_weights(run / "best.safetensors")[0]
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in best.items())


@pytest.fixture(scope="module")
def reference_run(fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    res = fit(TrainConfig(**SMALL, attn="gc", out=str(out)), log=quiet)
    return out, res


@pytest.mark.parametrize("stop_at", [3, 4])  # mid-epoch, and exactly at the epoch boundary
def test_resume_is_bit_identical(reference_run, tmp_path, stop_at):
    ref_dir, ref = reference_run
    out = tmp_path / "run"
    part = fit(TrainConfig(**SMALL, attn="gc", out=str(out), max_steps=stop_at), log=quiet)
    assert part["status"] == "stopped" and part["global_step"] == stop_at
    st = ckpt.load_state(out / "last.state.pt")
    assert (st["epoch"], st["step"]) == divmod(stop_at, 4)
    done = fit(TrainConfig(**SMALL, attn="gc", out=str(out)), resume=out, log=quiet)
    assert done["status"] == "completed"
    a, _ = ckpt.read_weights(ref_dir / "last.safetensors")
    b, _ = ckpt.read_weights(out / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    sa = ckpt.load_state(ref_dir / "last.state.pt")
    sb = ckpt.load_state(out / "last.state.pt")
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert [r["train_loss"] for r in sa["history"]] == [r["train_loss"] for r in sb["history"]]
    assert done["val_acc"] == ref["val_acc"]


def test_resume_refuses_a_different_model(reference_run, tmp_path):
    ref_dir, _ = reference_run
    with pytest.raises(TrainError, match="attn='se'.*differ from the run being resumed"):
        fit(TrainConfig(**SMALL, attn="se"), resume=ref_dir, log=quiet)


def test_bf16_channels_last_adamw_smoke(fmnist, tmp_path):
    changes = dict(epochs=1, subset=64, opt="adamw", lr=1e-3, label_smoothing=0.1, grad_clip=1.0)
    cfg = TrainConfig(**{**SMALL, **changes}, attn="gc", amp="bf16", channels_last=True, out=str(tmp_path / "r"))
    res = fit(cfg, log=quiet)
    assert res["status"] == "completed" and torch.isfinite(torch.tensor(res["history"][0]["train_loss"]))


# ----------------------------------------------------------------------------- checkpoint safety
def test_checkpoint_rejects_tampered_and_foreign_files(reference_run, tmp_path):
    ref_dir, _ = reference_run
    good = (ref_dir / "last.safetensors").read_bytes()
    # one flipped byte in the tensor data: the header still parses, the digest does not match
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ckpt.CheckpointError, match="integrity check"):
        ckpt.load_model(tmp_path / "flip.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good[:200])
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors file"):
        ckpt.read_weights(tmp_path / "cut.safetensors")
    # a state file holding an arbitrary pickled object is refused, never executed

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"epoch": Evil()}, protocol=2))
    with pytest.raises(ckpt.CheckpointError, match="not a valid training state"):
        ckpt.load_state(tmp_path / "evil.pt")
    # another architecture: the error lists what does not fit
    other = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="snl", base_width=8)
    with pytest.raises(ckpt.CheckpointError, match=r"unexpected keys: .*attn.*was it saved for another"):
        ckpt.load_weights(other, ref_dir / "last.safetensors")
    wide = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="gc", base_width=16)
    mismatch = r"shape mismatch: .*conv1.weight \(8, 1, 3, 3\) vs model \(16, 1, 3, 3\)"
    with pytest.raises(ckpt.CheckpointError, match=mismatch):
        ckpt.load_weights(wide, ref_dir / "last.safetensors")


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def fail(tmp):
        open(tmp, "w").write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write(p, fail)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_output_dir_errors(reference_run, tmp_path):
    ref_dir, _ = reference_run
    before = {f.name: f.stat().st_mtime_ns for f in ref_dir.iterdir()}
    with pytest.raises(TrainError, match="already holds a run; pass --resume"):
        fit(TrainConfig(**SMALL, out=str(ref_dir)), log=quiet)
    assert before == {f.name: f.stat().st_mtime_ns for f in ref_dir.iterdir()}  # nothing lost
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainError, match="cannot write to .*choose a writable --out"):
        fit(TrainConfig(**SMALL, out=str(tmp_path / "file" / "run")), log=quiet)


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("cmd", ["train", "eval", "compare"])
def test_cli_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--data" in text and ("--resume" in text or cmd != "train")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--attn", "nosuchblock", "--subset", "64", "-b", "32", "--epochs", "1"], "unknown block"),
        (["train", "--model", "nosuchmodel", "--subset", "64", "-b", "32", "--epochs", "1"], "nosuchmodel"),
        (["train", "--opt", "sgd", "--lr", "-1"], "argument --lr: must be a finite number > 0, got '-1'"),
        (["train", "--sched", "step", "--gamma", "-1"], "argument --gamma: must be a finite number > 0"),
        (["train", "--wd", "nan"], "argument --wd/--weight-decay: must be a finite number >= 0, got 'nan'"),
        (["train", "--warmup-epochs", "nan"], "argument --warmup-epochs: must be a finite number >= 0"),
        (["train", "--threads", "-1"], "argument --threads: must be an integer >= 1, got '-1'"),
        (["eval", "/nonexistent/run", "--subset", "0"], "argument --subset: must be an integer >= 1, got '0'"),
        (["eval", "/nonexistent/run", "--subset", "-5"], "argument --subset: must be an integer >= 1"),
        (["eval", "/nonexistent/run", "--device", "tpu"], "'tpu' is not a device; choose auto, cpu, cuda"),
        (["blocks", "--shape", "a,b,c"], "argument --shape: expected comma-separated positive integers"),
        (["blocks", "--shape", "2,8"], "argument --shape: expected N,C and 1..3 spatial sizes"),
        (["blocks", "--threads", "-1"], "argument --threads: must be an integer >= 1"),
        (["analyze", "/nonexistent"], "/nonexistent does not exist"),
        (["bench", "blocks", "--blocks", "se", "--out", "/nonexistent/r.csv"], "directory /nonexistent does not exist"),
        (["bench", "blocks", "--blocks", "se", "--out", "r.txt"], "must end in .csv or .json"),
        (["train", "--data", "imagefolder:/nonexistent/a,/nonexistent/b"], "does not exist"),
        (["eval", "/nonexistent/run"], "neither a run directory nor a .safetensors"),
        (["compare", "--variants", "none,bogus"], "unknown block 'bogus'"),
    ]
    + ([] if torch.cuda.is_available() else [(["eval", "/nonexistent/run", "--device", "cuda"], "CUDA is not available")]),  # noqa: E501
)
def test_cli_errors_are_one_line(fmnist, argv, match, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "r"), "--no-tensorboard"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"globalctx {argv[0]}") and match in err, err
    assert ": error: " in err and "Traceback" not in err


def test_cli_train_and_resume(fmnist, tmp_path, capsys):
    out = str(tmp_path / "cli")
    common = ["--no-tensorboard", "--no-progress", "--threads", "1"]
    argv = [
        "train",
        "--attn",
        "gc",
        "--base-width",
        "8",
        "--subset",
        "64",
        "--val-subset",
        "50",
        "--epochs",
        "2",
        "-b",
        "32",
        "--out",
        out,
        "--max-steps",
        "3",
        "--json",
        *common,
    ]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "stopped" and first["global_step"] == 3
    assert main(["train", "--resume", out, "--json", *common]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["status"] == "completed" and second["global_step"] == 4 and len(second["history"]) == 2


def test_train_on_a_generated_image_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow decodes ImageFolder images")
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c, level in (("dark", 40), ("bright", 200)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                a = np.clip(rng.normal(level, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(tmp_path / split / c / f"{i}.png")
    data = f"imagefolder:{tmp_path / 'train'},{tmp_path / 'val'}"
    cfg = TrainConfig(
        **{**SMALL, "subset": None, "val_subset": None, "epochs": 2, "batch_size": 8},
        data=data,
        image_size=16,
        workers=1,
        out=str(tmp_path / "run"),
    )
    res = fit(cfg, log=quiet)
    assert res["status"] == "completed" and res["steps_per_epoch"] == 3 and res["history"][-1]["val_n"] == 8
    model, config = ckpt.load_model(tmp_path / "run")
    assert config["data"]["classes"] == ["bright", "dark"] and config["data"]["image_shape"] == [3, 16, 16]
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
