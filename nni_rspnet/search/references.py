"""Reference networks that a relative latency target is measured against, on the user's own machine.

A user rarely knows in advance how many milliseconds a network may take on a device; "half of what
LR-ASPP takes here" means the same on every machine. ``REFERENCES`` names torchvision's light
segmentation networks, built with no weights (nothing is downloaded); ``reference_network`` builds one
with the space's number of classes, returning logits like every network of this package.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

from ..errors import ConfigError


class LogitsOnly(nn.Module):
    """A torchvision segmentation model (which returns ``{"out": ..., "aux": ...}``) returning the logits
    tensor, like every network of this package."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _lraspp(num_classes: int) -> nn.Module:
    from torchvision.models import segmentation  # torchvision is patched for CPU torch by this package

    return segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def _deeplabv3(num_classes: int) -> nn.Module:
    from torchvision.models import segmentation

    return segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                                     aux_loss=False)


# name -> (builder, description)
REFERENCES: Dict[str, tuple] = {
    "lraspp": (_lraspp, "LR-ASPP-MobileNetV3-Large (torchvision, 3.2 M parameters)"),
    "deeplabv3": (_deeplabv3, "DeepLabV3-MobileNetV3-Large (torchvision, 11.0 M parameters)"),
}
REFERENCE_NAMES = {"lraspp": "LR-ASPP-MobileNetV3-Large", "deeplabv3": "DeepLabV3-MobileNetV3-Large"}


def check_reference(name: str, where: str = "reference network") -> str:
    """``name`` if it is a known reference network; else a one-line ``ConfigError`` listing them."""
    if name not in REFERENCES:
        raise ConfigError(f"{where}: unknown reference network {name!r}; expected one of {sorted(REFERENCES)}")
    return name


def reference_network(name: str, num_classes: int, seed: int = 0) -> nn.Module:
    """The reference network ``name`` with ``num_classes`` outputs, random weights (seeded), eval mode."""
    builder: Callable[[int], nn.Module] = REFERENCES[check_reference(name)][0]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return LogitsOnly(builder(num_classes)).eval()
    finally:
        torch.random.set_rng_state(state)
