"""`globalctx analyze` end to end on a tiny checkpoint trained by the trainer; report_section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import globalctx
from globalctx.analysis import report_section

pytest.importorskip("matplotlib", reason="the command writes figures with matplotlib")
pytest.importorskip("safetensors", reason="checkpoints are safetensors files")
pytest.importorskip("PIL", reason="the image-folder dataset is decoded with Pillow")


def _image_folder(root, n=4, size=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("plain", "square"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((size, size)) * 128).astype(np.uint8)
                if c == "square":
                    a[4:12, 4:12] = 255
                Image.fromarray(a).save(d / f"{i}.png")
    return f"imagefolder:{root / 'train'},{root / 'val'}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from globalctx.train.config import TrainConfig
    from globalctx.train.loop import fit

    root = tmp_path_factory.mktemp("analyze")
    spec = _image_folder(root)
    cfg = TrainConfig(
        model="resnet18_small",
        attn="nl",
        model_kwargs={"base_width": 4},
        data=spec,
        in_chans=1,
        epochs=1,
        batch_size=4,
        lr=0.01,
        out=str(root / "run"),
        tensorboard=False,
        progress=False,
        device="cpu",
        workers=0,
    )
    fit(cfg, log=lambda s: None)
    return root / "run"


def test_analyze_command_end_to_end(trained_run, tmp_path):
    from globalctx.cli import main

    out = tmp_path / "analysis"
    rc = main(["analyze", str(trained_run), "--out", str(out), "--images", "8", "--batch-size", "4",
               "--figure-images", "2", "--queries", "2"])  # fmt: skip
    assert rc == 0
    md = (out / "analysis.md").read_text()
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == {"layer2.1.attn_add", "layer3.1.attn_add"}  # the two NL blocks of resnet18_small
    for name, s in stats.items():
        assert s["kind"] == "pairwise" and s["images"] == 8
        assert 0 < s["mean"]["input_cos"] <= 1 and 0 <= s["mean"]["att_jsd"] <= np.log(2)
        assert f"`{name}`" in md and f"attention_{name}.png" in md
        assert (out / f"attention_{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "stats.png").is_file()
    assert "GCNet's reading" in md and ("reproduces" in md or "not tested" in md)


def test_analyze_default_out_and_checkpoint_file(trained_run):
    from globalctx.cli import main

    rc = main(["analyze", str(trained_run / "best.safetensors"), "--images", "4", "--batch-size", "4",
               "--figure-images", "1", "--blocks", "layer3.1.attn_add"])  # fmt: skip
    assert rc == 0
    stats = json.loads((trained_run / "analysis" / "stats.json").read_text())
    assert list(stats) == ["layer3.1.attn_add"]


def test_report_section_for_compare(trained_run):
    from globalctx.train.checkpoint import load_model

    model, _ = load_model(trained_run)
    batches = [(torch.randn(3, 1, 16, 16), torch.zeros(3)) for _ in range(2)]
    md = report_section(trained_run, batches, name="nl variant", heading_level=3)
    assert md.lstrip().startswith("### Analysis: nl variant")
    assert "| `layer2.1.attn_add` | pairwise | 8x8 | 64 / 64 (all) | 6 |" in md
    assert "![" not in md  # no figures without out_dir
    # the same numbers from the model object
    assert report_section(model, batches, name="nl variant", heading_level=3) == md
    plain = globalctx.create_model("resnet18_small", num_classes=2, in_chans=1, base_width=4)
    assert "nothing to analyse" in report_section(plain, batches)


def test_compare_section(trained_run, tmp_path):
    from types import SimpleNamespace

    from globalctx.analysis import compare_section

    ctx = SimpleNamespace(out_dir=tmp_path, run_dirs={"nl": trained_run}, base=None)
    title, md = compare_section(ctx, images=4, batch_size=4)
    assert title.startswith("Analysis")
    assert "### Analysis: nl" in md and "![statistics of all variants](analysis_stats.png)" in md
    assert (tmp_path / "analysis_stats.png").is_file()
    assert (tmp_path / "analysis_nl_attention_layer3.1.attn_add.png").is_file()
    assert md.count("**GCNet's reading.**") == 1 and md.count("Query-independence statistics (GCNet") == 1
    one = compare_section(SimpleNamespace(out_dir=tmp_path / "one", run_dirs={"nl": trained_run}), max_figures=1)
    assert "attention_layer3.1.attn_add.png" in one[1] and "attention_layer2.1" not in one[1]  # deepest only
    assert compare_section(SimpleNamespace(out_dir=tmp_path, run_dirs={}, base=None)) is None


def test_eval_batches_of_a_run_from_elsewhere_reads_the_local_copy(tmp_path):
    """A run's recorded --data-dir that does not exist on this machine is not an explicit choice
    here: the analysis reads the local Fashion-MNIST copy (as ``eval`` does)."""
    from globalctx.analysis.report import eval_batches
    from globalctx.train.data import find_fashion_mnist

    try:
        find_fashion_mnist()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not on this machine: {e}")
    config = {"data": {"spec": "fashion-mnist", "image_shape": [1, 28, 28]},
              "train": {"data_dir": str(tmp_path / "gone")}}  # fmt: skip
    batches, spec, n = eval_batches(config, images=20, batch_size=10)
    xs = [x for x, _ in batches]
    assert spec == "fashion-mnist" and n == 20
    assert sum(len(x) for x in xs) == 20 and xs[0].shape[1:] == (1, 28, 28)
