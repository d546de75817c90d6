"""No silent wrong data: a directory named with --data-dir / $GLOBALCTX_DATA is read or refused
(never replaced by another copy), the config records what was read, an ImageFolder training set
with an empty class is refused, and broken IDX files are one-line errors naming the file."""

import gzip
import json
import shutil
import struct

import numpy as np
import pytest

from globalctx.cli import main
from globalctx.train import data as D

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture
def copy(fmnist, tmp_path):
    """A copy of the four Fashion-MNIST files in a directory of its own."""
    d = tmp_path / "mine"
    d.mkdir()
    for f in fmnist.iterdir():
        if any(f.name.startswith(stem) for stem in FILES):
            shutil.copy(f, d / f.name)
    return d


def _name(d, stem):
    return next(p for p in d.iterdir() if p.name.startswith(stem))


@pytest.mark.parametrize("how", ["missing-dir", "three-of-four", "a-directory", "env"])
def test_an_explicit_data_dir_that_cannot_be_used_is_an_error(how, copy, tmp_path, monkeypatch):
    monkeypatch.delenv("GLOBALCTX_DATA", raising=False)
    d, named = copy, None
    if how in ("missing-dir", "env"):
        d = tmp_path / "nope"
        named = str(d)
    elif how == "three-of-four":
        f = _name(copy, "t10k-labels")
        f.unlink()
        named = "t10k-labels-idx1-ubyte(.gz) is missing"
    else:
        f = _name(copy, "train-images")
        f.unlink()
        f.mkdir()  # a directory where the file should be
        named = f"{f} is not a file"
    if how == "env":
        monkeypatch.setenv("GLOBALCTX_DATA", str(d))
        arg, flag = None, "$GLOBALCTX_DATA"
    else:
        arg, flag = d, "--data-dir"
    with pytest.raises(D.DataError) as e:
        D.find_fashion_mnist(arg)
    assert named in str(e.value) and flag in str(e.value), str(e.value)


def test_cli_refuses_an_unusable_data_dir(copy, tmp_path, capsys):
    _name(copy, "t10k-labels").unlink()
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(copy), "--subset", "32", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "t10k-labels-idx1-ubyte" in err and str(copy) in err, err
    assert not (out / "last.safetensors").exists()


def test_config_records_the_directory_read_and_a_digest(copy, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(copy), "--base-width", "4", "--subset", "32", "--val-subset", "16", "-b", "16",
            "--epochs", "1", "--threads", "1", "--no-tensorboard", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    source = json.loads((out / "config.json").read_text())["data"]["source"]
    assert source["dir"] == str(copy.resolve()) and len(source["sha256"]) == 64
    assert source == D.fashion_mnist_source(copy)
    f = _name(copy, "t10k-labels")
    f.write_bytes(f.read_bytes())  # same bytes, new mtime: same digest
    assert D.fashion_mnist_source(copy)["sha256"] == source["sha256"]
    raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
    raw = raw[:-1] + bytes([(raw[-1] + 1) % 10])  # one label changed
    f.write_bytes(gzip.compress(raw) if f.suffix == ".gz" else raw)
    assert D.fashion_mnist_source(copy)["sha256"] != source["sha256"]


def _idx(path, arr: np.ndarray, code: int):
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(head + arr.tobytes())


def test_broken_idx_files_are_one_line_errors_naming_the_file(copy):
    labels = _name(copy, "t10k-labels")
    labels.unlink()
    target = copy / "t10k-labels-idx1-ubyte"
    _idx(target, np.array([0, -3, 4] + [1] * 9997, dtype=np.int8), 0x09)  # a negative label
    with pytest.raises(D.DataError, match=r"t10k-labels-idx1-ubyte holds labels outside 0\.\.9 \(-3\.\.4\)"):
        D.load_fashion_mnist(copy, train=False)
    _idx(target, np.zeros(10000, dtype=">f4"), 0x0D)  # a foreign dtype byte for labels
    with pytest.raises(D.DataError, match="t10k-labels-idx1-ubyte stores >f4 values; .* labels are integers"):
        D.load_fashion_mnist(copy, train=False)
    images = _name(copy, "t10k-images")
    images.unlink()
    _idx(copy / "t10k-images-idx3-ubyte", np.zeros((10000, 28, 28), dtype=">i2"), 0x0B)
    _idx(target, np.zeros(10000, dtype=np.uint8), 0x08)
    with pytest.raises(D.DataError, match="t10k-images-idx3-ubyte stores >i2 values; .* uint8"):
        D.load_fashion_mnist(copy, train=False)
    bad = copy / "x.gz"
    good = gzip.compress(b"\0" * 4096)
    bad.write_bytes(good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:])  # corrupt deflate stream
    with pytest.raises(D.DataError, match=r"cannot read .*x\.gz.*corrupt"):
        D.read_idx(bad)


def _folder(root, counts):
    from PIL import Image

    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), i, np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_with_an_empty_class_is_refused_a_validation_split_may_lack_one(tmp_path):
    pytest.importorskip("PIL", reason="Pillow decodes ImageFolder images")
    _folder(tmp_path / "train", {"cat": 2, "dog": 0, "owl": 2})
    with pytest.raises(D.DataError, match=r"train: class directory dog holds no image files"):
        D.build_datasets(f"imagefolder:{tmp_path / 'train'},{tmp_path / 'train'}", in_chans=1)
    (tmp_path / "train" / "dog" / "0.png").write_bytes((tmp_path / "train" / "cat" / "0.png").read_bytes())
    _folder(tmp_path / "val", {"cat": 1, "dog": 0, "owl": 1})  # dog empty in validation ...
    shutil.rmtree(tmp_path / "val" / "owl")  # ... and owl missing: both fine
    tr, va = D.build_datasets(f"imagefolder:{tmp_path / 'train'},{tmp_path / 'val'}", in_chans=1)
    assert tr.classes == va.classes == ("cat", "dog", "owl") and len(va) == 1
