"""The built-in dataset: real handwritten digits composited onto real photos, made in about a second.

Real handwritten digits (scikit-learn's ``load_digits``) are pasted onto crops of its two bundled
photos (``load_sample_images``). Classes are background + the ten digits; a thin rim around each
glyph is ignored (255) because its pixels are a blend of digit and photo. Train and val use disjoint
digit samples; everything is deterministic from the seed and nothing is downloaded.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import DataError
from .datasets import SegDataset
from .metrics import IGNORE_INDEX

BUILTIN_CLASSES = ["background"] + [f"digit_{d}" for d in range(10)]

_BUILTIN_CACHE: Dict[Tuple, Tuple[np.ndarray, np.ndarray]] = {}
_SKLEARN_CACHE: Dict[str, Any] = {}


def _sklearn_sources() -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
    if not _SKLEARN_CACHE:
        from sklearn.datasets import load_digits, load_sample_images  # scikit-learn loads only for the built-in data

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
