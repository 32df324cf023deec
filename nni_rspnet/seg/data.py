"""The data of a run: ``DataConfig`` (the ``data`` section), the dataset factory and the loaders.

``DataConfig.dataset`` picks the source: ``builtin`` (``builtin.py``), or ``cityscapes:PATH``,
``voc:PATH``, ``folder:PATH`` (``datasets.py``). ``build_datasets`` makes the train and val splits once
per run and checks their classes against the network's (``check_num_classes``), so every entry
point (search, train, trial, demo) refuses a dataset whose classes the head does not predict.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from ..schema import Section

from .builtin import BuiltinDigits
from .datasets import CityscapesDataset, FolderDataset, SegDataset, VOCDataset
from .metrics import IGNORE_INDEX
from .transforms import IMAGENET_MEAN, IMAGENET_STD

MAX_BUILTIN_BYTES = 8 * 2 ** 30  # the built-in dataset is generated in memory


@dataclass
class DataConfig(Section):
    """Data and augmentation, as in the ``data`` section of ``search_spaces/*.yaml``.

    Attributes:
        dataset: ``builtin``, ``cityscapes:PATH``, ``voc:PATH`` or ``folder:PATH``.
        train_split, val_split: split names for the folder datasets.
        num_train, num_val: images the built-in dataset generates per split.
        image_size: ``[H, W]`` of the built-in images.
        max_digits: the built-in images hold 1 .. ``max_digits`` digits each.
        digit_size: ``[lo, hi]`` range of the built-in digits' height, as a fraction of the image height.
        seed: seed of the built-in dataset.
        batch_size, val_batch_size: loader batch sizes (val batches are padded with the ignore index).
        num_workers: loader worker processes.
        augment: apply the random training augmentation below (the val split is never augmented).
        scale_range: random rescale factor range ``[lo, hi]``.
        crop_size: ``[H, W]`` random crop after rescaling, padded with the ignore index; ``None`` keeps
            the (rescaled) size, which only works for batching when ``scale_range`` is ``[1, 1]``.
        hflip: random horizontal flip.
        color_jitter: brightness/contrast/saturation jitter strength (0 = off).
        mean, std: normalisation.
        verify: read every file once when the dataset is built (slow on big sets), so a bad file fails
            at start rather than mid-epoch.
    """

    SECTION: ClassVar[str] = "data"
    MAXIMA: ClassVar[dict] = {"num_train": 1_000_000, "num_val": 1_000_000, "image_size": 8192, "max_digits": 64,
                              "batch_size": 4096, "val_batch_size": 4096, "num_workers": 256, "crop_size": 8192,
                              "scale_range": 16}

    dataset: str = "builtin"
    train_split: str = "train"
    val_split: str = "val"
    num_train: int = 2000
    num_val: int = 400
    image_size: List[int] = field(default_factory=lambda: [64, 128])
    max_digits: int = 4
    digit_size: List[float] = field(default_factory=lambda: [0.4, 0.9])
    seed: int = 0
    batch_size: int = 16
    val_batch_size: int = 16
    num_workers: int = 0
    augment: bool = True
    scale_range: List[float] = field(default_factory=lambda: [1.0, 1.0])
    crop_size: Optional[List[int]] = None
    hflip: bool = False
    color_jitter: float = 0.0
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    verify: bool = False

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value."""
        parse_dataset_spec(self.dataset)  # raises ValueError naming a bad spec
        for key in ("num_train", "num_val", "batch_size", "val_batch_size", "max_digits"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"image_size must be [H, W] with H, W >= 16, got {self.image_size}")
        if len(self.digit_size) != 2 or not 0.1 <= self.digit_size[0] <= self.digit_size[1] <= 1.0:
            raise ValueError(f"digit_size must be [lo, hi] with 0.1 <= lo <= hi <= 1, got {self.digit_size}")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ValueError(f"crop_size must be [H, W] or null, got {self.crop_size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be [lo, hi] with 0 < lo <= hi, got {self.scale_range}")
        if self.color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {self.color_jitter}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std must each give 3 values (std > 0), got {self.mean}, {self.std}")
        if self.dataset == "builtin":  # generated in memory, image and mask: 4 bytes a pixel
            size = (self.num_train + self.num_val) * self.image_size[0] * self.image_size[1] * 4
            if size > MAX_BUILTIN_BYTES:
                raise ValueError(f"the built-in dataset of num_train={self.num_train} + num_val={self.num_val} images "
                                 f"of {self.image_size[0]}x{self.image_size[1]} would take {size / 2 ** 30:.1f} GiB of "
                                 f"memory, more than the limit of {MAX_BUILTIN_BYTES / 2 ** 30:.0f} GiB; use fewer "
                                 f"or smaller images")


    def transform_args(self, train: bool) -> Dict[str, Any]:
        """Plain-value arguments of ``build_transform`` for the train or val split."""
        aug = train and self.augment
        return {"train": aug, "scale_range": list(self.scale_range), "crop_size": self.crop_size if aug else None,
                "hflip": self.hflip, "color_jitter": self.color_jitter, "mean": list(self.mean),
                "std": list(self.std)}


def parse_dataset_spec(spec: str) -> Tuple[str, str]:
    """``'voc:/data/VOC2012'`` -> ``('voc', '/data/VOC2012')``; ``'builtin'`` -> ``('builtin', '')``."""
    kind, sep, path = spec.partition(":")
    if kind == "builtin" and not sep:
        return kind, ""
    if kind in ("cityscapes", "voc", "folder") and sep and path:
        return kind, os.path.expanduser(path)
    raise ValueError(f"dataset {spec!r}: expected builtin, cityscapes:PATH, voc:PATH or folder:PATH")


def pad_collate(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stacks ``(image, mask)`` pairs, padding smaller ones bottom/right (image 0, mask ignore)."""
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    images = batch[0][0].new_zeros((len(batch), batch[0][0].shape[0], h, w))
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for i, (img, mask) in enumerate(batch):
        images[i, :, :img.shape[-2], :img.shape[-1]] = img
        masks[i, :mask.shape[-2], :mask.shape[-1]] = mask
    return images, masks


def make_dataset(cfg: DataConfig, split: str, train: bool) -> SegDataset:
    """One split of the dataset ``cfg.dataset`` with the train or val transform."""
    kind, path = parse_dataset_spec(cfg.dataset)
    targs = cfg.transform_args(train)
    if kind == "builtin":
        return BuiltinDigits(split, cfg.num_train if split == "train" else cfg.num_val, cfg.image_size, cfg.seed,
                             cfg.max_digits, targs, cfg.digit_size)
    cls = {"cityscapes": CityscapesDataset, "voc": VOCDataset, "folder": FolderDataset}[kind]
    return cls(path, split, targs, cfg.verify)


class Datasets(NamedTuple):
    """The datasets of a run (a tuple: ``train, val, classes = build_datasets(cfg)``)."""

    train: SegDataset
    val: SegDataset
    classes: List[str]


def check_num_classes(classes: Sequence[str], num_classes: Optional[int], dataset: str) -> None:
    """The one check that the network predicts the dataset's classes (``None``: nothing to check).

    Raises:
        ConfigError: naming both numbers and the setting that fixes it.
    """
    if num_classes is not None and len(classes) != num_classes:
        raise ConfigError(f"space.num_classes is {num_classes} but dataset {dataset} has {len(classes)} classes; "
                          f"set --set space.num_classes={len(classes)}")


def build_datasets(cfg: DataConfig, num_classes: Optional[int] = None) -> Datasets:
    """The train and val datasets of ``cfg`` and its class names (builtin splits are 'train'/'val').

    Args:
        cfg: the data section.
        num_classes: the classes the network predicts; a dataset with another number is a
            ``ConfigError`` (``check_num_classes``). ``None`` checks nothing.
    """
    kind, _ = parse_dataset_spec(cfg.dataset)
    train_split, val_split = ("train", "val") if kind == "builtin" else (cfg.train_split, cfg.val_split)
    train = make_dataset(cfg, train_split, train=True)
    check_num_classes(train.classes, num_classes, cfg.dataset)
    val = make_dataset(cfg, val_split, train=False)
    return Datasets(train, val, list(train.classes))


def datasets_for(cfg: DataConfig, num_classes: Optional[int], datasets: Optional[Datasets] = None) -> Datasets:
    """``datasets`` (built once by the caller) checked against ``num_classes``, else ``build_datasets``."""
    if datasets is None:
        return build_datasets(cfg, num_classes)
    check_num_classes(datasets.classes, num_classes, cfg.dataset)
    return datasets


def build_loaders(cfg: DataConfig, train_set: Dataset, val_set: Dataset, shuffle: bool = True):
    """Train and val ``DataLoader``s (val batches padded with the ignore index by ``pad_collate``)."""
    train = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=shuffle, num_workers=cfg.num_workers,
                       drop_last=len(train_set) > cfg.batch_size, collate_fn=pad_collate,
                       persistent_workers=cfg.num_workers > 0)
    val = DataLoader(val_set, batch_size=cfg.val_batch_size, shuffle=False, num_workers=cfg.num_workers,
                     collate_fn=pad_collate, persistent_workers=cfg.num_workers > 0)
    return train, val
