"""The per-candidate cost table of a space, and the expected cost of an architecture under it.

``build_cost_table`` measures every candidate of every choice of an RSPNet space (the latency lookup
table of ``nni-rspnet latency-table``); ``CostTable.expected`` gives the differentiable expected cost
under the search's probabilities, ``CostTable.derived`` the cost of the decoded architecture.
``penalty.ResourcePenalty`` turns it into a loss term.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice
from torch import nn

from ..errors import ConfigError
from ..fileio import read_json, write_json
from ..measure import call_macs, count_params, measure_latency
from ..space.arch import build_network
from ..space.cell import Cell
from ..space.decode import top_k
from ..space.macro import TrellisNode
from ..space.model import RSPNet, as_space_config

# --- per-candidate cost table and expected cost ---------------------------------------------------
#
# A ``CostTable`` lists, for every choice instance of a space, the cost of each candidate (parameters,
# MACs, latency measured on a device at an input size) plus the fixed part (everything outside the
# choices). The cost of an architecture is ``fixed + sum over entries of gate * chosen cost``; its
# expected cost under the search's probabilities replaces "chosen" with the probabilities:
#
# * an op choice (``LayerChoice``) weighs candidate ``o`` by ``p_o``;
# * an input choice of ``k`` among ``n`` (cell inputs, macro paths) keeps input ``j`` with weight
#   ``min(1, k * p_j)``; a macro path's cost is its resampler, so keeping it costs that;
# * a cell edge op only exists if its input choice keeps the edge: its entry is *gated* by that
#   weight (the product makes the expectation bilinear but still differentiable).
#
# A label without probabilities (not searched in this stage) takes the uniform prior. Nodes that the
# final network prunes (they cannot reach the head) are not modelled, so the table over-estimates
# networks with many pruned nodes: a target is then met from below.

METRICS = ("params", "macs", "latency_ms")


@dataclass
class CostEntry:
    """One choice instance: its label, optional gate ``(input label, edge index)`` and candidate costs."""

    label: str
    costs: Dict[str, List[float]]
    gate: Optional[Tuple[str, int]] = None


@dataclass
class CostTable:
    """Per-candidate costs of a space at one input size on one device (see the comment above).

    Attributes:
        choices: label -> ``{"candidates": [op names] or null, "n_candidates": n, "n_chosen": k}``.
        fixed: metric -> cost of everything outside the choices.
        entries: one ``CostEntry`` per (label, gate) pair, summed over the instances that share it.
        device, input_size: where and at which ``(H, W)`` the latencies were measured.
    """

    choices: Dict[str, Dict[str, Any]]
    fixed: Dict[str, float]
    entries: List[CostEntry]
    device: str = "cpu"
    input_size: List[int] = field(default_factory=lambda: [0, 0])

    # weights ---------------------------------------------------------------------------------------

    def _weights(self, label: str, value: Any, soft: bool) -> torch.Tensor:
        """Per-candidate weights of ``label`` for ``value`` (probabilities, a chosen value or ``None``)."""
        spec = self.choices[label]
        n, k = spec["n_candidates"], spec["n_chosen"]
        names = spec.get("candidates")
        if value is None:  # not searched here: the uniform prior
            p = torch.full((n,), 1.0 / n)
        elif torch.is_tensor(value):
            if value.shape != (n,):
                raise ValueError(f"{label}: expected {n} probabilities, got shape {tuple(value.shape)}")
            p = value
            if not soft:  # the derived decision: argmax / top-k, ties to the lower index
                keep = top_k(p.tolist(), 1 if names else k)
                p = torch.zeros(n)
                p[keep] = 1.0 if names else 1.0 / k
        elif names:
            if value not in names:
                raise ValueError(f"{label}: unknown op {value!r}; expected one of {names}")
            p = torch.zeros(n)
            p[names.index(value)] = 1.0
        else:
            chosen = [value] if isinstance(value, int) else list(value)
            p = torch.zeros(n)
            p[chosen] = 1.0 / len(chosen)
        return p if names else torch.clamp(p * k, max=1.0)

    def _total(self, arch: Mapping[str, Any], metric: str, soft: bool) -> torch.Tensor:
        if metric not in METRICS:
            raise ValueError(f"unknown cost metric {metric!r}; expected one of {list(METRICS)}")
        cache: Dict[str, torch.Tensor] = {}

        def weights(label: str) -> torch.Tensor:
            if label not in cache:
                cache[label] = self._weights(label, arch.get(label), soft)
            return cache[label]

        total = torch.tensor(float(self.fixed[metric]))
        for entry in self.entries:
            w = weights(entry.label)
            cost = torch.dot(w.to(torch.float32), torch.tensor(entry.costs[metric], dtype=torch.float32))
            if entry.gate is not None and entry.gate[0] in self.choices:
                cost = cost * weights(entry.gate[0])[entry.gate[1]]
            total = total + cost
        return total

    def expected(self, probs: Mapping[str, Any], metric: str) -> torch.Tensor:
        """Expected cost (a differentiable scalar) under label -> probabilities (or frozen values)."""
        return self._total(probs, metric, soft=True)

    def derived(self, arch: Mapping[str, Any], metric: str) -> float:
        """Cost of the discrete architecture: label -> op name / chosen indices, or probabilities
        (decoded by argmax / top-k); labels left out take the uniform prior."""
        with torch.no_grad():
            return float(self._total(arch, metric, soft=False))

    def extreme_arch(self, metric: str, pick=min) -> Dict[str, torch.Tensor]:
        """Per op label the candidate with the lowest (``pick=min``) or highest (``max``) ``metric``,
        as one-hot weights for ``derived``; input choices keep their uniform prior."""
        arch: Dict[str, torch.Tensor] = {}
        for label, spec in self.choices.items():
            if spec["candidates"]:
                cost = [0.0] * spec["n_candidates"]
                for e in self.entries:
                    if e.label == label:
                        cost = [a + b for a, b in zip(cost, e.costs[metric])]
                best = pick(range(len(cost)), key=lambda i: cost[i])
                arch[label] = torch.nn.functional.one_hot(torch.tensor(best), len(cost)).float()
        return arch

    # JSON ------------------------------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return {"device": self.device, "input_size": list(self.input_size), "fixed": self.fixed,
                "choices": self.choices,
                "entries": [{"label": e.label, "gate": list(e.gate) if e.gate else None, "costs": e.costs}
                            for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "cost table") -> "CostTable":
        try:
            entries = [CostEntry(e["label"], {m: [float(c) for c in e["costs"][m]] for m in METRICS},
                                 tuple(e["gate"]) if e.get("gate") else None) for e in data["entries"]]
            table = cls(dict(data["choices"]), {m: float(data["fixed"][m]) for m in METRICS}, entries,
                        str(data.get("device", "cpu")), list(data.get("input_size", [0, 0])))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: not a cost table ({type(err).__name__}: {err})") from None
        for e in table.entries:
            if e.label not in table.choices:
                raise ConfigError(f"{source}: entry for unknown label {e.label!r}")
            n = table.choices[e.label]["n_candidates"]
            for m in METRICS:
                if len(e.costs[m]) != n:
                    raise ConfigError(f"{source}: {e.label!r} has {len(e.costs[m])} {m} costs, expected {n}")
        return table

    def save(self, path: Union[str, os.PathLike]) -> None:
        write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "CostTable":
        return cls.from_dict(read_json(path, "cost table"), os.fspath(path))


def build_cost_table(config: Any, input_size: Sequence[int], device: str = "cpu", latency: bool = True,
                     repeats: int = 5, warmup: int = 1, threads: Optional[int] = 1) -> CostTable:
    """Measures every candidate of every choice of an RSPNet space at ``input_size`` on ``device``.

    One forward of the supernet at ``(1, C, H, W)`` records the input each choice sees; then every
    candidate op (each cell ``LayerChoice`` instance) and every macro path's resampler is measured
    alone on such an input: parameters, MACs and, with ``latency``, the median of ``repeats`` timed
    runs. Identical (op, input shape) pairs are measured once.

    Args:
        config: the space (``SpaceConfig``, mapping or YAML path).
        input_size: ``(H, W)`` of the images the network will run on.
        device: where to measure (``"cpu"``, ``"cuda"``, ...).
        latency: measure latencies (else they are 0).
        repeats, warmup: timed and untimed runs per measurement.
        threads: CPU threads while timing (see ``measure_latency``).
    """
    cfg = as_space_config(config)
    h, w = int(input_size[0]), int(input_size[1])
    torch.manual_seed(0)
    net = RSPNet(cfg).to(device).eval()
    seen_inputs: Dict[int, Tuple[Any, ...]] = {}

    def remember(module, args):
        seen_inputs[id(module)] = tuple(a.detach() if torch.is_tensor(a) else a for a in args)

    handles = []
    for m in net.modules():
        if isinstance(m, LayerChoice):
            handles.append(m.register_forward_pre_hook(remember))
        elif isinstance(m, TrellisNode):
            for path in m.paths:
                handles.append(path.register_forward_pre_hook(remember))
    x = torch.zeros(1, cfg.in_channels, h, w, device=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # NNI warns that plain choices run their first candidate
        supernet_macs = call_macs(net, (x,))
    for handle in handles:
        handle.remove()

    memo: Dict[Tuple[Any, ...], Dict[str, float]] = {}

    def measure(key: Tuple[Any, ...], module: nn.Module, args: Tuple[Any, ...]) -> Dict[str, float]:
        if key not in memo:
            memo[key] = {"params": float(sum(p.numel() for p in module.parameters())),
                         "macs": call_macs(module.eval(), args),
                         "latency_ms": measure_latency(module, args, repeats, warmup, threads) if latency else 0.0}
        return memo[key]

    choices: Dict[str, Dict[str, Any]] = {}
    grouped: Dict[Tuple[str, Optional[Tuple[str, int]]], Dict[str, List[float]]] = {}
    first_cost = {m: 0.0 for m in METRICS}  # what the supernet forward ran inside the choices

    def add(label: str, gate: Optional[Tuple[str, int]], costs: List[Dict[str, float]], ran: Optional[int]) -> None:
        acc = grouped.setdefault((label, gate), {m: [0.0] * len(costs) for m in METRICS})
        for i, c in enumerate(costs):
            for m in METRICS:
                acc[m][i] += c[m]
        if ran is not None:
            for m in METRICS:
                first_cost[m] += costs[ran][m]

    for module in net.modules():
        if isinstance(module, Cell):
            for i, (edges, fuse) in enumerate(zip(module.edges, module.fuse)):
                gate_label = fuse.label if isinstance(fuse, InputChoice) else None
                if gate_label is not None:
                    choices[gate_label] = {"candidates": None, "n_candidates": fuse.n_candidates,
                                           "n_chosen": fuse.n_chosen}
                for j, edge in enumerate(edges):
                    if not isinstance(edge, LayerChoice) or id(edge) not in seen_inputs:
                        continue
                    args = seen_inputs[id(edge)]
                    shape = tuple(args[0].shape)
                    costs = [measure(("op", name, shape), edge[name], args) for name in edge.names]
                    choices[edge.label] = {"candidates": list(edge.names), "n_candidates": len(edge.names),
                                           "n_chosen": 1}
                    add(edge.label, (gate_label, j) if gate_label else None, costs, 0)
        elif isinstance(module, TrellisNode) and isinstance(module.fuse, InputChoice):
            fuse = module.fuse
            costs = []
            for path in module.paths:
                args = seen_inputs[id(path)]
                key = ("path", repr(path), tuple(args[0].shape), tuple(args[1]))
                costs.append(measure(key, path, args))
            choices[fuse.label] = {"candidates": None, "n_candidates": fuse.n_candidates, "n_chosen": fuse.n_chosen}
            add(fuse.label, None, costs, None)
            for c in costs:  # the supernet computes every path
                for m in METRICS:
                    first_cost[m] += c[m]
    entries = [CostEntry(label, costs, gate) for (label, gate), costs in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], kv[0][1] or ("", -1)))]
    # Parameters of every candidate sit in the supernet (not just of the ones its forward ran).
    in_choices = 0.0
    for module in net.modules():
        if isinstance(module, LayerChoice):
            in_choices += sum(p.numel() for p in module.parameters())
        elif isinstance(module, TrellisNode) and isinstance(module.fuse, InputChoice):
            in_choices += sum(p.numel() for p in module.paths.parameters())
    table = CostTable(choices, {"params": float(count_params(net)) - in_choices,
                                "macs": supernet_macs - first_cost["macs"], "latency_ms": 0.0},
                      entries, str(device), [h, w])
    if latency:
        # Latency does not add up like MACs (the plain supernet also pays NNI's warnings), so the
        # fixed part is measured on a real network: a reference architecture minus its choices.
        ref = {label: (spec["candidates"][0] if spec["candidates"] else list(range(spec["n_chosen"])))
               for label, spec in choices.items()}
        ref_net = build_network(cfg, ref).to(device)
        ref_ms = measure_latency(ref_net, x, repeats, warmup, threads)
        table.fixed["latency_ms"] = max(ref_ms - table.derived(ref, "latency_ms"), 0.0)
    return table
