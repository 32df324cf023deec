"""Datasets: the built-in digits, fake Cityscapes/VOC/folder trees, paired transforms and data errors."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import nni_rspnet  # noqa: F401
from nni_rspnet.errors import ConfigError
from nni_rspnet.schema import from_mapping
from nni_rspnet.errors import DataError
from nni_rspnet.seg.builtin import BuiltinDigits, _digit_split, generate_builtin
from nni_rspnet.seg.data import DataConfig, build_datasets, pad_collate
from nni_rspnet.seg.datasets import CityscapesDataset, FolderDataset, VOCDataset
from nni_rspnet.seg.metrics import IGNORE_INDEX
from nni_rspnet.seg.transforms import build_transform
from nni_rspnet.seg.visual import palette, save_preview

H, W = 12, 16


# --- fake trees ------------------------------------------------------------------------------------

def _png(path, array, mode=None, pal=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(np.asarray(array, np.uint8))
    if mode == "P":
        im = Image.frombytes("P", im.size, np.asarray(array, np.uint8).tobytes())
        im.putpalette(pal)
    im.save(path)


def _image(seed):
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3))


def make_cityscapes(root, n=2, train_ids=False):
    """leftImg8bit + gtFine for cities a and b; labelIds masks use ids 0 (unlabelled), 7 (road), 26 (car)."""
    for split in ("train", "val"):
        for i in range(n):
            city = "a" if i % 2 == 0 else "b"
            stem = f"{city}_{i:06d}_000019"
            _png(os.path.join(root, "leftImg8bit", split, city, stem + "_leftImg8bit.png"), _image(i))
            mask = np.zeros((H, W), np.uint8)
            mask[:, :W // 2] = 0 if train_ids else 7
            mask[:, W // 2:] = 13 if train_ids else 26
            mask[0, 0] = 255 if train_ids else 0
            name = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
            _png(os.path.join(root, "gtFine", split, city, stem + name), mask)
    return root


def make_voc(root, n=2):
    pal = palette(21).reshape(-1).tolist()
    for split in ("train", "val"):
        ids = [f"2007_{split}_{i:03d}" for i in range(n)]
        os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
        with open(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        for i, name in enumerate(ids):
            os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
            Image.fromarray(_image(i).astype(np.uint8)).save(os.path.join(root, "JPEGImages", name + ".jpg"))
            mask = np.full((H, W), 15, np.uint8)  # person
            mask[:2] = 0
            mask[-1] = 255  # VOC's object border
            _png(os.path.join(root, "SegmentationClass", name + ".png"), mask, "P", pal)
    return root


def make_folder(root, n=2):
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("sky\nground\nthing\n")
    for split in ("train", "val"):
        for i in range(n):
            _png(os.path.join(root, split, "images", f"im{i}.png"), _image(i))
            mask = np.zeros((H, W), np.uint8)
            mask[H // 2:] = 1
            mask[0, :3] = 2
            _png(os.path.join(root, split, "masks", f"im{i}.png"), mask)
    return root


LAYOUTS = {
    "cityscapes": (make_cityscapes, CityscapesDataset,
                   lambda r: os.path.join(r, "leftImg8bit", "train", "a", "a_000000_000019_leftImg8bit.png"),
                   lambda r: os.path.join(r, "gtFine", "train", "a", "a_000000_000019_gtFine_labelIds.png")),
    "voc": (make_voc, VOCDataset, lambda r: os.path.join(r, "JPEGImages", "2007_train_000.jpg"),
            lambda r: os.path.join(r, "SegmentationClass", "2007_train_000.png")),
    "folder": (make_folder, FolderDataset, lambda r: os.path.join(r, "train", "images", "im0.png"),
               lambda r: os.path.join(r, "train", "masks", "im0.png")),
}


# --- built-in dataset ------------------------------------------------------------------------------

def test_builtin_items_and_determinism():
    ds = BuiltinDigits("train", 20, [32, 64], seed=3)
    img, mask = ds[0]
    assert img.shape == (3, 32, 64) and img.dtype == torch.float32
    assert mask.shape == (32, 64) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= set(range(11)) | {IGNORE_INDEX}
    same = BuiltinDigits("train", 20, [32, 64], seed=3)
    assert torch.equal(same[5][0], ds[5][0]) and torch.equal(same[5][1], ds[5][1])
    a, _ = generate_builtin("train", 20, [32, 64], 3)
    b, _ = generate_builtin("train", 20, [32, 64], 4)
    assert not np.array_equal(a, b)
    # Plain init values only: the pickled dataset (what NNI serialises) holds no pixels.
    assert len(pickle.dumps(ds)) < 2000


def test_builtin_masks_are_exact():
    images, masks = generate_builtin("val", 200, [48, 96], 1)
    digits = (masks > 0) & (masks < IGNORE_INDEX)
    background = masks == 0
    assert 0.02 < digits.mean() < 0.4 and 0.5 < background.mean()
    assert (masks == IGNORE_INDEX).mean() < 0.15  # a thin rim, not a blanket
    near_bg = np.zeros_like(digits)
    near_bg[:, 1:] |= background[:, :-1]
    near_bg[:, :-1] |= background[:, 1:]
    near_bg[:, :, 1:] |= background[:, :, :-1]
    near_bg[:, :, :-1] |= background[:, :, 1:]
    assert not (digits & near_bg).any(), "every glyph is separated from the background by the ignore rim"
    # Every digit class occurs, and digit pixels differ from the photo around them.
    assert set(np.unique(masks)) == set(range(11)) | {IGNORE_INDEX}


def test_builtin_splits_use_disjoint_digits():
    train, val = _digit_split("train", 0, 1797), _digit_split("val", 0, 1797)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == 1797


def test_builtin_generation_is_cached_and_independent_of_global_seeds():
    """Made once per process and argument set, from its own seed only: the global RNGs neither change
    it nor are changed by it (training's seeding and data order stay untouched)."""
    np.random.seed(1)
    torch.manual_seed(1)
    images, masks = generate_builtin("train", 50, [32, 64], 123)
    state = (np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    assert images.shape == (50, 32, 64, 3) and masks.shape == (50, 32, 64)
    assert images.dtype == masks.dtype == np.uint8
    assert generate_builtin("train", 50, [32, 64], 123)[0] is images  # cached: not generated again
    assert np.array_equal(state[0], np.random.get_state()[1]) and torch.equal(state[1], torch.get_rng_state())
    np.random.seed(2)
    torch.manual_seed(2)
    from nni_rspnet.seg import builtin

    builtin._BUILTIN_CACHE.clear()
    again_images, again_masks = generate_builtin("train", 50, [32, 64], 123)
    assert again_images is not images  # generated anew ...
    assert np.array_equal(again_images, images) and np.array_equal(again_masks, masks)  # ... to the same pixels


def test_build_datasets_from_config_and_validation():
    cfg = from_mapping(DataConfig, {"num_train": 8, "num_val": 4, "image_size": [32, 64]}, "test")
    train, val, classes = build_datasets(cfg)
    assert (len(train), len(val), len(classes)) == (8, 4, 11)
    with pytest.raises(ConfigError, match="dataset"):
        from_mapping(DataConfig, {"dataset": "imagenet"}, "test")
    with pytest.raises(ConfigError, match="crop_size"):
        from_mapping(DataConfig, {"crop_size": [0, 3]}, "test")
    with pytest.raises(ConfigError, match="unknown key"):
        from_mapping(DataConfig, {"batchsize": 3}, "test")


# --- paired transforms -----------------------------------------------------------------------------

def test_transforms_keep_image_and_mask_aligned():
    """The image encodes its label (grey level = 40 * label); after scale, crop and flip the labels
    must still sit on their pixels, and no new label value may appear."""
    from torchvision import tv_tensors

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    label = np.zeros((40, 60), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, 30), rng.integers(0, 50)
        label[y:y + 10, x:x + 10] = rng.integers(1, 5)
    image = np.repeat((label * 40)[..., None], 3, axis=2)
    t = build_transform(train=True, scale_range=[0.9, 1.7], crop_size=[32, 48], hflip=True, mean=[0, 0, 0],
                        std=[1, 1, 1])
    for _ in range(10):
        img, mask = t(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                      tv_tensors.Mask(torch.from_numpy(label)))
        assert img.shape[-2:] == (32, 48) and mask.shape == (32, 48) and mask.dtype == torch.int64
        assert set(mask.unique().tolist()) <= set(np.unique(label).tolist()) | {IGNORE_INDEX}
        valid = mask != IGNORE_INDEX
        decoded = torch.round(img[0] * 255 / 40)
        assert (decoded[valid] == mask[valid]).float().mean() > 0.9
        assert (img[:, ~valid] == 0).all()  # padding: black image, ignored mask


def test_pad_collate_pads_with_ignore():
    a = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.int64))
    b = (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.int64))
    x, y = pad_collate([a, b])
    assert x.shape == (2, 3, 6, 5) and y.shape == (2, 6, 5)
    assert (y[0, 4:] == IGNORE_INDEX).all() and (y[1, :, 3:] == IGNORE_INDEX).all() and (x[0, :, 4:] == 0).all()


