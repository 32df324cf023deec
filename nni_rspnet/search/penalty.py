"""The resource penalty of the search: expected cost against a target, with an adaptive weight."""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import torch

from .cost_table import METRICS, CostTable


class ResourcePenalty:
    """Resource-aware loss term with a weight adapted towards a target (after FasterSeg).

    ``loss = lam * expected_cost / target``; after every architecture step ``lam`` is multiplied by
    ``exp(rate * (derived_cost / target - 1))`` (clipped to ``[lam_min, lam_max]``): it grows while the
    currently decoded architecture is over the target and decays once it is under.

    Args:
        table: the candidates' costs.
        metric: ``"params"``, ``"macs"`` or ``"latency_ms"``.
        target: the cost to aim at, in the metric's unit.
        lam: initial weight; rate: adaptation speed; lam_min, lam_max: bounds.
    """

    def __init__(self, table: CostTable, metric: str, target: float, lam: float = 0.1, rate: float = 0.2,
                 lam_min: float = 1e-4, lam_max: float = 10.0):
        if metric not in METRICS:
            raise ValueError(f"unknown cost metric {metric!r}; expected one of {list(METRICS)}")
        if not target > 0:
            raise ValueError(f"the {metric} target must be > 0, got {target}")
        if not 0 < lam_min <= lam <= lam_max:
            raise ValueError(f"need 0 < lam_min <= lam <= lam_max, got {lam_min}, {lam}, {lam_max}")
        self.table, self.metric, self.target = table, metric, float(target)
        self.lam_init, self.rate, self.lam_min, self.lam_max = lam, rate, lam_min, lam_max
        self.lam = lam

    def reset(self) -> None:
        """Back to the initial weight (each search stage starts afresh)."""
        self.lam = self.lam_init

    def loss(self, probs: Mapping[str, Any]) -> torch.Tensor:
        return self.lam * self.table.expected(probs, self.metric) / self.target

    def adapt(self, probs: Mapping[str, Any]) -> float:
        """Updates ``lam`` from the cost of the architecture decoded from ``probs``; returns that cost."""
        derived = self.table.derived(probs, self.metric)
        step = min(max(self.rate * (derived / self.target - 1.0), -20.0), 20.0)  # no overflow far off target
        self.lam = min(max(self.lam * math.exp(step), self.lam_min), self.lam_max)
        return derived

    def summary(self, probs: Mapping[str, Any]) -> Dict[str, float]:
        return {f"expected_{self.metric}": float(self.table.expected(probs, self.metric)),
                f"derived_{self.metric}": self.table.derived(probs, self.metric), "lambda": self.lam}

    def state_dict(self) -> Dict[str, float]:
        return {"lam": self.lam}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.lam = float(state["lam"])
