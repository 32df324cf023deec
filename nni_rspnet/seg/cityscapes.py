"""Cityscapes' own formats: labelId PNGs named as the benchmark expects, and a dataset written in its layout.

Networks trained on ``cityscapes:PATH`` predict the 19 train ids (``datasets.CITYSCAPES_CLASSES``). The
Cityscapes benchmark server and its official evaluator (``cityscapesscripts``) want something else:
one single-channel PNG per input image whose pixels are Cityscapes *label ids* (7 = road, ..., 33 =
bicycle), found by the name ``<city>_<seq>_<frame>*.png``. ``predictions_to_label_ids`` converts, and
``prediction_name`` names the file as the input image (``berlin_000000_000019_leftImg8bit.png``), as
the common toolkits write them.

``export_cityscapes`` writes any dataset of at most 19 classes in Cityscapes' layout
(``leftImg8bit/<split>/<city>/*_leftImg8bit.png``, ``gtFine/<split>/<city>/*_gtFine_labelIds.png``), class
``i`` becoming the class of train id ``i``: the built-in set then takes the whole Cityscapes path
(training, ``evaluate``, ``predict --format cityscapes``, the official evaluator) without the real data.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import DataError
from ..fileio import atomic_path
from .datasets import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN, SegDataset

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
UNLABELED_ID = 0  # the label id of pixels without a class (ignored by the evaluator)
NAME = re.compile(r"^([A-Za-z0-9-]+)_(\d{6})_(\d{6})_leftImg8bit\.png$")

# train id -> label id, the inverse of the official table; other values (255) become "unlabeled"
TRAIN_TO_LABEL = np.full(256, UNLABELED_ID, np.uint8)
for _label_id, _train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
    TRAIN_TO_LABEL[_train_id] = _label_id


def predictions_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """``uint8`` Cityscapes label ids for a mask of train ids (0..18; anything else becomes 0, unlabeled)."""
    return TRAIN_TO_LABEL[np.asarray(train_ids).astype(np.int64).clip(0, 255)]


def check_cityscapes_classes(classes: Sequence[str], where: str) -> None:
    """Raises ``DataError`` unless ``classes`` are the 19 Cityscapes classes in train-id order."""
    if list(classes) != CITYSCAPES_CLASSES:
        shown = ", ".join(list(classes)[:4]) + (" ..." if len(classes) > 4 else "")
        raise DataError(f"{where}: predicts {len(classes)} classes ({shown or 'none recorded'}); Cityscapes label "
                        f"ids need the 19 Cityscapes classes (a model trained on data.dataset=cityscapes:PATH)")


def find_images(folder: str) -> List[str]:
    """Every ``*_leftImg8bit.png`` under ``folder`` (city sub-folders included), sorted by file name.

    Raises:
        DataError: the folder is missing, holds no such image, or holds two with the same name.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: input folder not found")
    found: Dict[str, str] = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(IMAGE_SUFFIX):
                if name in found:
                    raise DataError(f"{os.path.join(root, name)}: a second image of that name (first: {found[name]})")
                found[name] = os.path.join(root, name)
    if not found:
        raise DataError(f"{folder}: no Cityscapes images (<city>_<seq>_<frame>{IMAGE_SUFFIX}) found, "
                        f"sub-folders included")
    for name, path in found.items():
        if not NAME.match(name):
            raise DataError(f"{path}: expected a Cityscapes name <city>_<6 digits>_<6 digits>{IMAGE_SUFFIX}")
    return [found[name] for name in sorted(found)]


def prediction_name(image_path: str) -> str:
    """The prediction's file name: the input image's (``berlin_000000_000019_leftImg8bit.png``)."""
    return os.path.basename(image_path)


def save_label_ids(label_ids: np.ndarray, path: str) -> None:
    """Writes a single-channel 8-bit PNG of label ids, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(label_ids, dtype=np.uint8)).save(tmp, format="PNG")  # 2-D uint8: mode L


def export_cityscapes(splits: Sequence[Tuple[str, SegDataset]], out_dir: str, city: str = "digits") -> Dict[str, int]:
    """Writes datasets in Cityscapes' layout; returns the images written per split.

    Args:
        splits: ``(split name, dataset)`` pairs; the datasets' ``load(i)`` gives the raw image and mask.
        out_dir: the new dataset root (``leftImg8bit/`` and ``gtFine/`` go in it).
        city: the city name in folders and file names (letters, digits, hyphens).

    Raises:
        DataError: a dataset with more than 19 classes, or a city name Cityscapes' tools cannot parse.
    """
    if not re.fullmatch(r"[A-Za-z0-9-]+", city):
        raise DataError(f"city {city!r}: Cityscapes names allow letters, digits and hyphens only")
    written: Dict[str, int] = {}
    for split, dataset in splits:
        if dataset.num_classes > len(CITYSCAPES_CLASSES):
            raise DataError(f"split {split}: {dataset.num_classes} classes do not fit the "
                            f"{len(CITYSCAPES_CLASSES)} Cityscapes classes")
        for i in range(len(dataset)):
            image, mask = dataset.load(i)
            stem = f"{city}_{0:06d}_{i:06d}"
            with atomic_path(os.path.join(out_dir, "leftImg8bit", split, city, stem + IMAGE_SUFFIX)) as tmp:
                Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")
            save_label_ids(predictions_to_label_ids(mask),  # the ignore index becomes "unlabeled"
                           os.path.join(out_dir, "gtFine", split, city, stem + LABEL_SUFFIX))
        written[split] = len(dataset)
    return written
