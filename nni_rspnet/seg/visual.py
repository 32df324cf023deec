"""Pictures of segmentation data: class colours, coloured masks, a preview grid of a dataset and a
grid of predictions next to the ground truth."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to choose

from ..fileio import save_figure
from .datasets import SegDataset
from .metrics import IGNORE_INDEX
from .transforms import IMAGENET_MEAN, IMAGENET_STD

CITYSCAPES_PALETTE = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32)]


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
    count = min(count, len(dataset))
    colours = palette(dataset.num_classes, dataset_spec)
    fig = Figure(figsize=(9, 1.6 * count))
    axes = fig.subplots(count, 3, squeeze=False)
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


def save_prediction_grid(rows: Sequence[np.ndarray], classes: Sequence[str], colours: np.ndarray, path: str,
                         miou: float = float("nan")) -> None:
    """Writes one PNG: a row per image (the image, its ground truth, the prediction) and a legend of the
    classes that appear.

    Args:
        rows: ``(image, ground-truth mask, predicted mask)`` triples, ``H x W x 3`` uint8 and two
            ``H x W`` index arrays.
        classes: class names.
        colours: the palette (``palette``).
        path: the PNG to write (atomically).
        miou: shown in the title when given.
    """
    count = len(rows)
    if not count:
        return
    fig = Figure(figsize=(9, 1.5 * count + 0.8))
    axes = fig.subplots(count, 3, squeeze=False)
    seen: List[int] = []
    for i, (image, truth, pred) in enumerate(rows):
        for ax, pic in zip(axes[i], (image, colourise(truth, colours), colourise(pred, colours))):
            ax.imshow(pic, interpolation="nearest")
            ax.axis("off")
        for c in np.unique(np.concatenate([np.ravel(truth), np.ravel(pred)])).tolist():
            if c < len(classes) and c not in seen:
                seen.append(c)
    for ax, title in zip(axes[0], ("image", "ground truth", "prediction")):
        ax.set_title(title, fontsize=9)
    handles = [_patch(colours[c], classes[c]) for c in sorted(seen)]
    handles.append(_patch(colours[IGNORE_INDEX], "ignored", edge=True))
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    if miou == miou:
        fig.suptitle(f"validation mIoU {miou:.3f}", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / (1.5 * count + 0.8), 1, 1))
    save_figure(fig, path, dpi=100)


def _patch(colour: np.ndarray, label: str, edge: bool = False):
    from matplotlib.patches import Patch

    return Patch(facecolor=np.asarray(colour) / 255.0, edgecolor="black" if edge else "none", label=label)
