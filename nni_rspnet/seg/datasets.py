"""Datasets read from files: Cityscapes, Pascal VOC and generic folders, on one base class.

- ``cityscapes:PATH``: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` or ``*_gtFine_labelIds.png`` (mapped to the 19
  trainIds by the official table).
- ``voc:PATH``: Pascal VOC (``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``).
- ``folder:PATH``: ``PATH/classes.txt`` (one class name per line) and
  ``PATH/<split>/images/*`` with ``PATH/<split>/masks/<same stem>.png``.

Every item is ``(image float32 [3, H, W] normalised, mask int64 [H, W])`` with 255 = ignore. Dataset
classes take plain values only (strings, numbers, lists, dicts), so NNI can serialise them into
multi-trial parameters. Bad data is a ``DataError`` that names the file.
"""
from __future__ import annotations

import io
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError
from ..fileio import read_bytes, read_text
from .metrics import IGNORE_INDEX
from .transforms import build_transform, is_random, to_tensors

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGE_BYTES = 256 << 20  # one image or mask file; a 2048x4096 PNG is a few megabytes

# The official Cityscapes table (cityscapesscripts.helpers.labels): labelId -> trainId, 255 = ignored.
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 are valid in *_gtFine_labelIds.png
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


class SegDataset(Dataset):
    """Base class: subclasses provide ``__len__`` and ``load(i) -> (uint8 HxWx3, uint8/int HxW)``.

    Args:
        transform_args: plain-value arguments of ``build_transform`` (``None``: normalise only).
    """

    classes: List[str] = []

    def __init__(self, transform_args: Optional[Dict[str, Any]] = None):
        self.transform_args = dict(transform_args or {})
        self._transform = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        if self._transform is None and is_random(self.transform_args):  # built lazily: cheap to pickle
            self._transform = build_transform(**self.transform_args)
        return to_tensors(image, mask, self.transform_args, self._transform)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_transform"] = None
        return state