def test_preview_is_written(tmp_path):
    out = tmp_path / "preview.png"
    save_preview(BuiltinDigits("val", 4, [32, 64]), str(out), count=3)
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


# --- folder layouts --------------------------------------------------------------------------------

def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    ds = CityscapesDataset(make_cityscapes(str(tmp_path / "cs")), "train")
    assert len(ds) == 2 and ds.num_classes == 19
    _, mask = ds[0]
    assert mask[1, 0] == 0 and mask[1, -1] == 13 and mask[0, 0] == IGNORE_INDEX  # road, car, unlabelled


def test_cityscapes_train_ids_are_read_directly(tmp_path):
    ds = CityscapesDataset(make_cityscapes(str(tmp_path / "cs"), train_ids=True), "val")
    _, mask = ds[1]
    assert mask[1, 0] == 0 and mask[1, -1] == 13 and mask[0, 0] == IGNORE_INDEX


def test_voc_palette_masks_give_indices(tmp_path):
    ds = VOCDataset(make_voc(str(tmp_path / "voc")), "val", verify=True)
    img, mask = ds[0]
    assert img.shape == (3, H, W) and ds.num_classes == 21
    assert mask[5, 5] == 15 and mask[0, 0] == 0 and mask[-1, 0] == IGNORE_INDEX


