"""Data: IDX reading and its errors, the Fashion-MNIST lookup, subsets, the resumable rank-aware
loader, augmentation, ImageFolder (generated tiny folders) and its errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from globalctx.train import data as D


@pytest.fixture(scope="module")
def fmnist_dir():
    try:
        return D.find_fashion_mnist()
    except D.DataError as e:
        pytest.skip(f"Fashion-MNIST is not installed (make test installs dataset-fashion-mnist where apt works): {e}")


def _write_idx(path, arr: np.ndarray, *, gz: bool = False, truncate: int = 0):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    body = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    raw = (head + body)[: len(head) + len(body) - truncate]
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("x.gz" if gz else "x")
    _write_idx(p, a, gz=gz)
    np.testing.assert_array_equal(D.read_idx(p), a)
    b = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "y", b)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "y"), b)


def test_read_idx_rejects_truncated_and_garbage(tmp_path):
    _write_idx(tmp_path / "t", np.zeros((4, 5), np.uint8), truncate=3)
    with pytest.raises(D.DataError, match="truncated or corrupt"):
        D.read_idx(tmp_path / "t")
    (tmp_path / "g").write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(D.DataError, match="bad magic"):
        D.read_idx(tmp_path / "g")
    (tmp_path / "z.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(D.DataError, match="corrupt"):
        D.read_idx(tmp_path / "z.gz")


def test_missing_dataset_message_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "DEBIAN_DIR", tmp_path / "nope")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GLOBALCTX_DATA", raising=False)
    with pytest.raises(D.DataError) as e:
        D.find_fashion_mnist()
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg and "--data-dir" in msg


def test_corrupt_dataset_file_is_reported(tmp_path, fmnist_dir):
    # a copy of the real files with the training images cut short
    for f in fmnist_dir.iterdir():
        data = f.read_bytes()
        if f.name.startswith("train-images"):
            data = gzip.compress(gzip.decompress(data)[:100000])
        (tmp_path / f.name).write_bytes(data)
    with pytest.raises(D.DataError, match="train-images.*truncated or corrupt"):
        D.load_fashion_mnist(tmp_path, train=True)


def test_fashion_mnist_and_balanced_subset(fmnist_dir):
    tr, va = D.build_datasets("fashion-mnist", subset=300, val_subset=100, seed=3)
    assert tr.image_shape == (1, 28, 28) and len(tr) == 300 and len(va) == 100
    assert tr.images.dtype == torch.uint8 and len(tr.classes) == 10
    assert torch.bincount(tr.labels, minlength=10).tolist() == [30] * 10
    tr2, _ = D.build_datasets("fashion-mnist", subset=300, val_subset=100, seed=3)
    assert torch.equal(tr.images, tr2.images)  # fixed by the seed
    full = D.load_fashion_mnist(train=False)
    assert len(full) == 10000 and torch.bincount(full.labels).tolist() == [1000] * 10


def _toy(n=40, c=1, s=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 4
    return D.TensorImageDataset(x, y, classes="abcd", mean=(0.5,) * c, std=(0.25,) * c)


def test_loader_resume_replays_the_same_batches():
    ds = _toy()
    aug = D.Augment(ds.mean, ds.std, pad=2, flip=True)
    loader = D.BatchLoader(ds, aug, global_batch=8, train=True, seed=5)
    assert len(loader) == 5
    full = list(loader.iter_epoch(2))
    tail = list(loader.iter_epoch(2, start_step=3))
    assert [s for s, _, _ in tail] == [3, 4]
    for (s1, x1, y1), (s2, x2, y2) in zip(full[3:], tail):
        assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    other = list(loader.iter_epoch(3))
    assert not torch.equal(full[0][2], other[0][2]) or not torch.equal(full[0][1], other[0][1])


def test_loader_ranks_split_the_global_batch():
    ds = _toy()
    aug = D.Augment(ds.mean, ds.std, pad=2, flip=True)
    one = list(D.BatchLoader(ds, aug, global_batch=8, train=True, seed=1).iter_epoch(0))
    r0 = list(D.BatchLoader(ds, aug, global_batch=8, train=True, seed=1, rank=0, world_size=2).iter_epoch(0))
    r1 = list(D.BatchLoader(ds, aug, global_batch=8, train=True, seed=1, rank=1, world_size=2).iter_epoch(0))
    for (_, x, y), (_, x0, y0), (_, x1, y1) in zip(one, r0, r1):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    # evaluation: every image exactly once over the ranks
    ev = [
        D.BatchLoader(ds, D.Augment(ds.mean, ds.std), global_batch=6, train=False, rank=r, world_size=2)
        for r in range(2)
    ]
    seen = torch.cat([y for e in ev for _, _, y in e.iter_epoch(0)])
    assert len(seen) == len(ds) and torch.equal(seen.sort().values, ds.labels.sort().values)


def test_loader_rejects_bad_batch():
    ds = _toy()
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        D.BatchLoader(ds, D.Augment(ds.mean, ds.std), global_batch=7, train=True, world_size=2)
    with pytest.raises(ValueError, match="larger than the training set"):
        D.BatchLoader(ds, D.Augment(ds.mean, ds.std), global_batch=64, train=True)


def test_augment_translates_and_flips():
    x = torch.zeros(2, 1, 6, 6, dtype=torch.uint8)
    x[:, :, 0, 0] = 255
    aug = D.Augment((0.0,), (1.0,), pad=2, flip=True)
    offs = torch.tensor([[2, 2], [0, 4]])
    out = aug(x, (offs, torch.tensor([False, True])))
    assert out[0, 0, 0, 0] == 1.0  # offset (2, 2) = no shift
    # offset (0, 4): shifted down 2 and left 2 -> pixel leaves; after flip nothing remains at 255
    assert out[1].sum() == 0
    assert torch.equal(aug(x), x.float() / 255)  # no params: only normalisation


def _image_folder(root, sizes, mode="L"):
    from PIL import Image

    for ci, c in enumerate(["cat", "dog"]):
        (root / c).mkdir(parents=True)
        for i, s in enumerate(sizes):
            a = np.full((s, s) if mode == "L" else (s, s, 3), 40 * ci + i, np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")


def test_image_folder(tmp_path):
    pytest.importorskip("PIL", reason="Pillow decodes ImageFolder images")
    _image_folder(tmp_path / "train", [12] * 3)
    _image_folder(tmp_path / "val", [12] * 2)
    tr, va = D.build_datasets(f"imagefolder:{tmp_path / 'train'},{tmp_path / 'val'}", in_chans=1)
    assert tr.classes == ("cat", "dog") and len(tr) == 6 and len(va) == 4 and tr.image_shape == (1, 12, 12)
    x, y = tr[4]
    assert x.shape == (1, 12, 12) and x.dtype == torch.uint8 and y == 1 and int(x[0, 0, 0]) == 41
    loader = D.BatchLoader(
        tr, D.augment_for("imagefolder:a,b", tr, train=True), global_batch=3, train=True, num_workers=0
    )
    batches = list(loader.iter_epoch(0))
    assert len(batches) == 2 and batches[0][1].shape == (3, 1, 12, 12)
    rgb, _ = D.build_datasets(f"imagefolder:{tmp_path / 'train'},{tmp_path / 'val'}", in_chans=3, image_size=8)
    assert rgb.image_shape == (3, 8, 8)


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL", reason="Pillow decodes ImageFolder images")
    _image_folder(tmp_path / "mixed", [12, 16])
    ds = D.ImageFolderDataset(tmp_path / "mixed", in_chans=1)
    with pytest.raises(D.DataError, match="pass --image-size"):
        ds[1]
    assert ds.select(torch.tensor([0]))[0][0].shape == (1, 12, 12)
    with pytest.raises(D.DataError, match="does not exist"):
        D.ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(D.DataError, match="no class sub-directories"):
        D.ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(D.DataError, match="cannot decode"):
        D.ImageFolderDataset(tmp_path / "bad")
    with pytest.raises(ValueError, match="imagefolder:TRAIN_DIR,VAL_DIR"):
        D.parse_data_spec("imagefolder:only-one")
    with pytest.raises(ValueError, match="valid: fashion-mnist"):
        D.parse_data_spec("cifar10")
