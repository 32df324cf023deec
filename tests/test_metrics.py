"""Confusion-matrix mIoU: agreement with torchmetrics, absent classes, ignore pixels, errors."""
import math

import pytest
import torch

import nni_rspnet  # noqa: F401  (patches torchvision before torchmetrics imports it)
from nni_rspnet.seg.metrics import SegMetric, confusion_matrix, iou_from_confusion, mean_iou


def _random_case(seed: int, num_classes: int = 7):
    g = torch.Generator().manual_seed(seed)
    # Classes 3 and 6 never appear in the target; 3 never in the prediction either (absent from both).
    target = torch.tensor([0, 1, 2, 4, 5])[torch.randint(0, 5, (3, 24, 40), generator=g)]
    preds = torch.tensor([0, 1, 2, 4, 5, 6])[torch.randint(0, 6, (3, 24, 40), generator=g)]
    target[torch.rand(3, 24, 40, generator=g) < 0.15] = 255
    return preds, target, num_classes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_torchmetrics(seed):
    from torchmetrics.classification import MulticlassJaccardIndex

    preds, target, n = _random_case(seed)
    reference = MulticlassJaccardIndex(num_classes=n, ignore_index=255, average="macro")(preds, target)
    per_class_ref = MulticlassJaccardIndex(num_classes=n, ignore_index=255, average="none")(preds, target)
    per_class, miou = iou_from_confusion(confusion_matrix(preds, target, n))
    assert abs(float(miou) - float(reference)) < 1e-6
    assert math.isnan(per_class[3])  # absent from both: left out, not 0
    assert per_class[6] == 0.0  # predicted but never true: a real 0 that counts
    present = ~torch.isnan(per_class)
    assert torch.allclose(per_class[present].float(), per_class_ref[present], atol=1e-6)
    assert abs(mean_iou(preds, target, n) - float(reference)) < 1e-6


def test_metric_accumulates_batches_and_accepts_logits():
    preds, target, n = _random_case(5)
    metric = SegMetric(n)
    for i in range(3):  # logits whose argmax is preds
        logits = torch.nn.functional.one_hot(preds[i:i + 1], n).permute(0, 3, 1, 2).float()
        metric.update(logits, target[i:i + 1])
    assert abs(float(metric.compute()) - mean_iou(preds, target, n)) < 1e-6
    assert torch.equal(metric.confmat, confusion_matrix(preds, target, n))
    valid = target != 255
    assert abs(metric.pixel_accuracy() - float((preds[valid] == target[valid]).float().mean())) < 1e-6
    metric.reset()
    assert int(metric.confmat.sum()) == 0


def test_ignored_pixels_do_not_count():
    target = torch.tensor([[0, 1, 255, 255]])
    good = torch.tensor([[0, 1, 0, 0]])
    assert mean_iou(good, target, 2) == 1.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 9), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        SegMetric(1)
