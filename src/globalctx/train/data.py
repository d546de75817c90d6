"""Data for the trainer: Fashion-MNIST from its IDX files, ImageFolder directories, and a resumable,
rank-aware batch loader.

Shape legend: ``N`` batch, ``C`` channels, ``H, W`` image height and width.

Design: a dataset yields *un-augmented* ``uint8`` images ``[C, H, W]``. The loader decides the
order of every batch from ``(seed, epoch)`` alone and draws the augmentation of a global batch
from ``(seed, epoch, step)`` alone, then hands each rank its slice. So

- resuming at ``(epoch, step)`` replays exactly the batches an uninterrupted run would see (no
  sampler or worker RNG state to save), and
- ``k`` processes with per-rank batch ``B / k`` see the same global batches, with the same
  augmentation, as one process with batch ``B``.

Augmentation (training only), documented in docs/training.md:

- ``fashion-mnist``: random translation by up to 2 px (zero padding + random crop) and random
  horizontal flip, then mean/std normalisation (0.2860 / 0.3530, the training-set statistics).
- ``imagefolder``: random translation by up to 1/8 of the side and random horizontal flip, then
  normalisation (ImageNet mean/std for RGB, 0.5 / 0.5 for grey).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DataError",
    "FASHION_MNIST_CLASSES",
    "balanced_indices",
    "TensorImageDataset",
    "ImageFolderDataset",
    "find_fashion_mnist",
    "fashion_mnist_source",
    "data_source",
    "load_fashion_mnist",
    "read_idx",
    "build_datasets",
    "BatchLoader",
    "Augment",
    "default_workers",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FMNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class DataError(RuntimeError):
    """A dataset is missing, corrupt or inconsistent; the message says what to do."""


def default_workers(world_size: int = 1) -> int:
    """DataLoader workers for decoding image files: the cores left per process, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus // max(1, world_size) - 1))


# ----------------------------------------------------------------------------- Fashion-MNIST
def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "globalctx" / "fashion-mnist"


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    for d in (data_dir, os.environ.get("GLOBALCTX_DATA")):
        if d:
            dirs += [Path(d), Path(d) / "fashion-mnist", Path(d) / "FashionMNIST" / "raw"]
    return dirs + [DEBIAN_DIR, user_cache_dir()]


