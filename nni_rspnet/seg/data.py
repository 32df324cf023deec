"""Segmentation datasets and paired image/mask transforms.

Four sources, chosen by ``DataConfig.dataset``:

- ``builtin``: real handwritten digits (scikit-learn's ``load_digits``) composited onto crops of its
  two bundled photos (``load_sample_images``). Classes are background + the ten digits; a thin rim
  around each glyph is ignored (255) because its pixels are a blend of digit and photo. Train and val
  use disjoint digit samples; everything is deterministic from the seed and nothing is downloaded.
- ``cityscapes:PATH``: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` or ``*_gtFine_labelIds.png`` (mapped to the 19
  trainIds by the official table).
- ``voc:PATH``: Pascal VOC (``JPEGImages``, ``SegmentationClass``, ``ImageSets/Segmentation``).
- ``folder:PATH``: ``PATH/classes.txt`` (one class name per line) and
  ``PATH/<split>/images/*`` with ``PATH/<split>/masks/<same stem>.png``.

Every dataset item is ``(image float32 [3, H, W] normalised, mask int64 [H, W])`` with 255 = ignore.
Dataset classes take plain values only (strings, numbers, lists, dicts), so NNI can serialise them
into multi-trial parameters. Bad data is a ``DataError`` that names the file.
"""
from __future__ import annotations

import os
from functools import lru_cache
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from ..fileio import save_figure

IGNORE_INDEX = 255
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
BUILTIN_CLASSES = ["background"] + [f"digit_{d}" for d in range(10)]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# The official Cityscapes table (cityscapesscripts.helpers.labels): labelId -> trainId, 255 = ignored.
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_NUM_LABEL_IDS = 34  # labelIds 0..33 are valid in *_gtFine_labelIds.png
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle"]
CITYSCAPES_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32)]
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


@dataclass
class DataConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)

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


# --- paired transforms -----------------------------------------------------------------------------

