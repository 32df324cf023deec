"""Paired image/mask transforms (torchvision ``transforms.v2``).

Geometric transforms move image and mask together; v2 resizes masks with NEAREST and the crop pads
masks with the ignore index, so no label is ever interpolated. A dataset stores the *arguments* of its
pipeline (plain values, so NNI can serialise it) and builds the pipeline lazily; without a random step
it only normalises, which is much cheaper per item (``to_tensors``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .metrics import IGNORE_INDEX

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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
    steps: List[Any] = []
    if train:
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if (lo, hi) != (1.0, 1.0):
            steps.append(RandomScale(lo, hi))
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


def is_random(args: Dict[str, Any]) -> bool:
    """Whether ``build_transform(**args)`` has a random step."""
    if not args.get("train", False):
        return False
    return (tuple(args.get("scale_range", (1.0, 1.0))) != (1.0, 1.0) or args.get("crop_size") is not None
            or bool(args.get("hflip")) or args.get("color_jitter", 0.0) > 0)



def to_tensors(image: np.ndarray, mask: np.ndarray, args: Dict[str, Any],
               pipeline: Optional[Any] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 HxWx3, int HxW)`` -> ``(float32 [3, H, W] normalised, int64 [H, W])``.

    With a random step in ``args`` (``is_random``) the pair goes through ``pipeline`` (built from
    ``args`` by ``build_transform``); otherwise it is only normalised, with ``args``' mean and std.
    """
    if not is_random(args):  # the v2 pipeline costs ms per item; normalising does not
        mean = torch.tensor(args.get("mean", IMAGENET_MEAN)).view(3, 1, 1)
        std = torch.tensor(args.get("std", IMAGENET_STD)).view(3, 1, 1)
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
        return (img - mean) / std, torch.from_numpy(np.ascontiguousarray(mask)).long()
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    msk = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)).to(torch.uint8))
    img, msk = pipeline(img, msk)
    return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)
