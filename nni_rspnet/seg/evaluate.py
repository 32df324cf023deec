"""Evaluation of a trained network: whole-image or sliding-window inference, optional flip, per-class
IoU tables (Markdown and JSON) and coloured prediction images."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..fileio import atomic_path, atomic_write_text, make_dirs, write_json
from .data import pad_collate
from .metrics import IGNORE_INDEX, SegMetric
from .progress import iterate
from .transforms import IMAGENET_MEAN, IMAGENET_STD
from .visual import colourise, denormalise, palette, save_prediction_grid

MODES = ("whole", "slide")


@torch.no_grad()
def infer(net: nn.Module, x: torch.Tensor, mode: str = "whole", window: Optional[Sequence[int]] = None,
          stride: Optional[Sequence[int]] = None, flip: bool = False) -> torch.Tensor:
    """Logits ``[N, C, H, W]`` for normalised images ``x``.

    Args:
        net: the network (returns logits at input size).
        x: ``[N, 3, H, W]`` images.
        mode: ``whole`` (one pass) or ``slide`` (windows of ``window`` every ``stride``, the logits of
            overlapping windows averaged; images smaller than a window are zero-padded).
        window, stride: ``(h, w)`` of the windows and their step (default: two thirds of the window).
        flip: also run the horizontally flipped image and average the logits.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "whole":
        out = net(x)
        if flip:
            out = out + net(x.flip(-1)).flip(-1)
            out = out / 2
        return out
    if window is None:
        raise ValueError("sliding-window inference needs a window size (h, w)")
    wh, ww = int(window[0]), int(window[1])
    sh, sw = (int(stride[0]), int(stride[1])) if stride else (max(1, wh * 2 // 3), max(1, ww * 2 // 3))
    n, _, h, w = x.shape
    ph, pw = max(h, wh), max(w, ww)
    xp = F.pad(x, (0, pw - w, 0, ph - h))
    total: Optional[torch.Tensor] = None
    count = x.new_zeros((1, 1, ph, pw))
    rows = [min(i * sh, ph - wh) for i in range(math.ceil((ph - wh) / sh) + 1)]
    cols = [min(j * sw, pw - ww) for j in range(math.ceil((pw - ww) / sw) + 1)]
    for y0 in sorted(set(rows)):
        for x0 in sorted(set(cols)):
            crop = xp[:, :, y0:y0 + wh, x0:x0 + ww]
            out = infer(net, crop, "whole", flip=flip)
            if total is None:
                total = x.new_zeros((n, out.shape[1], ph, pw))
            total[:, :, y0:y0 + wh, x0:x0 + ww] += out
            count[:, :, y0:y0 + wh, x0:x0 + ww] += 1
    assert total is not None
    return (total / count)[:, :, :h, :w]


def iou_table_markdown(classes: Sequence[str], per_class: Sequence[float], miou: float, pixel_acc: float) -> str:
    """A Markdown table of per-class IoU (``-`` for classes absent from both ground truth and prediction)."""
    lines = ["| class | IoU (%) |", "| --- | ---: |"]
    for name, iou in zip(classes, per_class):
        lines.append(f"| {name} | {'-' if iou is None or math.isnan(iou) else f'{100 * iou:.2f}'} |")
    lines.append(f"| **mean** | **{100 * miou:.2f}** |")
    lines.append("")
    lines.append(f"pixel accuracy: {100 * pixel_acc:.2f} %")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def evaluate_network(net: nn.Module, dataset, classes: Sequence[str], out_dir: Optional[str] = None,
                     mode: str = "whole", window: Optional[Sequence[int]] = None,
                     stride: Optional[Sequence[int]] = None, flip: bool = False, device: str = "cpu",
                     save_images: int = 8, dataset_spec: str = "builtin", batch_size: int = 1,
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                     progress: bool = True) -> Dict[str, Any]:
    """mIoU and per-class IoU of ``net`` on ``dataset``; with ``out_dir`` writes ``iou.md``,
    ``iou.json``, ``predictions/NNNN.png`` (image | ground truth | prediction, coloured) and
    ``predictions.png`` (the first six of them in one picture, with a legend).

    Args:
        net: the network.
        dataset: yields ``(normalised image, mask)`` pairs.
        classes: class names (their number is the number of classes).
        out_dir: where to write the reports (``None``: nothing written).
        mode, window, stride, flip: see ``infer``.
        device: torch device.
        save_images: how many coloured predictions to write.
        dataset_spec: the dataset spec, to choose the palette (Cityscapes colours for Cityscapes).
        batch_size: images per forward pass (padded with the ignore index when sizes differ).
        mean, std: normalisation, to show the images.
        progress: show progress (a bar on a terminal, a line in a log).

    Returns:
        ``{"miou", "pixel_accuracy", "per_class": {name: IoU or None}, "images", "mode", "flip"}``.
    """
    net = net.to(device).eval()
    metric = SegMetric(len(classes), IGNORE_INDEX)
    colours = palette(len(classes), dataset_spec)
    pictures: List[np.ndarray] = []
    grid: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=pad_collate)
    for x, y in iterate(loader, "evaluate", enabled=progress, unit="batches"):
        logits = infer(net, x.to(device), mode, window, stride, flip)
        pred = logits.argmax(1).cpu()
        metric.update(pred, y)
        for i in range(x.shape[0]):
            if len(pictures) < save_images:
                image = denormalise(x[i], mean, std)
                gt = colourise(y[i].numpy(), colours)
                pr = colourise(pred[i].numpy(), colours)
                pictures.append(np.concatenate([image, gt, pr], axis=1))
                grid.append((image, y[i].numpy(), pred[i].numpy()))
    per_class = metric.per_class_iou().tolist()
    result = {"miou": float(metric.compute()), "pixel_accuracy": metric.pixel_accuracy(),
              "per_class": {name: (None if math.isnan(v) else v) for name, v in zip(classes, per_class)},
              "images": len(dataset), "mode": mode, "flip": flip}
    if out_dir is not None:
        make_dirs(os.path.join(out_dir, "predictions"))
        write_json(os.path.join(out_dir, "iou.json"), result)
        atomic_write_text(os.path.join(out_dir, "iou.md"),
                          iou_table_markdown(classes, per_class, result["miou"], result["pixel_accuracy"]))
        for i, pic in enumerate(pictures):
            with atomic_path(os.path.join(out_dir, "predictions", f"{i:04d}.png")) as tmp:
                Image.fromarray(pic).save(tmp, format="PNG")
        save_prediction_grid(grid[:6], classes, colours, os.path.join(out_dir, "predictions.png"), result["miou"])
    return result