def build_transform(train: bool = False, scale_range: Sequence[float] = (1.0, 1.0),
                    crop_size: Optional[Sequence[int]] = None, hflip: bool = False, color_jitter: float = 0.0,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """A torchvision v2 pipeline for ``(tv_tensors.Image uint8, tv_tensors.Mask)`` pairs.

    Geometric transforms move image and mask together; v2 resizes masks with NEAREST and the crop pads
    masks with the ignore index, so no label is ever interpolated.

    Args:
        train: add the random augmentation (scale, crop, flip, jitter); otherwise only normalise.
        scale_range: random rescale factors ``(lo, hi)``.
        crop_size: ``(H, W)`` of the random crop, or ``None``.
        hflip: random horizontal flip.
        color_jitter: strength of brightness/contrast/saturation jitter (image only).
        mean, std: normalisation of the image.
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps: List[Any] = []
    if train:
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if (lo, hi) != (1.0, 1.0):
            steps.append(_RandomScale(lo, hi))
        if crop_size is not None:
            steps.append(v2.RandomCrop(list(crop_size), pad_if_needed=True,
                                       fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
              v2.Normalize(list(mean), list(std)),
              v2.ToDtype({tv_tensors.Mask: torch.int64, "others": None})]
    return v2.Compose(steps)


def _random_scale_cls():
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    class RandomScale(v2.Transform):
        """Rescales image and mask by one random factor in ``[lo, hi]`` (mask: NEAREST, by v2)."""

        def __init__(self, lo: float, hi: float):
            super().__init__()
            self.lo, self.hi = lo, hi

        def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
            h, w = v2.query_size(flat_inputs)
            s = float(torch.empty(1).uniform_(self.lo, self.hi))
            return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

        def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
            return self._call_kernel(TF.resize, inpt, params["size"], antialias=True)

    return RandomScale


def _RandomScale(lo: float, hi: float):  # noqa: N802 - built lazily so importing data.py skips torchvision
    return _random_scale_cls()(lo, hi)


def _is_random(args: Dict[str, Any]) -> bool:
    """Whether ``build_transform(**args)`` has a random step."""
    if not args.get("train", False):
        return False
    return (tuple(args.get("scale_range", (1.0, 1.0))) != (1.0, 1.0) or args.get("crop_size") is not None
            or bool(args.get("hflip")) or args.get("color_jitter", 0.0) > 0)


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
        from torchvision import tv_tensors

        image, mask = self.load(index)
        if not _is_random(self.transform_args):  # the v2 pipeline costs ms per item; normalising does not
            mean = torch.tensor(self.transform_args.get("mean", IMAGENET_MEAN)).view(3, 1, 1)
            std = torch.tensor(self.transform_args.get("std", IMAGENET_STD)).view(3, 1, 1)
            img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
            return (img - mean) / std, torch.from_numpy(np.ascontiguousarray(mask)).long()
        if self._transform is None:  # built lazily: cheap to pickle for workers and NNI
            self._transform = build_transform(**self.transform_args)
        img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        msk = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)).to(torch.uint8))
        img, msk = self._transform(img, msk)
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_transform"] = None
        return state


# --- the built-in dataset --------------------------------------------------------------------------

_BUILTIN_CACHE: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}
_SKLEARN_CACHE: Dict[str, Any] = {}


def _sklearn_sources() -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    if not _SKLEARN_CACHE:
        from sklearn.datasets import load_digits, load_sample_images

        digits = load_digits()
        _SKLEARN_CACHE["digits"] = (digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64))
        _SKLEARN_CACHE["photos"] = [np.asarray(p) for p in load_sample_images().images]
    glyphs, targets = _SKLEARN_CACHE["digits"]
    return glyphs, targets, _SKLEARN_CACHE["photos"]


def _digit_split(split: str, seed: int, num_digits: int) -> np.ndarray:
    """Indices of the digit samples a split may use: a seeded 80/20 partition, disjoint by design."""
    order = np.random.default_rng(seed).permutation(num_digits)
    cut = int(0.8 * num_digits)
    return order[:cut] if split == "train" else order[cut:]


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


@lru_cache(maxsize=256)
def _interp_matrix(n_out: int, n_in: int = 8) -> np.ndarray:
    """Bilinear upsampling as a matrix (``n_out x n_in``, half-pixel centres): ``A @ g @ B.T`` resizes."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    mat = np.zeros((n_out, n_in), np.float32)
    mat[np.arange(n_out), lo] += 1 - frac
    mat[np.arange(n_out), hi] += frac
    return mat


def _photo_pyramid(h: int, w: int, levels: int = 6) -> List[np.ndarray]:
    """Each bundled photo shrunk by factors from about 1 to the largest that still holds an ``h x w``
    crop, as float32 arrays; a crop is then a slice, not a resize per image."""
    key = f"pyramid-{h}x{w}"
    if key not in _SKLEARN_CACHE:
        _, _, photos = _sklearn_sources()
        out = []
        for photo in photos:
            ph, pw = photo.shape[:2]
            top = max(1.0, min(ph / h, pw / w) * 0.9)
            for z in np.geomspace(1.0, top, levels):
                size = (max(w, int(pw / z)), max(h, int(ph / z)))
                out.append(np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR), dtype=np.float32))
        _SKLEARN_CACHE[key] = out
    return _SKLEARN_CACHE[key]


