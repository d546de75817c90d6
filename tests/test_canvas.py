"""Canvas tasks (globalctx.train.canvas): determinism, labels, balance, shapes, split separation."""

import numpy as np
import pytest
import torch

from globalctx.train import canvas
from globalctx.train.canvas import ITEM, build_canvas_datasets, make_canvas, make_pairs
from globalctx.train.data import augment_for, build_datasets, load_fashion_mnist, parse_data_spec


def _toy_source(n_per_class=6, classes=10):
    """Distinct synthetic 28x28 items: image i is filled with value 100 + i (class = i % classes)."""
    n = n_per_class * classes
    images = np.zeros((n, ITEM, ITEM), dtype=np.uint8)
    for i in range(n):
        images[i, 2:-2, 2:-2] = 100 + i
    return images, np.arange(n) % classes


@pytest.mark.parametrize("make", [make_canvas, make_pairs])
def test_same_seed_bit_identical_other_seed_differs(make):
    images, labels = _toy_source()
    a, b = make(images, labels, 50, seed=3), make(images, labels, 50, seed=3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    c = make(images, labels, 50, seed=4)
    assert not torch.equal(a.images, c.images)
    d = make(images, labels, 50, seed=3, split="test")
    assert not torch.equal(a.images, d.images)


@pytest.mark.parametrize("make,k,n_classes", [(make_canvas, 1, 10), (make_pairs, 2, 2)])
def test_shapes_dtypes_and_balance(make, k, n_classes):
    images, labels = _toy_source()
    s = make(images, labels, 101, size=60)
    assert s.images.shape == (101, 1, 60, 60) and s.images.dtype == torch.uint8
    assert s.labels.shape == (101,) and s.labels.dtype == torch.int64
    assert s.boxes.shape == (101, k, 2) and s.item_classes.shape == s.item_index.shape == (101, k)
    counts = torch.bincount(s.labels, minlength=n_classes)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1
    assert int(s.boxes.min()) >= 0 and int(s.boxes.max()) <= 60 - ITEM


def test_canvas_label_is_the_pasted_item():
    images, labels = _toy_source()
    s = make_canvas(images, labels, 40, clutter=0)  # no clutter: the canvas is the item, shifted
    for i in range(40):
        y, x = s.boxes[i, 0].tolist()
        src = int(s.item_index[i, 0])
        assert int(s.labels[i]) == labels[src] == int(s.item_classes[i, 0])
        assert torch.equal(s.images[i, 0, y : y + ITEM, x : x + ITEM], torch.from_numpy(images[src]))
        assert int(s.images[i].sum()) == int(images[src].astype(np.int64).sum())  # nothing outside the box


def test_pair_labels_on_constructed_items():
    # every image carries its index as intensity, so the pasted pixels name the source image
    images, labels = _toy_source()
    s = make_pairs(images, labels, 200, clutter=0)
    for i in range(200):
        (y0, x0), (y1, x1) = s.boxes[i].tolist()
        assert abs(y0 - y1) >= ITEM or abs(x0 - x1) >= ITEM  # the items never overlap
        seen = [int(s.images[i, 0, y + ITEM // 2, x + ITEM // 2]) - 100 for y, x in ((y0, x0), (y1, x1))]
        assert seen == s.item_index[i].tolist() and seen[0] != seen[1]  # two distinct images
        same = labels[seen[0]] == labels[seen[1]]
        assert int(s.labels[i]) == int(same)
    assert s.item_classes[s.labels == 0].diff(dim=1).ne(0).all()  # "different" really differs


def test_pairs_two_items_of_one_class_with_cycled_pool():
    images, labels = _toy_source(n_per_class=2)  # 2 images per class: "same" needs both
    s = make_pairs(images, labels, 64, clutter=0)
    same = s.labels == 1
    assert same.any() and (s.item_index[same, 0] != s.item_index[same, 1]).all()


def test_clutter_is_dimmer_than_items_and_within_canvas():
    images, labels = _toy_source()
    s = make_canvas(images, labels, 30, clutter=6, contrast=0.5)
    outside = s.images.clone()
    for i, (y, x) in enumerate(s.boxes[:, 0].tolist()):
        outside[i, 0, y : y + ITEM, x : x + ITEM] = 0
    assert outside.max() > 0 and outside.max() <= (159 * 128) >> 8  # half of the brightest item


@pytest.mark.parametrize("bad", [dict(n=0), dict(size=27), dict(clutter=-1), dict(fragment=0), dict(contrast=2.0)])
def test_bad_values_raise(bad):
    images, labels = _toy_source()
    kw = {"n": 4, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_canvas(images, labels, kw.pop("n"), **kw)
    with pytest.raises(ValueError, match="size must be >= 56"):
        make_pairs(images, labels, 4, size=50)
    with pytest.raises(ValueError, match="split"):
        make_canvas(images, labels, 4, split="val")


@pytest.mark.parametrize("task", canvas.CANVAS_TASKS)
def test_datasets_by_name_split_aware(fmnist, task):
    train, test = build_datasets(task, subset=300, val_subset=200, seed=1)
    assert len(train) == 300 and len(test) == 200 and train.image_shape == (1, 64, 64)
    assert train.classes == (canvas.PAIR_CLASSES if task == "fmnist-pairs" else load_fashion_mnist().classes)
    src_train, src_test = load_fashion_mnist(train=True), load_fashion_mnist(train=False)
    # items come from the split's own files: the pasted pixels equal that split's source image
    for ds, src in ((train, src_train), (test, src_test)):
        for i in range(5):
            y, x = ds.boxes[i, -1].tolist()  # the last item is pasted last, so it is intact up to max blending
            item = src.images[int(ds.item_index[i, -1]), 0]
            patch = ds.images[i, 0, y : y + ITEM, x : x + ITEM]
            assert (patch >= item).all() and (patch == item).float().mean() > 0.5
            assert int(src.labels[int(ds.item_index[i, -1])]) == int(ds.item_classes[i, -1])
    again, _ = build_canvas_datasets(task, n_train=300, n_test=1, seed=1)
    assert torch.equal(again.images, train.images)
    assert parse_data_spec(task).kind == task and augment_for(task, train, train=True).pad == 2
    sub = train.subset(100, seed=0)
    assert len(sub) == 100 and sub.boxes.shape[0] == 100


def test_unknown_task_and_image_size():
    with pytest.raises(ValueError, match="fmnist-canvas, fmnist-pairs"):
        build_canvas_datasets("fmnist-triples")
    with pytest.raises(ValueError, match="fmnist-pairs"):
        parse_data_spec("fmnist-pair")
    with pytest.raises(ValueError, match="image-size"):
        build_datasets("fmnist-canvas", image_size=32)


def test_splits_are_made_on_first_access(fmnist):
    train, test = build_canvas_datasets("fmnist-canvas", n_test=8, seed=0)
    assert len(train) == 60_000 and train.image_shape == (1, 64, 64) and train._made is None
    assert test.images.shape == (8, 1, 64, 64) and train._made is None  # the training canvases were never made
    ref = build_canvas_datasets("fmnist-canvas", n_train=1, n_test=8, seed=0)[1]
    assert torch.equal(ref.images, test.images)
    with pytest.raises(ValueError, match="unknown canvas options"):
        build_canvas_datasets("fmnist-canvas", colour=1)
    with pytest.raises(ValueError, match="size must be"):
        build_canvas_datasets("fmnist-pairs", size=40)
    small, _ = build_canvas_datasets("fmnist-canvas", n_train=50, n_test=5, size=56, clutter=2)
    assert small.image_shape == (1, 56, 56) and small.images.shape == (50, 1, 56, 56) and small.mean != (0.0957,)