def test_folder_reads_class_names(tmp_path):
    cfg = DataConfig(dataset=f"folder:{make_folder(str(tmp_path / 'f'))}", crop_size=[8, 8], hflip=True)
    train, val, classes = build_datasets(cfg)
    assert classes == ["sky", "ground", "thing"]
    assert train[0][1].shape == (8, 8) and val[0][1].shape == (H, W)
    assert val[0][1][0, 0] == 2 and val[0][1][-1, 5] == 1


def _break(kind, root, what):
    image_of, mask_of = LAYOUTS[kind][2](root), LAYOUTS[kind][3](root)
    if what == "missing mask":
        os.remove(mask_of)
        return image_of
    if what == "mask size":
        _png(mask_of, np.zeros((H + 1, W), np.uint8))
        return mask_of
    if what == "bad labels":
        _png(mask_of, np.full((H, W), 77, np.uint8))
        return mask_of
    if what == "corrupt image":
        with open(image_of, "wb") as f:
            f.write(b"\x89PNG not really")
        return image_of
    raise AssertionError(what)


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
@pytest.mark.parametrize("what", ["missing mask", "mask size", "bad labels", "corrupt image"])
def test_bad_files_are_named(tmp_path, kind, what):
    make, cls = LAYOUTS[kind][:2]
    root = make(str(tmp_path / kind))
    culprit = _break(kind, root, what)
    message = {"missing mask": "without a mask", "mask size": "differs from its image",
               "bad labels": "label values \\[77\\]", "corrupt image": "cannot read image"}[what]
    with pytest.raises(DataError, match=message) as err:
        ds = cls(root, "train")
        for i in range(len(ds)):
            ds[i]
    assert culprit in str(err.value)


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_missing_root_and_empty_split(tmp_path, kind):
    make, cls = LAYOUTS[kind][:2]
    with pytest.raises(DataError, match="not found") as err:
        cls(str(tmp_path / "nowhere"), "train")
    assert str(tmp_path / "nowhere") in str(err.value)
    root = make(str(tmp_path / kind))
    if kind == "voc":
        open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"), "w").close()
    elif kind == "cityscapes":
        for city in ("a", "b"):
            folder = os.path.join(root, "leftImg8bit", "train", city)
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
    else:
        for name in os.listdir(os.path.join(root, "train", "images")):
            os.remove(os.path.join(root, "train", "images", name))
    with pytest.raises(DataError, match="is empty") as err:
        cls(root, "train")
    assert root in str(err.value)


def test_verify_reports_a_bad_file_at_construction(tmp_path):
    root = make_folder(str(tmp_path / "f"))
    culprit = _break("folder", root, "bad labels")
    with pytest.raises(DataError, match="label values") as err:
        build_datasets(DataConfig(dataset=f"folder:{root}", verify=True))
    assert culprit in str(err.value)


def test_builtin_digit_size_and_tall_images():
    _, small = generate_builtin("train", 30, [64, 64], 0, max_digits=1, digit_size=[0.2, 0.25])
    _, large = generate_builtin("train", 30, [64, 64], 0, max_digits=1, digit_size=[0.8, 0.9])
    assert ((small > 0) & (small < 255)).mean() < ((large > 0) & (large < 255)).mean()
    images, _ = generate_builtin("val", 5, [64, 24], 0)  # narrower than the tallest digit
    assert images.shape == (5, 64, 24, 3)


def test_cli_data_preview_and_errors(tmp_path, capsys):
    from nni_rspnet.cli import main

    out = tmp_path / "preview.png"
    sets = ["--set", "data.num_train=8", "--set", "data.num_val=4", "--set", "data.image_size=[32,64]"]
    assert main(["data", "--data", "builtin", "--preview", str(out), "--count", "3", *sets]) == 0
    assert out.is_file() and "11 classes" in capsys.readouterr().out
    missing = tmp_path / "nowhere"
    assert main(["data", "--data", f"voc:{missing}", *sets]) == 2
    assert str(missing) in capsys.readouterr().err