def generate_builtin(split: str, num_images: int, image_size: Sequence[int], seed: int,
                     max_digits: int = 4, digit_size: Sequence[float] = (0.4, 0.9)) -> Tuple[np.ndarray, np.ndarray]:
    """Makes the built-in images and masks: ``(uint8 [N, H, W, 3], uint8 [N, H, W])``, cached per process.

    Each image is a random crop of one of the two photos at a random zoom, with 1 .. ``max_digits``
    digits pasted in sequence, each in a colour that stands out from its patch. A glyph pixel
    (upsampled ink >= 0.5) gets the class ``digit + 1``; its one-pixel rim and faint anti-aliased edge
    get 255 (ignore). Labels are written in the same order as the pixels, so a later digit covers an
    earlier one in both.
    """
    if split not in ("train", "val"):
        raise ValueError(f"builtin split must be 'train' or 'val', got {split!r}")
    h, w = int(image_size[0]), int(image_size[1])
    lo, hi = float(digit_size[0]), float(digit_size[1])
    key = (split, int(num_images), h, w, int(seed), int(max_digits), lo, hi)
    if key in _BUILTIN_CACHE:
        return _BUILTIN_CACHE[key]
    glyphs, targets, _ = _sklearn_sources()
    pyramid = _photo_pyramid(h, w)
    pool = _digit_split(split, seed, len(glyphs))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    images = np.empty((num_images, h, w, 3), np.uint8)
    masks = np.zeros((num_images, h, w), np.uint8)
    for n in range(num_images):
        photo = pyramid[rng.integers(len(pyramid))]
        y0, x0 = rng.integers(photo.shape[0] - h + 1), rng.integers(photo.shape[1] - w + 1)
        img = photo[y0:y0 + h, x0:x0 + w].copy()
        mask = masks[n]
        for _ in range(rng.integers(1, max_digits + 1)):
            k = pool[rng.integers(len(pool))]
            gh = max(4, int(rng.uniform(lo, hi) * h))
            gw = min(w, max(4, int(gh * rng.uniform(0.7, 1.0))))  # tall narrow images: keep the glyph inside
            ink = np.clip(_interp_matrix(gh) @ glyphs[k] @ _interp_matrix(gw).T, 0.0, 1.0)
            ty, tx = rng.integers(h - gh + 1), rng.integers(w - gw + 1)
            # One pixel of margin, so the rim also surrounds ink that touches the glyph's box.
            y0, y1, x0, x1 = max(ty - 1, 0), min(ty + gh + 1, h), max(tx - 1, 0), min(tx + gw + 1, w)
            ink = np.pad(ink, 1)[y0 - ty + 1:y1 - ty + 1, x0 - tx + 1:x1 - tx + 1]
            ty, tx, gh, gw = y0, x0, y1 - y0, x1 - x0
            region = img[ty:ty + gh, tx:tx + gw]
            colour = rng.uniform(0, 255, 3).astype(np.float32)
            if abs(colour.mean() - region.mean()) < 70:  # keep the digit visible on its patch
                colour = 255.0 - colour
            alpha = ink[..., None]
            region *= 1 - alpha
            region += colour * alpha
            glyph = ink >= 0.5
            rim = (_dilate(glyph) | (ink > 0.2)) & ~glyph
            sub = mask[ty:ty + gh, tx:tx + gw]
            sub[glyph] = targets[k] + 1
            sub[rim] = IGNORE_INDEX
        np.add(img, 0.5, out=img)
        images[n] = img  # values stay in [0, 255]: a convex blend of photo and colour
    _BUILTIN_CACHE[key] = (images, masks)
    return images, masks


class BuiltinDigits(SegDataset):
    """The built-in dataset: handwritten digits on photo crops (see ``generate_builtin``).

    Args:
        split: ``'train'`` or ``'val'`` (disjoint digit samples).
        num_images: images in the split.
        image_size: ``[H, W]``.
        seed: the seed; the same arguments always give the same images.
        max_digits: at most this many digits per image.
        digit_size: ``[lo, hi]`` digit height as a fraction of the image height.
        transform_args: plain-value arguments of ``build_transform``.
    """

    classes = list(BUILTIN_CLASSES)

    def __init__(self, split: str = "train", num_images: int = 2000, image_size: Sequence[int] = (64, 128),
                 seed: int = 0, max_digits: int = 4, transform_args: Optional[Dict[str, Any]] = None,
                 digit_size: Sequence[float] = (0.4, 0.9)):
        super().__init__(transform_args)
        if split not in ("train", "val"):
            raise DataError(f"builtin dataset: split must be 'train' or 'val', got {split!r}")
        self.split, self.num_images, self.image_size = split, int(num_images), [int(s) for s in image_size]
        self.seed, self.max_digits = int(seed), int(max_digits)
        self.digit_size = [float(digit_size[0]), float(digit_size[1])]

    def __len__(self) -> int:
        return self.num_images

    def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        return generate_builtin(self.split, self.num_images, self.image_size, self.seed, self.max_digits,
                                self.digit_size)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        images, masks = self.arrays()
        return images[index], masks[index]


# --- datasets read from folders --------------------------------------------------------------------

