"""Canvas tasks built from real Fashion-MNIST images: where global context is needed, and a control
where attention must depend on the query.

Shape legend: ``N`` samples, ``K`` items per canvas, ``S`` canvas side (default 64).

Two tasks, both on an ``S x S`` grey canvas with the same clutter (``clutter`` fragments of
``fragment x fragment`` pixels cropped from random other images of the split, at ``contrast`` of
their brightness, blended with ``max``):

- ``fmnist-canvas`` (:func:`make_canvas`): one 28x28 item at a random position; the label is its
  class (10 classes). Every position needs the same piece of global context, *where the object is*:
  the situation of GCNet's Figure 1, where attention maps are expected to be alike for all queries.
- ``fmnist-pairs`` (:func:`make_pairs`): two non-overlapping items; the label is ``1`` ("same")
  when both are of the same class, ``0`` ("different") otherwise. A position on one item has to
  compare it with the *other* item, so a useful attention map depends on the query: the positive
  control for the query-independence statistics.

Every sample is a deterministic function of ``(seed, split, n, task options)`` (a NumPy PCG64
generator), so the same call returns bit-identical tensors. Labels are exactly class-balanced
(counts differ by at most one). Items and fragments come from the split's own images: the
training canvases use only the training IDX files, the test canvases only the test files. Pasting
is vectorised over samples, so 60,000 canvases take a few seconds.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch

from .data import FASHION_MNIST_CLASSES, TensorImageDataset, load_fashion_mnist

__all__ = [
    "CANVAS_TASKS",
    "CanvasSamples",
    "CanvasDataset",
    "make_canvas",
    "make_pairs",
    "build_canvas_datasets",
]

CANVAS_TASKS = ("fmnist-canvas", "fmnist-pairs")
PAIR_CLASSES = ("different", "same")
ITEM = 28  # side of a Fashion-MNIST image
# Mean / std of the canvases (measured on 60,000 training canvases of each task, seed 0, defaults).
_NORM = {"fmnist-canvas": ((0.0957,), (0.2133,)), "fmnist-pairs": ((0.1458,), (0.2671,))}
_TASK_TAG = {"fmnist-canvas": 1, "fmnist-pairs": 2}
_SPLIT_TAG = {"train": 1, "test": 2}
_CHUNK = 8192  # samples per vectorised paste (bounds the index tensors to ~50 MB)


class CanvasSamples(NamedTuple):
    """Generated canvases and what is on them.

    Shape:
        images: uint8 ``[N, 1, S, S]``; labels: int64 ``[N]``; boxes: int64 ``[N, K, 2]`` top-left
        ``(y, x)`` of each 28x28 item; item_classes: int64 ``[N, K]``; item_index: int64 ``[N, K]``
        (index of each item's image in the source split).
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    item_classes: torch.Tensor
    item_index: torch.Tensor


class CanvasDataset(TensorImageDataset):
    """A :class:`TensorImageDataset` of canvases that also keeps ``boxes``, ``item_classes`` and
    ``item_index`` (see :class:`CanvasSamples`) through :meth:`subset`.

    ``samples`` is a :class:`CanvasSamples` or a function returning it; a function runs on the first
    access to the tensors (so ``len``, ``classes`` and ``image_shape`` of a split that is never
    read, e.g. the training split during evaluation, cost nothing). ``n`` and ``side`` must then
    be given.
    """

    def __init__(self, samples, *, classes, mean, std, n: int | None = None, side: int | None = None):
        if isinstance(samples, CanvasSamples):
            self._made, self._make = samples, None
            n, side = len(samples.labels), samples.images.shape[-1]
        elif callable(samples) and n is not None and side is not None:
            self._made, self._make = None, samples
        else:
            raise ValueError("samples must be CanvasSamples, or a function with n= and side= given")
        self._n, self._side = int(n), int(side)
        self.classes = tuple(classes)
        self.mean, self.std = tuple(mean), tuple(std)

    def samples(self) -> CanvasSamples:
        """The canvases (made now if they were deferred)."""
        if self._made is None:
            self._made, self._make = self._make(), None
        return self._made

    images = property(lambda self: self.samples().images, doc="uint8 ``[N, 1, S, S]``")
    labels = property(lambda self: self.samples().labels, doc="int64 ``[N]``")
    boxes = property(lambda self: self.samples().boxes, doc="int64 ``[N, K, 2]``")
    item_classes = property(lambda self: self.samples().item_classes, doc="int64 ``[N, K]``")
    item_index = property(lambda self: self.samples().item_index, doc="int64 ``[N, K]``")

    def __len__(self) -> int:
        return self._n

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self._side, self._side)

    def subset(self, n: int | None, seed: int = 0) -> CanvasDataset:
        if n is None or n >= len(self):
            return self
        from .data import balanced_indices

        idx = balanced_indices(self.labels, n, seed)
        picked = CanvasSamples(*(t[idx] for t in self.samples()))
        return CanvasDataset(picked, classes=self.classes, mean=self.mean, std=self.std)


