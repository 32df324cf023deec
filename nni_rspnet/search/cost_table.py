"""The cost table of a space: what every part of a built network costs, and the cost of an architecture.

``build_cost_table`` measures, on the user's device, at the deployment input size and in the
deployment runtime (PyTorch eager, TorchScript or onnxruntime), every part a built network runs:

* the stem, and the head with the final upsampling (``fixed``: every network runs them);
* per trellis node: its block without the searched ops (RSP split and transitions, the cell's
  concatenation and 1 x 1 projection, the sum of its incoming paths), and each candidate path's
  resampler;
* per trellis node and cell edge: each candidate op, at that node's width and resolution.

The cost of an architecture is ``fixed`` plus, for every *live* node (one whose output reaches the
head: the built network prunes the others, ``space.decode.live_nodes``), its block, its chosen paths
and the chosen ops of the cell edges its cell keeps. Parameters and MACs add up exactly; latencies are
the sum of the parts timed alone (``benchmarks`` measures how well that predicts a whole network).

For the search, ``CostTable.expected`` gives the same cost as a differentiable function of the
choices' probabilities:

* an op choice weighs candidate ``o`` by ``p_o``; an input choice of ``k`` among ``n`` keeps input
  ``j`` with weight ``min(1, k * p_j)``; a cell edge op counts only as much as its input choice keeps
  the edge (the product of the two);
* a node is live with probability ``1 - prod over its consumers c (1 - live(c) * keep_c(node))``, the
  head's inputs with probability 1 (independent choices assumed), and its whole cost is weighted by it.

A label without probabilities (not searched in this stage) takes the uniform prior. With one-hot
probabilities ``expected`` equals ``derived``, the cost of the decoded architecture.
"""
from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from nni.retiarii import fixed_arch
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice
from torch import nn

from ..errors import ConfigError
from ..fileio import read_json, write_json
from ..measure import call_macs, time_interleaved
from ..runtimes import check_runtime, prepare
from ..space.arch import build_network, random_arch
from ..space.cell import Cell, make_block
from ..space.decode import live_nodes, top_k
from ..space.macro import head_inputs, trellis_nodes
from ..space.model import RSPNet, as_space_config
from .references import reference_network

METRICS = ("params", "macs", "latency_ms")
FORMAT = "nni-rspnet-cost-table/2"
Node = Tuple[int, int]  # (layer, resolution index); the stem is (0, 0)


@dataclass
class CostEntry:
    """One cell edge op of one node: its label, the node, the optional gate ``(input label, edge index)``
    and the cost of each candidate."""

    label: str
    costs: Dict[str, List[float]]
    gate: Optional[Tuple[str, int]] = None
    node: Node = (0, 0)


@dataclass
class NodeCost:
    """One trellis node: its path label (``None`` without a choice), candidate sources, paths kept
    (``n_chosen``), the cost of its block without the searched ops, and of each candidate path."""

    node: Node
    label: Optional[str]
    sources: List[Node]
    n_chosen: int
    block: Dict[str, float]
    paths: Dict[str, List[float]]