def _find_file(d: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (d / name).is_file():
            return d / name
    return None


def _explicit_dir_problem(d: Path) -> str | None:
    """Why the directory the user named cannot be read as Fashion-MNIST (``None`` when it can):
    looked up in ``d``, ``d/fashion-mnist`` and ``d/FashionMNIST/raw``."""
    if not d.is_dir():
        return f"{d} does not exist" if not d.exists() else f"{d} is not a directory"
    problems = []
    for sub in (d, d / "fashion-mnist", d / "FashionMNIST" / "raw"):
        if not sub.is_dir():
            continue
        if all(_find_file(sub, stem) for stem in _FMNIST_FILES.values()):
            return None
        bad = []
        for stem in _FMNIST_FILES.values():
            if _find_file(sub, stem) is None:
                odd = [sub / n for n in (stem, stem + ".gz") if (sub / n).exists()]
                bad.append(f"{odd[0]} is not a file" if odd else f"{sub / stem}(.gz) is missing")
        problems.append((len(bad), "; ".join(bad)))
    return min(problems)[1] if problems else f"{d} holds none of the four IDX files"


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding the four Fashion-MNIST IDX files (plain or ``.gz``).

    A directory named explicitly, ``data_dir`` (else ``$GLOBALCTX_DATA``), is the only one
    looked in (with its ``fashion-mnist/`` and ``FashionMNIST/raw/`` sub-directories): when it
    cannot be used, :class:`DataError` names the missing or broken file rather than reading
    another copy. Without one: Debian's ``/usr/share/datasets/fashion-mnist/`` (package
    ``dataset-fashion-mnist``), then the user cache ``~/.cache/globalctx/fashion-mnist``.
    Raises :class:`DataError` saying how to get the files when none has them.
    """
    explicit = data_dir or os.environ.get("GLOBALCTX_DATA")
    if explicit:
        where = "--data-dir" if data_dir else "$GLOBALCTX_DATA"
        d = Path(explicit)
        problem = _explicit_dir_problem(d)
        if problem is not None:
            raise DataError(
                f"{where} {d} cannot be used: {problem}; it needs train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each plain or .gz)"
            )
        return next(
            sub
            for sub in (d, d / "fashion-mnist", d / "FashionMNIST" / "raw")
            if all(_find_file(sub, stem) for stem in _FMNIST_FILES.values())
        )
    tried = _candidate_dirs(None)
    for d in tried:
        if all(_find_file(d, stem) for stem in _FMNIST_FILES.values()):
            return d
    raise DataError(
        "Fashion-MNIST not found (looked in: "
        + ", ".join(str(d) for d in tried)
        + "). Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
        f"`globalctx train --download ...` (fetches the IDX files from {FMNIST_URL} into "
        f"{user_cache_dir()}), or point --data-dir / $GLOBALCTX_DATA at a directory holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz"
    )


@functools.lru_cache(maxsize=8)
def _digest(files: tuple[Path, ...], stamp: tuple) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def fashion_mnist_source(data_dir: str | os.PathLike | None = None) -> dict:
    """``{"dir", "files", "sha256"}``: the directory actually read, its four files and a SHA-256
    over their bytes (recorded in a run's ``config.json``)."""
    d = find_fashion_mnist(data_dir)
    files = tuple(_find_file(d, stem) for stem in _FMNIST_FILES.values())
    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return {"dir": str(d.resolve()), "files": [f.name for f in files], "sha256": _digest(files, stamp)}


def download_fashion_mnist(dest: str | os.PathLike | None = None) -> Path:
    """Fetch the four official IDX files into ``dest`` (default: the user cache); atomic per file."""
    import urllib.request

    dest = Path(dest) if dest else user_cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for stem in _FMNIST_FILES.values():
        target = dest / (stem + ".gz")
        if target.is_file():
            continue
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(FMNIST_URL + stem + ".gz", timeout=60) as r, open(tmp, "wb") as f:
                f.write(r.read())
        except OSError as e:
            raise DataError(
                f"download of {FMNIST_URL}{stem}.gz failed ({e}); install the Debian package "
                "dataset-fashion-mnist or copy the IDX files into --data-dir"
            ) from None
        os.replace(tmp, target)
    return dest


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a numpy array of its stored dtype and shape.

    Raises :class:`DataError` naming the file when the header or size is inconsistent.
    """
    path = Path(path)
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; the file is corrupt, fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number); the file is corrupt, fetch it again")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path} has {len(raw)} bytes but its header says {expected} (shape {dims}); "
            "the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=4)
def _read_split(d: Path, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Decoded IDX arrays of one split (cached per process; ``stamp`` = file sizes and mtimes)."""
    return read_idx(_find_file(d, _FMNIST_FILES[f"{split}_images"])), read_idx(
        _find_file(d, _FMNIST_FILES[f"{split}_labels"])
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, train: bool = True) -> TensorImageDataset:
    """Fashion-MNIST training (60k) or test (10k) split as a :class:`TensorImageDataset`."""
    d = find_fashion_mnist(data_dir)
    split = "train" if train else "test"
    files = [_find_file(d, _FMNIST_FILES[f"{split}_{k}"]) for k in ("images", "labels")]
    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    images, labels = _read_split(d, split, stamp)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{files[0]} holds images of shape {images.shape}, expected [n, 28, 28]")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{files[1]} holds labels of shape {labels.shape}, expected [{len(images)}] like {files[0]}")
    image_file, label_file = files
    if images.dtype != np.uint8:
        raise DataError(f"{image_file} stores {images.dtype} values; Fashion-MNIST images are uint8 (IDX type 0x08)")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{label_file} stores {labels.dtype} values; Fashion-MNIST labels are integers")
    if labels.max(initial=0) >= 10 or labels.min(initial=0) < 0:
        raise DataError(
            f"{label_file} holds labels outside 0..9 ({int(labels.min(initial=0))}..{int(labels.max(initial=0))}); "
            "the file is corrupt, fetch it again"
        )
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorImageDataset(x, y, classes=FASHION_MNIST_CLASSES, mean=FMNIST_MEAN, std=FMNIST_STD)


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held in memory: ``images`` uint8 ``[N, C, H, W]``, ``labels`` int64 ``[N]``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, classes: Sequence[str], mean, std):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels
        self.classes = tuple(classes)
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx], self.labels[idx]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None, seed: int = 0) -> TensorImageDataset:
        """A fixed, class-balanced subset of ``n`` images (drawn with ``seed``); ``None`` = all."""
        return self if n is None or n >= len(self) else _subset(self, n, seed)


