"""The search's split of the training data: one part trains the supernet's weights, the other its
architecture parameters (and scores sub-networks: stage 3, the rank check)."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Subset

from ..errors import ConfigError


def arch_part_size(n: int, arch_fraction: float) -> int:
    """The number of the ``n`` training images that ``split_for_search`` puts in the architecture part."""
    return int(round(n * arch_fraction))


def split_for_search(dataset: Any, arch_fraction: float, seed: int) -> tuple:
    """Two disjoint random subsets of ``dataset``: ``(weights part, architecture part)``.

    Raises:
        ConfigError: when either part would be empty.
    """
    n = len(dataset)
    n_arch = arch_part_size(n, arch_fraction)
    if not 0 < n_arch < n:
        raise ConfigError(f"search.arch_fraction={arch_fraction} leaves an empty part of the {n} training "
                          f"images; use more images or a fraction nearer 0.5")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[n_arch:])), Subset(dataset, sorted(order[:n_arch]))