@dataclass
class CostTable:
    """Per-part costs of a space at one input size on one device and runtime (see the module docstring).

    Attributes:
        choices: label -> ``{"candidates": [op names] or null, "n_candidates": n, "n_chosen": k}``.
        fixed: metric -> cost of the stem and the head (with the final upsampling).
        nodes: one ``NodeCost`` per trellis node, in computation order.
        entries: one ``CostEntry`` per (node, cell edge label, gate).
        outputs: the nodes the head reads.
        device, input_size, runtime, threads: where, at which ``(H, W)``, in which runtime and with how
            many CPU threads the latencies were measured.
        references: reference network -> its latency (ms) measured with the table.
        key: what the table was measured for (space, size, device, runtime, threads, repeats): a saved
            table is reused only for the same key.
    """

    choices: Dict[str, Dict[str, Any]]
    fixed: Dict[str, float]
    nodes: List[NodeCost]
    entries: List[CostEntry]
    outputs: List[Node]
    device: str = "cpu"
    input_size: List[int] = field(default_factory=lambda: [0, 0])
    runtime: str = "eager"
    threads: Optional[int] = 1
    references: Dict[str, float] = field(default_factory=dict)
    key: Dict[str, Any] = field(default_factory=dict)

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
            if not chosen or any(not 0 <= int(i) < n for i in chosen):
                raise ValueError(f"{label}: expected indices in [0, {n}), got {value!r}")
            p = torch.zeros(n)
            p[chosen] = 1.0 / len(chosen)
        return p if names else torch.clamp(p * k, max=1.0)

    def _liveness(self, keep: Mapping[Optional[str], torch.Tensor], discrete: bool) -> Dict[Node, torch.Tensor]:
        """Node -> probability that it reaches the head. For a discrete architecture it is the set that
        ``space.decode.live_nodes`` returns; otherwise the propagation of the module docstring."""
        outputs = set(self.outputs)
        if discrete:
            sources = {n.node: [s for j, s in enumerate(n.sources) if float(keep[n.label][j]) > 0.5] if n.label
                       else list(n.sources) for n in self.nodes}
            live = live_nodes(sources, outputs)
            return {n.node: torch.tensor(1.0 if n.node in live else 0.0) for n in self.nodes}
        consumers: Dict[Node, List[Tuple[NodeCost, int]]] = {}
        for n in self.nodes:
            for j, src in enumerate(n.sources):
                consumers.setdefault(src, []).append((n, j))
        result: Dict[Node, torch.Tensor] = {}
        for n in reversed(self.nodes):
            if n.node in outputs:
                result[n.node] = torch.tensor(1.0)
                continue
            dead = torch.tensor(1.0)
            for c, j in consumers.get(n.node, []):
                w = keep[c.label][j] if c.label else torch.tensor(1.0)
                dead = dead * (1.0 - result[c.node] * w)
            result[n.node] = 1.0 - dead
        return result

    def _total(self, arch: Mapping[str, Any], metric: str, soft: bool) -> torch.Tensor:
        if metric not in METRICS:
            raise ValueError(f"unknown cost metric {metric!r}; expected one of {list(METRICS)}")
        unknown = [label for label in arch if label not in self.choices]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r}: not a choice of this cost table's space")
        weights = {label: self._weights(label, arch.get(label), soft) for label in self.choices}
        # Discrete when every label of the space has a decided value (the derived decision).
        discrete = not soft and all(label in arch for label in self.choices)
        live = self._liveness(weights, discrete)
        total = torch.tensor(float(self.fixed[metric]))
        for n in self.nodes:
            paths = torch.tensor(n.paths[metric], dtype=torch.float32)
            w = weights[n.label].to(torch.float32) if n.label else torch.ones(len(n.sources))
            total = total + live[n.node] * (n.block[metric] + torch.dot(w, paths))
        for entry in self.entries:
            w = weights[entry.label].to(torch.float32)
            cost = torch.dot(w, torch.tensor(entry.costs[metric], dtype=torch.float32))
            if entry.gate is not None and entry.gate[0] in self.choices:
                cost = cost * weights[entry.gate[0]][entry.gate[1]]
            total = total + live[entry.node] * cost
        return total

    def expected(self, probs: Mapping[str, Any], metric: str) -> torch.Tensor:
        """Expected cost (a differentiable scalar) under label -> probabilities (or frozen values)."""
        return self._total(probs, metric, soft=True)

    def derived(self, arch: Mapping[str, Any], metric: str) -> float:
        """Cost of the discrete architecture: label -> op name / chosen indices, or probabilities
        (decoded by argmax / top-k); labels left out take the uniform prior."""
        with torch.no_grad():
            return float(self._total(arch, metric, soft=False))

    def live(self, arch: Mapping[str, Any]) -> List[Node]:
        """The nodes of ``arch`` (every label decided) that the built network keeps."""
        weights = {label: self._weights(label, arch.get(label), False) for label in self.choices}
        return [n for n, p in self._liveness(weights, True).items() if float(p) > 0.5]

    def extreme_arch(self, metric: str, pick=min) -> Dict[str, Any]:
        """An architecture with (about) the lowest (``pick=min``) or highest (``max``) ``metric``:
        every op label starts at its cheapest (dearest) candidate, then coordinate descent over every
        label (paths included: pruning makes them interact) until no single change helps."""
        sign = 1.0 if pick is min else -1.0
        arch: Dict[str, Any] = {}
        for label, spec in self.choices.items():
            if spec["candidates"]:
                cost = [0.0] * spec["n_candidates"]
                for e in self.entries:
                    if e.label == label:
                        cost = [a + b for a, b in zip(cost, e.costs[metric])]
                arch[label] = spec["candidates"][pick(range(len(cost)), key=lambda i: cost[i])]
            else:
                arch[label] = list(range(spec["n_chosen"]))
        best = sign * self.derived(arch, metric)
        for _ in range(4):
            improved = False
            for label, spec in self.choices.items():
                values = spec["candidates"] or [list(c) for c in itertools.combinations(range(spec["n_candidates"]),
                                                                                       spec["n_chosen"])]
                for value in values:
                    trial = sign * self.derived({**arch, label: value}, metric)
                    if trial < best - 1e-9:
                        arch[label], best, improved = value, trial, True
            if not improved:
                break
        return arch

    # JSON ------------------------------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return {"format": FORMAT, "device": self.device, "input_size": list(self.input_size),
                "runtime": self.runtime, "threads": self.threads, "key": self.key, "references": self.references,
                "fixed": self.fixed, "choices": self.choices, "outputs": [list(o) for o in self.outputs],
                "nodes": [{"node": list(n.node), "label": n.label, "sources": [list(s) for s in n.sources],
                           "n_chosen": n.n_chosen, "block": n.block, "paths": n.paths} for n in self.nodes],
                "entries": [{"label": e.label, "node": list(e.node), "gate": list(e.gate) if e.gate else None,
                             "costs": e.costs} for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "cost table") -> "CostTable":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not a cost table of this version (no {FORMAT!r} marker); measure it "
                              f"again with nni-rspnet latency-table")
        try:
            nodes = [NodeCost(tuple(n["node"]), n["label"], [tuple(s) for s in n["sources"]], int(n["n_chosen"]),
                              {m: float(n["block"][m]) for m in METRICS},
                              {m: [float(c) for c in n["paths"][m]] for m in METRICS}) for n in data["nodes"]]
            entries = [CostEntry(e["label"], {m: [float(c) for c in e["costs"][m]] for m in METRICS},
                                 tuple(e["gate"]) if e.get("gate") else None, tuple(e["node"]))
                       for e in data["entries"]]
            table = cls(dict(data["choices"]), {m: float(data["fixed"][m]) for m in METRICS}, nodes, entries,
                        [tuple(o) for o in data["outputs"]], str(data.get("device", "cpu")),
                        list(data.get("input_size", [0, 0])), str(data.get("runtime", "eager")), data.get("threads"),
                        {k: float(v) for k, v in dict(data.get("references") or {}).items()},
                        dict(data.get("key") or {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{source}: not a cost table ({type(err).__name__}: {err})") from None
        known = {n.node for n in table.nodes}
        for e in table.entries:
            if e.label not in table.choices:
                raise ConfigError(f"{source}: entry for unknown label {e.label!r}")
            if e.node not in known:
                raise ConfigError(f"{source}: entry {e.label!r} of unknown node {list(e.node)}")
            n = table.choices[e.label]["n_candidates"]
            for m in METRICS:
                if len(e.costs[m]) != n:
                    raise ConfigError(f"{source}: {e.label!r} has {len(e.costs[m])} {m} costs, expected {n}")
        for node in table.nodes:
            for m in METRICS:
                if len(node.paths[m]) != len(node.sources):
                    raise ConfigError(f"{source}: node {list(node.node)} has {len(node.paths[m])} {m} path costs, "
                                      f"expected {len(node.sources)}")
        return table

    def save(self, path: Union[str, os.PathLike]) -> None:
        write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "CostTable":
        return cls.from_dict(read_json(path, "cost table"), os.fspath(path))


# --- measuring ------------------------------------------------------------------------------------------

class _NodeBody(nn.Module):
    """What a trellis node runs besides its resamplers and searched ops: the sum of its incoming paths and
    its block with every searched op an identity (built apart, so nothing else runs)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return self.block(out)


class _HeadAndUpsample(nn.Module):
    """The head and the final upsampling to the input size (as ``Trellis.forward``)."""

    def __init__(self, head: nn.Module, size: List[int]):
        super().__init__()
        self.head = head
        self.size = size

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        return F.interpolate(self.head(feats), size=self.size, mode="bilinear", align_corners=False)


def feature_sizes(input_size: Sequence[int], num_res: int) -> List[List[int]]:
    """``[H, W]`` of every trellis row for an input of ``input_size``: the stem's two stride-2 3 x 3
    convolutions (``ceil(x / 2)`` each), then halving with ceil, as ``Trellis._features`` computes them."""
    h, w = int(input_size[0]), int(input_size[1])
    sizes = [[(((h + 1) // 2) + 1) // 2, (((w + 1) // 2) + 1) // 2]]
    for _ in range(1, num_res):
        sizes.append([(sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2])
    return sizes


def table_clock(device: str, threads: Optional[int]) -> str:
    """The clock of a cost table: the thread's CPU time for one thread on the CPU, else wall time."""
    return "cpu" if threads == 1 and str(device) == "cpu" else "wall"


def table_key(config: Any, input_size: Sequence[int], device: str, runtime: str, threads: Optional[int],
              repeats: int, latency: bool, references: Sequence[str]) -> Dict[str, Any]:
    """What a cost table is measured for: a saved table with the same key can be used again."""
    cfg = as_space_config(config)
    return {"space": cfg.to_dict(), "input_size": [int(input_size[0]), int(input_size[1])], "device": str(device),
            "runtime": runtime, "threads": threads, "clock": table_clock(device, threads), "repeats": int(repeats),
            "latency": bool(latency),
            "references": sorted(references)}


def build_cost_table(config: Any, input_size: Sequence[int], device: str = "cpu", latency: bool = True,
                     repeats: int = 5, warmup: int = 1, threads: Optional[int] = 1, runtime: str = "eager",
                     references: Sequence[str] = (), calibrate: int = 3, log=None) -> CostTable:
    """Measures every part of the networks of an RSPNet space at ``input_size`` on ``device`` in
    ``runtime`` (see the module docstring): parameters, MACs and, with ``latency``, the median of
    ``repeats`` timed runs of each part alone. Identical parts (same module and input shape) are
    measured once; all parts, the reference networks and the calibration networks are timed
    interleaved (one run of each per round), so load that drifts during the measurement hits them alike.
    With one thread on the CPU the runs are timed by the thread's CPU time (``table_clock``): what they
    take with a core to themselves, even while other jobs share the machine.

    Args:
        config: the space (``SpaceConfig``, mapping or YAML path).
        input_size: ``(H, W)`` of the images the network will run on (the deployment size).
        device: where to measure (``"cpu"``, ``"cuda"``, ...).
        latency: measure latencies (else they are 0).
        repeats, warmup: timed and untimed rounds.
        threads: CPU threads while timing (see ``measure_latency``).
        runtime: ``eager``, ``torchscript`` or ``onnxruntime`` (CPU only).
        references: reference networks (``references.REFERENCES``) to time with the table, at the same
            size, for relative targets.
        calibrate: whole random networks (``random_arch`` seeds 0, 1, ...) timed to calibrate the fixed
            part: the parts timed alone miss what joins them in a network (the trellis loop, allocations,
            caches between parts); 0 keeps the stem and head timed alone.
        log: ``log(text)`` for progress lines, or ``None``.
    """
    cfg = as_space_config(config)
    check_runtime(runtime)
    if runtime != "eager" and str(device) != "cpu" and latency:
        raise ConfigError(f"latency runtime {runtime!r} is measured on the CPU only, got device {device!r}")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        return _build_cost_table(cfg, input_size, device, latency, repeats, warmup, threads, runtime, references,
                                 calibrate, log)


def _build_cost_table(cfg, input_size: Sequence[int], device: str, latency: bool, repeats: int, warmup: int,
                      threads: Optional[int], runtime: str, references: Sequence[str], calibrate: int,
                      log) -> CostTable:
    """The body of ``build_cost_table``."""
    h, w = int(input_size[0]), int(input_size[1])
    torch.manual_seed(0)
    net = RSPNet(cfg).to(device).eval()  # the supernet: every candidate of every choice, never run here
    specs = trellis_nodes(cfg.layers, len(cfg.resolutions), cfg.skip_paths)
    if len(specs) != len(net.nodes):  # a supernet keeps every node
        raise RuntimeError(f"supernet of {cfg.name!r} has {len(net.nodes)} nodes, expected {len(specs)}")
    sizes = feature_sizes((h, w), len(cfg.resolutions))
    parts: Dict[Tuple[Any, ...], Dict[str, float]] = {}  # key -> params, macs, latency (filled below)
    runs: Dict[Tuple[Any, ...], Tuple[nn.Module, Tuple[Any, ...]]] = {}

    def zeros(channels: int, res: int) -> torch.Tensor:
        return torch.zeros(1, channels, *sizes[res], device=device)

    def part(key: Tuple[Any, ...], module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        if key not in parts:
            module = module.to(device).eval()
            parts[key] = {"params": float(sum(p.numel() for p in module.parameters())),
                          "macs": call_macs(module, args), "latency_ms": 0.0}
            runs[key] = (module, args)
        return key

    choices: Dict[str, Dict[str, Any]] = {}
    x = torch.zeros(1, cfg.in_channels, h, w, device=device)
    feats = [zeros(cfg.channels[r], r) for r, _ in enumerate(head_inputs(cfg.layers, len(cfg.resolutions)))]
    fixed_keys = [part(("stem",), net.stem, (x,)), part(("head",), _HeadAndUpsample(net.head, [h, w]), (feats,))]
    node_keys: List[Tuple[Node, Optional[str], List[Node], int, Tuple[Any, ...], List[Tuple[Any, ...]]]] = []
    edge_keys: Dict[Tuple[str, Optional[Tuple[str, int]], Node], List[List[Tuple[Any, ...]]]] = {}
    for spec, module in zip(specs, net.nodes):
        key = (spec.layer, spec.res)
        fuse = module.fuse
        label = fuse.label if isinstance(fuse, InputChoice) else None
        n_chosen = fuse.n_chosen if label else len(spec.candidates)
        if label:
            choices[label] = {"candidates": None, "n_candidates": fuse.n_candidates, "n_chosen": fuse.n_chosen}
        paths = [part(("path", repr(path), src_res, spec.res), path,
                      (zeros(cfg.channels[src_res], src_res), list(sizes[spec.res])))
                 for (_, src_res), path in zip(spec.candidates, module.paths)]
        body = part(("body", spec.res, n_chosen), _NodeBody(_plain_block(cfg, cfg.channels[spec.res])),
                    ([zeros(cfg.channels[spec.res], spec.res) for _ in range(n_chosen)],))
        node_keys.append((key, label, [tuple(s) for s in spec.candidates], n_chosen, body, paths))
        for cell in (m for m in module.block.modules() if isinstance(m, Cell)):
            for edges, cell_fuse in zip(cell.edges, cell.fuse):
                gate_label = cell_fuse.label if isinstance(cell_fuse, InputChoice) else None
                if gate_label is not None:
                    choices[gate_label] = {"candidates": None, "n_candidates": cell_fuse.n_candidates,
                                           "n_chosen": cell_fuse.n_chosen}
                for j, edge in enumerate(edges):
                    if not isinstance(edge, LayerChoice):
                        continue
                    channels = int(getattr(edge, "channels"))
                    choices[edge.label] = {"candidates": list(edge.names), "n_candidates": len(edge.names),
                                           "n_chosen": 1}
                    # nested RSP: several cells of one node share a label, their costs add up
                    edge_keys.setdefault((edge.label, (gate_label, j) if gate_label else None, key), []).append(
                        [part(("op", name, channels, spec.res), edge[name], (zeros(channels, spec.res),))
                         for name in edge.names])

    refs: Dict[str, float] = {}
    calibration: List[Dict[str, Any]] = []
    if latency:
        clock = table_clock(device, threads)
        timed: Dict[Any, Any] = {key: _synced(prepare(module, args, runtime, threads), device)
                                 for key, (module, args) in runs.items()}
        if log is not None:
            log(f"cost table of {cfg.name!r} at {h}x{w}: {len(runs)} parts, {repeats} interleaved rounds ({runtime}, "
                f"{threads} thread(s), {clock} clock)")
        times = time_interleaved(timed, repeats, warmup, threads, clock,
                                 log=(lambda r: log(f"cost table: parts, round {r}/{repeats}")) if log else None)
        for key in runs:
            parts[key]["latency_ms"] = statistics.median(times[key])
        # Whole networks in rounds of their own: run between hundreds of small parts, a network is slower
        # than it is run after itself (allocator and caches), as it is when deployed.
        whole: Dict[Any, Any] = {}
        for name in references:
            whole[("reference", name)] = _synced(prepare(reference_network(name, cfg.num_classes).to(device), (x,),
                                                         runtime, threads), device)
        for seed in range(calibrate):
            arch = random_arch(cfg, seed)
            calibration.append(arch)
            whole[("whole", seed)] = _synced(prepare(build_network(cfg, arch).to(device), (x,), runtime, threads),
                                             device)
        if whole:
            if log is not None:
                log(f"cost table: {len(references)} reference network(s) and {calibrate} whole networks, "
                    f"{repeats} interleaved rounds")
            times.update(time_interleaved(whole, repeats, warmup, threads, clock))
        refs = {name: statistics.median(times[("reference", name)]) for name in references}

    def total(keys: Sequence[Tuple[Any, ...]], metric: str) -> float:
        return float(sum(parts[k][metric] for k in keys))

    fixed = {m: total(fixed_keys, m) for m in METRICS}
    nodes = [NodeCost(node, label, sources, n_chosen, {m: parts[body][m] for m in METRICS},
                      {m: [parts[k][m] for k in paths] for m in METRICS})
             for node, label, sources, n_chosen, body, paths in node_keys]
    entries = [CostEntry(label, {m: [sum(parts[cell[i]][m] for cell in cells) for i in range(len(cells[0]))]
                                 for m in METRICS}, gate, node)
               for (label, gate, node), cells in sorted(edge_keys.items(),
                                                        key=lambda kv: (kv[0][2], kv[0][0], kv[0][1] or ("", -1)))]
    table = CostTable(choices, fixed, nodes, entries, [tuple(o) for o in head_inputs(cfg.layers, len(cfg.resolutions))],
                      str(device), [h, w], runtime, threads, refs,
                      table_key(cfg, (h, w), device, runtime, threads, repeats, latency, references))
    if calibration:
        alone = fixed["latency_ms"]
        gaps = [statistics.median(times[("whole", seed)]) - (table.derived(arch, "latency_ms") - alone)
                for seed, arch in enumerate(calibration)]
        table.fixed["latency_ms"] = max(statistics.median(gaps), 0.0)
        table.key["calibrate"] = calibrate
        if log is not None:
            log(f"cost table: stem and head {alone:.2f} ms alone, fixed part {table.fixed['latency_ms']:.2f} ms "
                f"calibrated on {calibrate} whole networks")
    return table


def _synced(run, device: str):
    """``run`` followed by a device synchronisation on CUDA (timings must include the kernels)."""
    if not str(device).startswith("cuda"):
        return run

    def run_synced():
        out = run()
        torch.cuda.synchronize()
        return out
    return run_synced


def _plain_block(cfg, channels: int) -> nn.Module:
    """The block of a node with every searched op an identity (``skip_connect``): what remains is what
    every architecture runs there."""
    labels = {f"cell/node{i}/in": [0, 1] for i in range(2, cfg.cell_nodes)}
    with fixed_arch(labels, verbose=False):
        return make_block(channels, cfg.rsp_depth, ["skip_connect"], cfg.cell_nodes, "cell", form=cfg.rsp_form)


def cost_table_for(space_cfg: Any, search_cfg: Any, input_size: Sequence[int], device: str,
                   out_dir: Optional[str] = None, log=None) -> Tuple[CostTable, str]:
    """The cost table a search with ``search_cfg`` needs, and where it came from.

    ``search.lut`` when given; else ``out_dir/cost_table.json`` when it was measured for the same space,
    size, device, runtime, threads and repeats (a rerun or a resumed search in the same folder does not
    measure again); else measured now (and saved there). A relative latency target's reference network
    is measured with the table.

    Raises:
        ConfigError: an unreadable table, or a given table without the reference a relative target needs.
    """
    metric, target = search_cfg.target
    references = [target.reference] if metric == "latency_ms" and target.relative else []
    device = search_cfg.latency_device or device
    threads = search_cfg.latency_threads or None
    key = table_key(space_cfg, input_size, device, search_cfg.latency_runtime, threads, search_cfg.latency_repeats,
                    metric == "latency_ms", references)
    saved = os.path.join(out_dir, "cost_table.json") if out_dir else None
    if search_cfg.lut:
        table, source = CostTable.load(search_cfg.lut), search_cfg.lut
    elif saved and os.path.isfile(saved) and _same_key(saved, key):
        table, source = CostTable.load(saved), f"{saved} (measured earlier for the same settings)"
    else:
        table = build_cost_table(space_cfg, input_size, device, latency=metric == "latency_ms",
                                 repeats=search_cfg.latency_repeats, threads=threads,
                                 runtime=search_cfg.latency_runtime, references=references, log=log)
        source = "measured now"
    for name in references:
        if name not in table.references:
            raise ConfigError(f"{source}: the cost table has no latency of reference network {name!r}, which "
                              f"target {target} needs; measure it with nni-rspnet latency-table --reference {name}")
    if saved:
        table.save(saved)
    return table, source


def _same_key(path: str, key: Mapping[str, Any]) -> bool:
    try:
        stored = dict(CostTable.load(path).key)
    except ConfigError:
        return False
    stored.pop("calibrate", None)
    return stored == dict(key)


def resolve_target(search_cfg: Any, table: CostTable) -> Tuple[str, float]:
    """``(metric, value)`` of the search's target, a relative latency target turned into milliseconds
    with the reference latency that ``table`` holds."""
    metric, target = search_cfg.target
    if metric != "latency_ms":
        return metric, float(target)
    return metric, target.resolve(lambda name: table.references[name])
