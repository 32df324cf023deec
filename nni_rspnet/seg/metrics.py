"""Confusion-matrix mIoU for semantic segmentation, as in torchvision's segmentation references.

The confusion matrix is filled with one ``bincount``; pixels whose target is the ignore index are
dropped. A class absent from both the ground truth and the prediction has no IoU (NaN) and is left
out of the mean, so an evaluation set without, say, trains is not punished for them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torchmetrics import Metric

IGNORE_INDEX = 255  # the label of pixels without a class: no loss, no metric; padding of masks


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: Optional[int] = IGNORE_INDEX) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts, rows = ground truth, columns = prediction.

    Args:
        preds: class indices ``[N, H, W]`` or logits ``[N, C, H, W]`` (argmax over ``C``).
        target: class indices ``[N, H, W]``; ``ignore_index`` pixels are skipped.
        num_classes: number of classes.
        ignore_index: target value to skip (``None``: none).

    Raises:
        ValueError: shapes that do not match, or a target/prediction value outside the classes.
    """
    if preds.dim() == target.dim() + 1:
        preds = preds.argmax(1)
    if preds.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(preds.shape)} does not match target shape {tuple(target.shape)}")
    preds = preds.reshape(-1).long()
    target = target.reshape(-1).long()
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    preds, target = preds[keep], target[keep]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target values must be in [0, {num_classes}) or {ignore_index}, got "
                         f"[{int(target.min())}, {int(target.max())}]")
    if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= num_classes):
        raise ValueError(f"predictions must be in [0, {num_classes}), got [{int(preds.min())}, {int(preds.max())}]")
    return torch.bincount(target * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_from_confusion(confmat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(per-class IoU with NaN for classes absent from both, mIoU over the others)`` as float64."""
    cm = confmat.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
    present = ~torch.isnan(iou)
    miou = iou[present].mean() if present.any() else torch.tensor(float("nan"), dtype=torch.float64)
    return iou, miou


def pixel_accuracy(confmat: torch.Tensor) -> float:
    """The fraction of counted pixels on the diagonal of ``confmat`` (NaN when it counts none)."""
    total = int(confmat.sum())
    return float(confmat.diag().sum()) / total if total else float("nan")


def mean_iou(preds: torch.Tensor, target: torch.Tensor, num_classes: int,
             ignore_index: Optional[int] = IGNORE_INDEX) -> float:
    """The mIoU of one batch of predictions (indices or logits) against targets, as a float."""
    return float(iou_from_confusion(confusion_matrix(preds, target, num_classes, ignore_index))[1])


class SegMetric(Metric):
    """Accumulates a confusion matrix over batches (and over DDP processes, by summing).

    ``compute()`` returns the mIoU as a scalar tensor; ``per_class_iou()`` the IoU of each class (NaN
    where a class appears in neither prediction nor ground truth); ``pixel_accuracy()`` the fraction
    of non-ignored pixels classified correctly.

    Args:
        num_classes: number of classes.
        ignore_index: target value to skip.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: Optional[int] = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Adds a batch: ``preds`` are indices ``[N, H, W]`` or logits ``[N, C, H, W]``."""
        self.confmat += confusion_matrix(preds.detach(), target.detach(), self.num_classes,
                                         self.ignore_index).to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        return iou_from_confusion(self.confmat)[1].float()

    def per_class_iou(self) -> torch.Tensor:
        """IoU per class (float64, NaN where absent from both)."""
        return iou_from_confusion(self.confmat)[0]

    def pixel_accuracy(self) -> float:
        """The fraction of non-ignored pixels classified correctly (NaN before any pixel)."""
        return pixel_accuracy(self.confmat)
