"""Helpers of the cost-table tests (``test_cost.py``, ``test_latency_aware.py``)."""
from __future__ import annotations

from typing import Any, Dict

import torch


def one_hot_probs(table, arch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The probabilities that put all weight on ``arch``: 1 on the chosen op, ``1/k`` on each of the k chosen
    inputs; built here, apart from the cost table, so the tests compare it with an independent reading."""
    probs = {}
    for label, spec in table.choices.items():
        p = torch.zeros(spec["n_candidates"])
        if spec["candidates"]:
            p[spec["candidates"].index(arch[label])] = 1.0
        else:
            p[arch[label]] = 1.0 / len(arch[label])
        probs[label] = p
    return probs