def balanced_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    num_classes = int(labels.max()) + 1
    # round-robin over classes in the random order -> each class gets ~n / num_classes images
    lab = labels[order]
    by_class = torch.argsort(lab, stable=True)  # positions in `order`, grouped by class
    counts = torch.bincount(lab, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.empty_like(order)
    within[by_class] = torch.arange(len(order)) - starts[lab[by_class]]  # rank inside its class
    rank = within * num_classes + lab
    keep = order[torch.argsort(rank, stable=True)[:n]]
    return keep.sort().values


def _subset(ds, n: int, seed: int):
    idx = balanced_indices(ds.labels, n, seed)
    if isinstance(ds, TensorImageDataset):
        return TensorImageDataset(ds.images[idx], ds.labels[idx], classes=ds.classes, mean=ds.mean, std=ds.std)
    return ds.select(idx)


# ----------------------------------------------------------------------------- ImageFolder
class ImageFolderDataset(torch.utils.data.Dataset):
    """``root/<class>/<image>`` directories (torchvision's ImageFolder layout), decoded with Pillow.

    Args:
        root: directory with one sub-directory per class.
        in_chans: 1 (grey) or 3 (RGB). Default: ``3``.
        image_size: resize the shorter side to this and centre-crop to a square; ``None`` keeps
            the stored size, which must then be the same for every image. Default: ``None``.
        classes: class names to use (e.g. the training set's, for a validation set); ``None``
            takes the sorted sub-directory names.
    """

    def __init__(self, root, *, in_chans: int = 3, image_size: int | None = None, classes=None):
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder {root} does not exist or is not a directory")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.classes = tuple(classes) if classes is not None else tuple(found)
        if not self.classes:
            raise DataError(f"{root} has no class sub-directories (expected root/<class>/<image files>)")
        missing = [c for c in found if c not in self.classes]
        if missing:
            raise DataError(f"{root} has classes {missing} that the training set does not have")
        self.samples: list[tuple[str, int]] = []
        empty = []
        for ci, c in enumerate(self.classes):
            d = root / c
            found_here = d.rglob("*") if d.is_dir() else ()
            files = sorted(p for p in found_here if p.suffix.lower() in _IMAGE_EXT and p.is_file())
            self.samples += [(str(p), ci) for p in files]
            empty += [] if files else [c]
        if classes is None and empty and len(empty) < len(self.classes):  # a validation set may lack a class
            which = f"directory {empty[0]} holds" if len(empty) == 1 else f"directories {', '.join(empty)} hold"
            raise DataError(
                f"{root}: class {which} no image files; a class without training images cannot be learnt: "
                "add images or remove the directory"
            )
        if not self.samples:
            raise DataError(f"{root} holds no image files ({', '.join(sorted(_IMAGE_EXT))})")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.root, self.in_chans, self.image_size = root, in_chans, image_size
        self.labels = torch.tensor([s[1] for s in self.samples], dtype=torch.long)
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,), (0.5,))
        self._shape = self._load(0).shape

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image

        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if self.in_chans == 3 else "L")
                if self.image_size is not None:
                    w, h = im.size
                    s = self.image_size / min(w, h)
                    im = im.resize((max(self.image_size, round(w * s)), max(self.image_size, round(h * s))))
                    w, h = im.size
                    left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
                    im = im.crop((left, top, left + self.image_size, top + self.image_size))
                a = np.asarray(im, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"cannot decode image {path}: {e}") from None
        x = torch.from_numpy(a.copy())
        return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # [C, H, W]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        x = self._load(i)
        if hasattr(self, "_shape") and x.shape != self._shape:
            raise DataError(
                f"image {self.samples[i][0]} is {tuple(x.shape[1:])} but {self.samples[0][0]} is "
                f"{tuple(self._shape[1:])}; pass --image-size to resize all images to one size"
            )
        return x, self.samples[i][1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._shape)

    def select(self, idx: torch.Tensor) -> ImageFolderDataset:
        new = object.__new__(ImageFolderDataset)
        new.__dict__.update(self.__dict__)
        new.samples = [self.samples[i] for i in idx.tolist()]
        new.labels = self.labels[idx]
        return new

    def subset(self, n: int | None, seed: int = 0) -> ImageFolderDataset:
        return self if n is None or n >= len(self) else _subset(self, n, seed)