# ----------------------------------------------------------------------------- helpers
def _rng(seed: int, task: str, split: str, n: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, _TASK_TAG[task], _SPLIT_TAG[split], int(n)])


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` labels in ``0..k-1``, each count ``n // k`` or one more, in random order."""
    return rng.permutation(np.arange(n) % k)


def _draw_of_class(rng: np.random.Generator, labels: np.ndarray, want: np.ndarray) -> np.ndarray:
    """One source index per entry of ``want`` (a class per entry), taken from a random permutation
    of that class's images in order, so entries of one class get distinct images while the class
    has enough (and cycle through it when it has not)."""
    out = np.empty(len(want), dtype=np.int64)
    for c in np.unique(want):
        pool = np.flatnonzero(labels == c)
        if len(pool) == 0:
            raise ValueError(f"class {int(c)} has no images in the source split")
        slots = np.flatnonzero(want == c)
        out[slots] = rng.permutation(pool)[np.arange(len(slots)) % len(pool)]
    return out


def _paste_max(canvas: torch.Tensor, patches: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> None:
    """``canvas[i, y_i:y_i+p, x_i:x_i+q] = max(canvas[...], patches[i])`` for every ``i``, in place.

    Shape:
        canvas: uint8 ``[N, S, S]``; patches: uint8 ``[N, p, q]``; ys, xs: int64 ``[N]``.
    """
    n, side, _ = canvas.shape
    p, q = patches.shape[1:]
    flat = canvas.view(-1)  # [N * S * S]
    dy = torch.arange(p).view(1, p, 1)
    dx = torch.arange(q).view(1, 1, q)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        base = (torch.arange(lo, hi) * side * side).view(-1, 1, 1)
        idx = (base + (ys[lo:hi].view(-1, 1, 1) + dy) * side + xs[lo:hi].view(-1, 1, 1) + dx).view(-1)  # [n*p*q]
        flat[idx] = torch.maximum(flat[idx], patches[lo:hi].reshape(-1))  # indices distinct within a call


def _paste_items(canvas: torch.Tensor, images: np.ndarray, src: np.ndarray, boxes: np.ndarray) -> None:
    """Paste item ``k`` of every canvas (source image ``src[:, k]``) at ``boxes[:, k]``, in order.

    Shape:
        canvas: uint8 ``[N, S, S]``; images: uint8 ``[n_src, 28, 28]``; src: ``[N, K]``; boxes: ``[N, K, 2]``.
    """
    for k in range(src.shape[1]):
        ys, xs = torch.from_numpy(boxes[:, k, 0]), torch.from_numpy(boxes[:, k, 1])
        _paste_max(canvas, torch.from_numpy(images[src[:, k]]), ys, xs)


def _add_clutter(
    canvas: torch.Tensor, rng, images: np.ndarray, *, clutter: int, fragment: int, contrast: float
) -> None:
    """Paste ``clutter`` fragments per canvas: crops of random source images, dimmed to ``contrast``."""
    n, side, _ = canvas.shape
    if clutter == 0:
        return
    margin = min(4, (ITEM - fragment) // 2)  # crop from the inner part of an image, where the object is
    scale = round(contrast * 256)
    for _ in range(clutter):
        src = rng.integers(0, len(images), n)
        cy, cx = (rng.integers(margin, ITEM - fragment - margin + 1, n) for _ in range(2))
        rows = cy[:, None] + np.arange(fragment)  # [N, f]
        cols = cx[:, None] + np.arange(fragment)  # [N, f]
        crops = images[src[:, None, None], rows[:, :, None], cols[:, None, :]]  # [N, f, f] uint8
        crops = ((crops.astype(np.uint16) * scale) >> 8).astype(np.uint8)
        ys, xs = (rng.integers(0, side - fragment + 1, n) for _ in range(2))
        _paste_max(canvas, torch.from_numpy(crops), torch.from_numpy(ys), torch.from_numpy(xs))


def _check(n: int, size: int, clutter: int, fragment: int, contrast: float, items: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < ITEM * (2 if items > 1 else 1):
        raise ValueError(f"size must be >= {ITEM * (2 if items > 1 else 1)} for {items} item(s), got {size}")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0, got {clutter}")
    if not 1 <= fragment <= ITEM:
        raise ValueError(f"fragment must be in 1..{ITEM}, got {fragment}")
    if not 0.0 <= contrast <= 1.0:
        raise ValueError(f"contrast must be in [0, 1], got {contrast}")


def _source(images, labels) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images.squeeze(1) if torch.is_tensor(images) and images.ndim == 4 else images)
    labels = np.asarray(labels).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (ITEM, ITEM):
        raise ValueError(f"images must be uint8 [n, 28, 28] (or [n, 1, 28, 28]), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [n] matching the images, got {labels.shape} for {len(images)} images")
    return images, labels


# ----------------------------------------------------------------------------- tasks
def make_canvas(
    images,
    labels,
    n: int,
    *,
    size: int = 64,
    clutter: int = 8,
    fragment: int = 10,
    contrast: float = 0.5,
    seed: int = 0,
    split: str = "train",
) -> CanvasSamples:
    """Single-object canvases: one 28x28 item at a uniformly random position among clutter.

    Args:
        images, labels: the source split, uint8 ``[n_src, 28, 28]`` (or ``[n_src, 1, 28, 28]``)
            and integer classes ``[n_src]`` (tensors or arrays).
        n: canvases to make. Labels are balanced over the classes of ``labels``.
        size: canvas side ``S``. Default: ``64``.
        clutter: fragments per canvas. Default: ``8``.
        fragment: side of a fragment. Default: ``10``.
        contrast: brightness of the fragments relative to their source. Default: ``0.5``.
        seed: generator seed. Default: ``0``.
        split: ``'train'`` or ``'test'``; enters the seed, so the two splits draw independently.

    Shape:
        Returns :class:`CanvasSamples` with ``images`` uint8 ``[n, 1, S, S]``, ``labels`` ``[n]``
        (the item's class), ``boxes`` ``[n, 1, 2]``, ``item_classes``/``item_index`` ``[n, 1]``.
    """
    _check(n, size, clutter, fragment, contrast, 1)
    images, labels = _source(images, labels)
    task = "fmnist-canvas"
    if split not in _SPLIT_TAG:
        raise ValueError(f"split must be one of {sorted(_SPLIT_TAG)}, got {split!r}")
    rng = _rng(seed, task, split, n)
    num_classes = int(labels.max()) + 1
    y = _balanced(rng, n, num_classes)
    src = _draw_of_class(rng, labels, y)[:, None]  # [N, 1]
    boxes = rng.integers(0, size - ITEM + 1, (n, 1, 2))
    canvas = torch.zeros(n, size, size, dtype=torch.uint8)  # [N, S, S]
    _add_clutter(canvas, rng, images, clutter=clutter, fragment=fragment, contrast=contrast)
    _paste_items(canvas, images, src, boxes)
    return CanvasSamples(
        canvas.unsqueeze(1),  # [N, 1, S, S]
        torch.from_numpy(y.astype(np.int64)),
        torch.from_numpy(boxes.astype(np.int64)),
        torch.from_numpy(y.astype(np.int64)[:, None]),
        torch.from_numpy(src),
    )


def _separated_boxes(rng, n: int, size: int, max_rounds: int = 10_000) -> np.ndarray:
    """Top-left corners ``[n, 2, 2]`` of two non-overlapping 28x28 boxes, uniform over such pairs
    (rejection sampling, vectorised)."""
    boxes = np.empty((n, 2, 2), dtype=np.int64)
    todo = np.arange(n)
    for _ in range(max_rounds):
        if len(todo) == 0:
            return boxes
        cand = rng.integers(0, size - ITEM + 1, (len(todo), 2, 2))
        d = np.abs(cand[:, 0] - cand[:, 1])  # [m, 2]
        ok = (d >= ITEM).any(axis=1)
        boxes[todo[ok]] = cand[ok]
        todo = todo[~ok]
    raise RuntimeError(f"could not place two separate items on a {size}-pixel canvas")


def make_pairs(
    images,
    labels,
    n: int,
    *,
    size: int = 64,
    clutter: int = 8,
    fragment: int = 10,
    contrast: float = 0.5,
    seed: int = 0,
    split: str = "train",
) -> CanvasSamples:
    """Pair canvases: two non-overlapping items among clutter; label ``1`` if they are of the same
    class, else ``0``.

    Half the canvases (to one) are "same". The first item's class is balanced over the classes;
    for "different" the second class is uniform over the others. The two items of a canvas are
    always two distinct source images. Arguments as for :func:`make_canvas`.

    Shape:
        Returns :class:`CanvasSamples` with ``images`` uint8 ``[n, 1, S, S]``, ``labels`` ``[n]``
        (0 different, 1 same), ``boxes`` ``[n, 2, 2]``, ``item_classes``/``item_index`` ``[n, 2]``.
    """
    _check(n, size, clutter, fragment, contrast, 2)
    images, labels = _source(images, labels)
    task = "fmnist-pairs"
    if split not in _SPLIT_TAG:
        raise ValueError(f"split must be one of {sorted(_SPLIT_TAG)}, got {split!r}")
    rng = _rng(seed, task, split, n)
    num_classes = int(labels.max()) + 1
    y = _balanced(rng, n, 2)
    first = _balanced(rng, n, num_classes)
    second = np.where(y == 1, first, (first + rng.integers(1, num_classes, n)) % num_classes)
    cls = np.stack([first, second], axis=1)  # [N, 2]
    src = _draw_of_class(rng, labels, cls.reshape(-1)).reshape(n, 2)  # [N, 2]
    clash = np.flatnonzero(src[:, 0] == src[:, 1])
    for i in clash:  # a small class pool cycled: take the next image of the same class
        pool = np.flatnonzero(labels == cls[i, 1])
        if len(pool) < 2:
            raise ValueError(f"class {int(cls[i, 1])} needs at least 2 images for a 'same' pair")
        src[i, 1] = pool[(np.searchsorted(pool, src[i, 1]) + 1) % len(pool)]
    boxes = _separated_boxes(rng, n, size)
    canvas = torch.zeros(n, size, size, dtype=torch.uint8)  # [N, S, S]
    _add_clutter(canvas, rng, images, clutter=clutter, fragment=fragment, contrast=contrast)
    _paste_items(canvas, images, src, boxes)
    return CanvasSamples(
        canvas.unsqueeze(1),  # [N, 1, S, S]
        torch.from_numpy(y.astype(np.int64)),
        torch.from_numpy(boxes),
        torch.from_numpy(cls.astype(np.int64)),
        torch.from_numpy(src),
    )


_MAKERS = {"fmnist-canvas": make_canvas, "fmnist-pairs": make_pairs}


def build_canvas_datasets(
    task: str,
    *,
    data_dir: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    **options,
) -> tuple[CanvasDataset, CanvasDataset]:
    """``(train, test)`` canvas datasets of ``task`` (one of :data:`CANVAS_TASKS`).

    The training canvases are made from the Fashion-MNIST training files only, the test canvases
    from the test files only. ``n_train`` / ``n_test`` default to the split sizes (60,000 /
    10,000). ``options`` go to :func:`make_canvas` / :func:`make_pairs` (``size``, ``clutter``,
    ``fragment``, ``contrast``). The canvases of a split are made on the first access to its
    tensors.

    Shape:
        Each dataset holds uint8 images ``[n, 1, S, S]`` and int64 labels ``[n]``.
    """
    if task not in _MAKERS:
        raise ValueError(f"unknown canvas task {task!r}; valid: {', '.join(CANVAS_TASKS)}")
    classes = FASHION_MNIST_CLASSES if task == "fmnist-canvas" else PAIR_CLASSES
    unknown = sorted(set(options) - {"size", "clutter", "fragment", "contrast"})
    if unknown:
        raise ValueError(f"unknown canvas options {unknown}; valid: size, clutter, fragment, contrast")
    side = options.get("size", 64)
    opts = (options.get("clutter", 8), options.get("fragment", 10), options.get("contrast", 0.5))
    _check(1, side, *opts, 2 if task == "fmnist-pairs" else 1)

    def maker(split: str, n: int):
        def make() -> CanvasSamples:
            src = load_fashion_mnist(data_dir, train=split == "train")
            return _MAKERS[task](src.images, src.labels, n, seed=seed, split=split, **options)

        return make

    sizes = {"train": n_train, "test": n_test}
    for split, n in sizes.items():  # default: the size of the source split (its IDX files, read once)
        sizes[split] = len(load_fashion_mnist(data_dir, train=split == "train")) if n is None else n
    train, test = (
        CanvasDataset(maker(split, n), classes=classes, mean=(0.0,), std=(1.0,), n=n, side=side)
        for split, n in sizes.items()
    )
    if options:  # other canvases: the statistics of their training canvases
        x = train.images.float().div_(255)
        mean, std = (round(x.mean().item(), 4),), (round(x.std().item(), 4),)
    else:
        mean, std = _NORM[task]
    train.mean = test.mean = mean
    train.std = test.std = std
    return train, test
