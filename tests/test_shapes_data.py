"""benchmarks/shapes.py: the second synthetic data set (shapes), in the folder: layout."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from benchmarks import shapes
from benchmarks.shapes import SHAPE_CLASSES, Canvas, draw_object, make_shapes, sample
from nni_rspnet.seg.data import DataConfig, build_datasets

SIZE = (32, 64)


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes") / "data")
    return root, make_shapes(root, num_train=12, num_val=6, image_size=SIZE, seed=3)


def test_layout_loads_through_build_datasets(small_set):
    root, meta = small_set
    assert not meta["reused"] and meta["classes"] == SHAPE_CLASSES
    with open(os.path.join(root, "classes.txt"), encoding="utf-8") as f:
        assert f.read().split() == SHAPE_CLASSES
    train, val, classes = build_datasets(DataConfig(dataset="folder:" + root, augment=False), len(SHAPE_CLASSES))
    assert classes == SHAPE_CLASSES and (len(train), len(val)) == (12, 6)
    image, mask = val[0]
    assert tuple(image.shape) == (3, *SIZE) and tuple(mask.shape) == SIZE
    with Image.open(os.path.join(root, "train", "images", "00011.png")) as im:
        assert im.mode == "RGB" and im.size == (SIZE[1], SIZE[0])
    with Image.open(os.path.join(root, "train", "masks", "00011.png")) as im:
        assert im.mode == "L"
    assert not [n for n in os.listdir(os.path.dirname(root)) if n != "data"]  # no temporary folder left


def test_same_arguments_give_identical_files_and_splits_differ(small_set, tmp_path):
    root, _ = small_set
    again = make_shapes(str(tmp_path / "again"), num_train=12, num_val=6, image_size=SIZE, seed=3)
    assert not again["reused"]
    first, second = _files(root), _files(str(tmp_path / "again"))
    assert sorted(first) == sorted(second) and first == second
    assert first["train/images/00000.png"] != first["val/images/00000.png"]  # separate streams
    other = make_shapes(str(tmp_path / "seed4"), num_train=12, num_val=6, image_size=SIZE, seed=4)
    assert other["seed"] == 4
    assert _files(str(tmp_path / "seed4"))["train/images/00000.png"] != first["train/images/00000.png"]


def test_a_stored_set_is_kept_and_other_arguments_replace_it(tmp_path):
    root = str(tmp_path / "data")
    make_shapes(root, num_train=4, num_val=2, image_size=SIZE)
    stamp = os.stat(os.path.join(root, "meta.json")).st_mtime_ns
    assert make_shapes(root, num_train=4, num_val=2, image_size=SIZE)["reused"]
    assert os.stat(os.path.join(root, "meta.json")).st_mtime_ns == stamp
    os.remove(os.path.join(root, "val", "masks", "00001.png"))  # incomplete: made again
    assert not make_shapes(root, num_train=4, num_val=2, image_size=SIZE)["reused"]
    bigger = make_shapes(root, num_train=6, num_val=2, image_size=SIZE)
    assert not bigger["reused"] and len(os.listdir(os.path.join(root, "train", "images"))) == 6
    with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
        assert json.load(f)["num_train"] == 6
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_refuses_a_folder_of_other_files_and_bad_arguments(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no shapes data set"):
        make_shapes(str(tmp_path / "mine"), num_train=2, num_val=2, image_size=SIZE)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(str(tmp_path / "x"), num_train=2, num_val=2, image_size=(8, 64))
    with pytest.raises(ValueError, match="num_train"):
        make_shapes(str(tmp_path / "x"), num_train=0, num_val=2)


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return sample(*args)

    monkeypatch.setattr(shapes, "sample", failing)
    with pytest.raises(KeyboardInterrupt):
        make_shapes(str(tmp_path / "data"), num_train=5, num_val=2, image_size=SIZE)
    assert os.listdir(tmp_path) == []


def test_masks_hold_class_ids_or_ignore_and_every_class_appears():
    counts = np.zeros(256, np.int64)
    for i in range(40):
        image, mask = sample(0, "train", i, SIZE)
        assert image.shape == (*SIZE, 3) and image.dtype == np.uint8 and mask.shape == SIZE
        counts += np.bincount(mask.ravel(), minlength=256)
    present = set(np.flatnonzero(counts).tolist())
    assert present == set(range(len(SHAPE_CLASSES))) | {255}
    assert 0 < counts[255] < 0.1 * counts.sum()  # a thin rim, not whole objects


def test_image_does_not_depend_on_the_split_size():
    a = sample(5, "val", 7, SIZE)
    b = sample(5, "val", 7, SIZE)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], sample(5, "train", 7, SIZE)[0])


@pytest.mark.parametrize("order", [("disc", "square"), ("square", "disc")])
def test_the_object_drawn_on_top_owns_its_pixels(order):
    h, w = SIZE
    rng = np.random.default_rng(0)
    canvas = Canvas(np.full((shapes.SUPERSAMPLE * h, shapes.SUPERSAMPLE * w, 3), 128, np.float32))
    # A disc over x in [14, 34] and an axis-aligned square over x in [31.5, 48.5]: columns 32 and 33 of
    # row 16 lie inside both.
    where = {"disc": dict(radius=10.0, angle=0.0, centre=(16.0, 24.0)),
             "square": dict(radius=12.0, angle=np.pi / 4, centre=(16.0, 40.0))}
    for kind in order:
        draw_object(canvas, rng, kind, texture="solid", **where[kind])
    image, mask = canvas.finish()
    disc, square = SHAPE_CLASSES.index("disc"), SHAPE_CLASSES.index("square")
    top = SHAPE_CLASSES.index(order[1])
    assert mask[16, 32] == mask[16, 33] == top
    assert mask[16, 20] == disc and mask[16, 44] == square and mask[16, 2] == mask[16, 60] == 0
    only_top = (16, 20) if top == disc else (16, 44)
    assert np.allclose(image[16, 32], image[only_top]) and np.allclose(image[16, 33], image[only_top])
    assert not np.allclose(image[16, 20], image[16, 44])
    assert set(np.unique(mask).tolist()) == {0, disc, square, 255}