def _reason(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL can decode"
    return " ".join(str(err).split())[:200]


def _open_image(path: str, what: str) -> Image.Image:
    """The image at ``path`` through ``fileio.read_bytes`` (a regular file of bounded size: a FIFO named
    ``x.png`` is refused instead of blocking); PIL's decompression-bomb limit bounds the pixels."""
    data = read_bytes(path, f"{what} file", DataError, MAX_IMAGE_BYTES)
    try:
        return Image.open(io.BytesIO(data))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read {what} ({_reason(err)})") from None


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 ``H x W x 3`` array; a missing or unreadable file is a ``DataError`` naming it."""
    with _open_image(path, "image") as im:
        try:
            return np.array(im.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: cannot read image ({_reason(err)})") from None


def read_mask(path: str) -> np.ndarray:
    """A label mask as a 2-D array of indices (palette images give their indices, not colours)."""
    with _open_image(path, "mask") as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise DataError(f"{path}: expected a single-channel label mask (mode L or P), got mode {im.mode}")
        try:
            return np.asarray(im).astype(np.int64)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: cannot read mask ({_reason(err)})") from None


class FileSegDataset(SegDataset):
    """A dataset of ``(image path, mask path)`` pairs; subclasses find the pairs and map the labels.

    Args:
        root: dataset folder.
        split: split name.
        transform_args: plain-value arguments of ``build_transform``.
        verify: read every pair once now, so a bad file is reported before training starts.
    """

    def __init__(self, root: str, split: str = "train", transform_args: Optional[Dict[str, Any]] = None,
                 verify: bool = False):
        super().__init__(transform_args)
        self.root, self.split = os.fspath(root), split
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: dataset root folder not found")
        self.pairs: List[Tuple[str, str]] = self.find_pairs()
        if not self.pairs:
            raise DataError(f"{self.root}: split {split!r} is empty (no images found for it)")
        if verify:
            for i in range(len(self.pairs)):
                self.load(i)

    def find_pairs(self) -> List[Tuple[str, str]]:
        raise NotImplementedError

    def label_lut(self, mask_path: str) -> np.ndarray:
        """A 256-entry (or larger) table from stored mask value to class index; -1 marks invalid values."""
        lut = np.full(256, -1, np.int64)
        lut[:self.num_classes] = np.arange(self.num_classes)
        lut[IGNORE_INDEX] = IGNORE_INDEX
        return lut

    def valid_values(self, mask_path: str) -> str:
        return f"0..{self.num_classes - 1} or {IGNORE_INDEX} (ignore)"

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        raw = read_mask(mask_path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from its image "
                            f"{image_path} ({image.shape[1]}x{image.shape[0]})")
        lut = self.label_lut(mask_path)
        bad = (raw < 0) | (raw >= len(lut))
        mapped = lut[np.where(bad, 0, raw)]
        bad |= mapped < 0
        if bad.any():
            values = sorted(set(np.unique(raw[bad]).tolist()))[:5]
            raise DataError(f"{mask_path}: label values {values} outside the classes; expected {self.valid_values(mask_path)}")
        return image, mapped.astype(np.uint8)


def _list_images(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


class CityscapesDataset(FileSegDataset):
    """Cityscapes: ``leftImg8bit/<split>/<city>/X_leftImg8bit.png`` + ``gtFine/<split>/<city>/X_gtFine_*``.

    ``X_gtFine_labelTrainIds.png`` is used when present; otherwise ``X_gtFine_labelIds.png`` is mapped
    to the 19 trainIds by the official table (other ids become 255).
    """

    classes = list(CITYSCAPES_CLASSES)

    def find_pairs(self) -> List[Tuple[str, str]]:
        img_root = os.path.join(self.root, "leftImg8bit", self.split)
        if not os.path.isdir(img_root):
            raise DataError(f"{img_root}: Cityscapes split folder not found (expected leftImg8bit/{self.split}/<city>/)")
        pairs = []
        for city in sorted(os.listdir(img_root)):
            if not os.path.isdir(os.path.join(img_root, city)):
                continue
            for name in sorted(os.listdir(os.path.join(img_root, city))):
                if not name.endswith("_leftImg8bit.png"):
                    continue
                stem = name[:-len("_leftImg8bit.png")]
                gt = os.path.join(self.root, "gtFine", self.split, city, stem + "_gtFine_")
                train_ids, label_ids = gt + "labelTrainIds.png", gt + "labelIds.png"
                mask = train_ids if os.path.exists(train_ids) else label_ids
                if not os.path.exists(mask):
                    raise DataError(f"{os.path.join(img_root, city, name)}: image without a mask "
                                    f"(expected {train_ids} or {label_ids})")
                pairs.append((os.path.join(img_root, city, name), mask))
        return pairs

    def label_lut(self, mask_path: str) -> np.ndarray:
        if mask_path.endswith("labelTrainIds.png"):
            return super().label_lut(mask_path)
        lut = np.full(256, -1, np.int64)
        lut[:CITYSCAPES_NUM_LABEL_IDS] = IGNORE_INDEX
        for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
            lut[label_id] = train_id
        lut[IGNORE_INDEX] = IGNORE_INDEX
        return lut

    def valid_values(self, mask_path: str) -> str:
        if mask_path.endswith("labelTrainIds.png"):
            return super().valid_values(mask_path)
        return f"Cityscapes labelIds 0..{CITYSCAPES_NUM_LABEL_IDS - 1} or {IGNORE_INDEX}"


class VOCDataset(FileSegDataset):
    """Pascal VOC: ids from ``ImageSets/Segmentation/<split>.txt``, ``JPEGImages``, ``SegmentationClass``."""

    classes = list(VOC_CLASSES)

    def find_pairs(self) -> List[Tuple[str, str]]:
        listing = os.path.join(self.root, "ImageSets", "Segmentation", f"{self.split}.txt")
        ids = [line.strip() for line in read_text(listing, "VOC split file", DataError).splitlines() if line.strip()]
        pairs = []
        for i in ids:
            image = os.path.join(self.root, "JPEGImages", i + ".jpg")
            mask = os.path.join(self.root, "SegmentationClass", i + ".png")
            if not os.path.exists(image):
                raise DataError(f"{image}: listed in {listing} but not found")
            if not os.path.exists(mask):
                raise DataError(f"{image}: image without a mask (expected {mask})")
            pairs.append((image, mask))
        return pairs


class FolderDataset(FileSegDataset):
    """Generic folders: ``root/classes.txt``, ``root/<split>/images/*``, ``root/<split>/masks/<stem>.png``."""

    def find_pairs(self) -> List[Tuple[str, str]]:
        names_file = os.path.join(self.root, "classes.txt")
        if not os.path.exists(names_file):
            raise DataError(f"{names_file}: class-names file not found (one class name per line)")
        text = read_text(names_file, "class-names file", DataError, max_bytes=1 << 20)
        self.classes = [line.strip() for line in text.splitlines() if line.strip()]
        if not 2 <= len(self.classes) <= IGNORE_INDEX:
            raise DataError(f"{names_file}: expected 2 .. {IGNORE_INDEX} class names, got {len(self.classes)}")
        img_dir = os.path.join(self.root, self.split, "images")
        mask_dir = os.path.join(self.root, self.split, "masks")
        if not os.path.isdir(img_dir):
            raise DataError(f"{img_dir}: split folder not found (expected <root>/{self.split}/images/)")
        pairs = []
        for name in _list_images(img_dir):
            mask = os.path.join(mask_dir, os.path.splitext(name)[0] + ".png")
            if not os.path.exists(mask):
                raise DataError(f"{os.path.join(img_dir, name)}: image without a mask (expected {mask})")
            pairs.append((os.path.join(img_dir, name), mask))
        return pairs