# ----------------------------------------------------------------------------- building
@dataclass
class DataSpec:
    kind: str  # "fashion-mnist" | "imagefolder"
    train_dir: str | None = None
    val_dir: str | None = None


def parse_data_spec(spec: str) -> DataSpec:
    """``fashion-mnist`` or ``imagefolder:TRAIN_DIR,VAL_DIR``."""
    if spec.lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return DataSpec("fashion-mnist")
    if spec.lower() in ("fmnist-canvas", "fmnist-pairs"):  # globalctx.train.canvas
        return DataSpec(spec.lower())
    if spec.startswith("imagefolder:"):
        parts = spec[len("imagefolder:") :].split(",")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--data {spec!r}: expected imagefolder:TRAIN_DIR,VAL_DIR")
        return DataSpec("imagefolder", parts[0], parts[1])
    raise ValueError(
        f"unknown --data {spec!r}; valid: fashion-mnist, fmnist-canvas, fmnist-pairs, imagefolder:TRAIN_DIR,VAL_DIR"
    )


def build_datasets(
    spec: str,
    *,
    data_dir=None,
    subset: int | None = None,
    val_subset: int | None = None,
    seed: int = 0,
    in_chans: int = 3,
    image_size: int | None = None,
):
    """``(train, val)`` datasets for a ``--data`` spec, optionally reduced to fixed subsets."""
    ds = parse_data_spec(spec)
    if ds.kind in ("fmnist-canvas", "fmnist-pairs"):
        from .canvas import build_canvas_datasets

        if image_size is not None:
            raise ValueError(f"--data {ds.kind} makes 64x64 canvases; --image-size {image_size} is not supported")
        return build_canvas_datasets(ds.kind, data_dir=data_dir, n_train=subset, n_test=val_subset, seed=seed)
    if ds.kind == "fashion-mnist":
        train = load_fashion_mnist(data_dir, train=True)
        val = load_fashion_mnist(data_dir, train=False)
        if image_size not in (None, 28):
            raise ValueError(f"Fashion-MNIST images are 28x28; --image-size {image_size} is not supported")
    else:
        train = ImageFolderDataset(ds.train_dir, in_chans=in_chans, image_size=image_size)
        val = ImageFolderDataset(ds.val_dir, in_chans=in_chans, image_size=image_size, classes=train.classes)
        if val.image_shape != train.image_shape:
            raise DataError(
                f"validation images are {val.image_shape[1:]} but training images are "
                f"{train.image_shape[1:]}; pass --image-size"
            )
    return train.subset(subset, seed), val.subset(val_subset, seed + 1)


def data_source(spec: str, data_dir=None) -> dict:
    """What a ``--data`` spec actually reads: the Fashion-MNIST directory found and a digest of its
    files (:func:`fashion_mnist_source`), or the image-folder directories, as absolute paths."""
    ds = parse_data_spec(spec)
    if ds.kind == "imagefolder":
        return {"train_dir": str(Path(ds.train_dir).resolve()), "val_dir": str(Path(ds.val_dir).resolve())}
    return fashion_mnist_source(data_dir)


