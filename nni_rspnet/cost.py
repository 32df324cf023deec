"""Cost of networks: parameters and multiply-accumulates (MACs)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: nn.Module, exclude: Sequence[str] = ("aux_heads",)) -> int:
    """Trainable and frozen parameters of ``module``, leaving out submodules named in ``exclude``.

    Auxiliary heads are excluded by default: they are dropped when the network is deployed.
    """
    total = 0
    for name, p in module.named_parameters():
        if not any(part in exclude for part in name.split(".")):
            total += p.numel()
    return total


@torch.no_grad()
def count_macs(module: nn.Module, input_size: Sequence[int], in_channels: int = 3,
               device: torch.device | str = "cpu") -> int:
    """MACs of one forward pass on a ``(1, in_channels, H, W)`` input (torch's FlopCounterMode / 2).

    Convolutions and matrix products only, as torch counts them; the module is put in eval mode for
    the count and restored afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        x = torch.zeros(1, in_channels, int(input_size[0]), int(input_size[1]), device=device)
        with FlopCounterMode(display=False) as counter:
            module(x)
        return counter.get_total_flops() // 2
    finally:
        module.train(was_training)
