"""Reference networks of the quality section: a plain CNN that the searched space has to beat.

``plain_cnn`` is the baseline of issue 10's probe: six 3 x 3 conv-BN-ReLU layers (two of them stride 2,
the last two dilated), a 1 x 1 classifier and bilinear upsampling to the input size. With the default
widths it has about 108 k parameters at 11 classes, the size of the tiny space's networks. LR-ASPP
(``latency.torchvision_peer``) is the other reference.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PLAIN_CNN_WIDTHS = (16, 32, 32, 64, 64, 64)
# About 240 k parameters at 11 classes: nearer the tiny space's networks (roughly 250-400 k).
PLAIN_CNN_WIDE = (24, 48, 48, 96, 96, 96)
# (stride, dilation) of the six layers: output stride 4, then a receptive field widened by dilation
PLAIN_CNN_LAYOUT = ((1, 1), (2, 1), (1, 1), (2, 1), (1, 2), (1, 4))


class PlainCNN(nn.Module):
    """Six 3 x 3 conv-BN-ReLU layers, a 1 x 1 classifier, logits upsampled to the input size.

    Args:
        num_classes: output classes.
        widths: the six layers' output channels.
        in_channels: image channels.
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = PLAIN_CNN_WIDTHS, in_channels: int = 3):
        super().__init__()
        if len(widths) != len(PLAIN_CNN_LAYOUT):
            raise ValueError(f"widths must give {len(PLAIN_CNN_LAYOUT)} layers, got {list(widths)}")
        layers = []
        c = in_channels
        for width, (stride, dilation) in zip(widths, PLAIN_CNN_LAYOUT):
            layers += [nn.Conv2d(c, width, 3, stride, padding=dilation, dilation=dilation, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return F.interpolate(logits, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)


def plain_cnn(num_classes: int, widths: Sequence[int] = PLAIN_CNN_WIDTHS) -> PlainCNN:
    """The plain-CNN baseline (see ``PlainCNN``)."""
    return PlainCNN(num_classes, widths)