def read_image(path: str) -> np.ndarray:
    """An RGB uint8 ``H x W x 3`` array; a missing or unreadable file is a ``DataError`` naming it."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


def read_mask(path: str) -> np.ndarray:
    """A label mask as a 2-D array of indices (palette images give their indices, not colours)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: expected a single-channel label mask (mode L or P), got mode {im.mode}")
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read mask ({err})") from None


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
        if not os.path.isfile(listing):
            raise DataError(f"{listing}: VOC split file not found")
        with open(listing, encoding="utf-8") as f:
            ids = [line.strip() for line in f if line.strip()]
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
        if not os.path.isfile(names_file):
            raise DataError(f"{names_file}: class-names file not found (one class name per line)")
        with open(names_file, encoding="utf-8") as f:
            self.classes = [line.strip() for line in f if line.strip()]
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


def make_dataset(cfg: DataConfig, split: str, train: bool) -> SegDataset:
    """One split of the dataset ``cfg.dataset`` with the train or val transform."""
    kind, path = parse_dataset_spec(cfg.dataset)
    targs = cfg.transform_args(train)
    if kind == "builtin":
        return BuiltinDigits(split, cfg.num_train if split == "train" else cfg.num_val, cfg.image_size, cfg.seed,
                             cfg.max_digits, targs, cfg.digit_size)
    cls = {"cityscapes": CityscapesDataset, "voc": VOCDataset, "folder": FolderDataset}[kind]
    return cls(path, split, targs, cfg.verify)


def build_datasets(cfg: DataConfig) -> Tuple[SegDataset, SegDataset, List[str]]:
    """``(train dataset, val dataset, class names)`` for ``cfg`` (builtin splits are 'train'/'val')."""
    kind, _ = parse_dataset_spec(cfg.dataset)
    train_split, val_split = ("train", "val") if kind == "builtin" else (cfg.train_split, cfg.val_split)
    train = make_dataset(cfg, train_split, train=True)
    val = make_dataset(cfg, val_split, train=False)
    return train, val, list(train.classes)


def build_loaders(cfg: DataConfig, train_set: Dataset, val_set: Dataset, shuffle: bool = True):
    """Train and val ``DataLoader``s (val batches padded with the ignore index by ``pad_collate``)."""
    from torch.utils.data import DataLoader

    train = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=shuffle, num_workers=cfg.num_workers,
                       drop_last=len(train_set) > cfg.batch_size, collate_fn=pad_collate,
                       persistent_workers=cfg.num_workers > 0)
    val = DataLoader(val_set, batch_size=cfg.val_batch_size, shuffle=False, num_workers=cfg.num_workers,
                     collate_fn=pad_collate, persistent_workers=cfg.num_workers > 0)
    return train, val


def palette(num_classes: int, dataset: str = "builtin") -> np.ndarray:
    """``uint8 [256, 3]`` colours: the Cityscapes palette for Cityscapes, the VOC bit pattern otherwise;
    the ignore index is white."""
    kind = dataset.partition(":")[0]
    colours = np.zeros((256, 3), np.uint8)
    for i in range(256):  # the VOC colour map (bit-interleaved), distinct for every index
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    if kind == "cityscapes":
        colours[:len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    colours[IGNORE_INDEX] = (255, 255, 255)
    return colours


def colourise(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``H x W`` indices -> ``H x W x 3`` uint8 colours."""
    return colours[np.asarray(mask, dtype=np.int64).clip(0, 255)]


def denormalise(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[3, H, W]`` tensor back to ``H x W x 3`` uint8."""
    img = image.detach().cpu().float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def save_preview(dataset: SegDataset, path: str, count: int = 8, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, dataset_spec: str = "builtin") -> None:
    """Writes a PNG grid: each row an image, its coloured mask and the mask blended over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(dataset))
    colours = palette(dataset.num_classes, dataset_spec)
    fig, axes = plt.subplots(count, 3, figsize=(9, 1.6 * count), squeeze=False)
    for i in range(count):
        image, mask = dataset[i]
        rgb = denormalise(image, mean, std)
        col = colourise(mask.numpy(), colours)
        for ax, pic in zip(axes[i], (rgb, col, (0.5 * rgb + 0.5 * col).astype(np.uint8))):
            ax.imshow(pic)
            ax.axis("off")
        present = [dataset.classes[c] for c in np.unique(mask.numpy()) if c < dataset.num_classes and c > 0]
        axes[i][1].set_title(", ".join(present)[:60], fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