# ----------------------------------------------------------------------------- augmentation
class Augment:
    """Random translation (zero padding ``pad`` + random crop) and horizontal flip of a uint8 batch,
    then normalisation to float. ``pad=0, flip=False`` (evaluation) only normalises.

    Randomness comes from the ``generator`` passed per call, so the result depends only on it.
    """

    def __init__(self, mean, std, *, pad: int = 0, flip: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.pad, self.flip = pad, flip

    def params(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image crop offsets ``[n, 2]`` and flip flags ``[n]`` for a (global) batch."""
        offs = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
        return offs, flips

    def __call__(self, x: torch.Tensor, params=None) -> torch.Tensor:
        x = x.float().div_(255)  # [N, C, H, W]
        if params is not None and (self.pad or self.flip):
            offs, flips = params
            n, _, h, w = x.shape
            if self.pad:
                xp = torch.nn.functional.pad(x, (self.pad,) * 4)  # [N, C, H + 2p, W + 2p]
                x = torch.stack([xp[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
            if self.flip:
                x = torch.where(flips.view(n, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean) / self.std


def augment_for(spec: str, dataset, *, train: bool) -> Augment:
    if not train:
        return Augment(dataset.mean, dataset.std)
    kind = parse_data_spec(spec).kind
    pad = 2 if kind in ("fashion-mnist", "fmnist-canvas", "fmnist-pairs") else max(1, dataset.image_shape[-1] // 8)
    return Augment(dataset.mean, dataset.std, pad=pad, flip=True)


# ----------------------------------------------------------------------------- loader
def _mix(*ints: int) -> int:
    """A 63-bit seed from several integers (splitmix64-style), so nearby inputs give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class BatchLoader:
    """Deterministic, resumable, rank-aware batches.

    Training (``train=True``): each epoch shuffles the indices with ``(seed, epoch)``, cuts them
    into global batches of ``global_batch`` (the incomplete last one is dropped) and gives rank
    ``r`` the ``r``-th contiguous slice of ``global_batch // world_size`` images.
    Evaluation: no shuffling, every image once; rank ``r`` takes images ``r, r + k, ...``.

    ``iter_epoch(epoch, start_step)`` yields ``(step, x, y)`` with ``x`` float ``[B, C, H, W]``
    normalised (and augmented for training). In-memory datasets are indexed directly; file-backed
    ones are decoded by a ``DataLoader`` with ``num_workers`` processes.
    """

    def __init__(
        self,
        dataset,
        augment: Augment,
        *,
        global_batch: int,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ):
        if global_batch < 1 or global_batch % world_size:
            raise ValueError(
                f"batch size {global_batch} must be a positive multiple of the number of processes {world_size}"
            )
        if train and len(dataset) < global_batch:
            raise ValueError(f"batch size {global_batch} is larger than the training set ({len(dataset)} images)")
        self.dataset, self.augment = dataset, augment
        self.global_batch, self.train, self.seed = global_batch, train, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.local_batch = global_batch // world_size

    def __len__(self) -> int:
        """Steps per epoch."""
        n = len(self.dataset)
        if self.train:
            return n // self.global_batch
        mine = len(range(self.rank, n, self.world_size))
        return -(-mine // self.local_batch)

    def _batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(indices of this rank, positions of them in the global batch) per step."""
        n = len(self.dataset)
        if not self.train:
            mine = torch.arange(self.rank, n, self.world_size)
            return [(b, None) for b in mine.split(self.local_batch)]
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, 1))
        perm = torch.randperm(n, generator=g)
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        return [(perm[s * self.global_batch :][lo:hi], torch.arange(lo, hi)) for s in range(len(self))]

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        batches = self._batches(epoch)[start_step:]
        if hasattr(self.dataset, "get_batch"):
            source = (self.dataset.get_batch(idx) for idx, _ in batches)
        else:
            dl = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=[idx.tolist() for idx, _ in batches],
                num_workers=self.num_workers,
                persistent_workers=False,
            )
            source = iter(dl)
        for step, ((_, pos), (x, y)) in enumerate(zip(batches, source), start=start_step):
            params = None
            if self.train:
                g = torch.Generator().manual_seed(_mix(self.seed, epoch, step, 2))
                offs, flips = self.augment.params(self.global_batch, g)
                params = (offs[pos], flips[pos])
            yield step, self.augment(x, params), torch.as_tensor(y)
