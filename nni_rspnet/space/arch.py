"""The architecture as data: a flat JSON object, label -> choice, NNI's own format.

``{"cell/node2/in": [0, 2], "cell/node2/op0": "sep_conv_3x3", "macro/l3_s16/paths": [0, 2], ...}``

A ``LayerChoice`` label maps to an op name; an ``InputChoice`` label to the sorted list of chosen
candidate indices (an ``int`` is accepted where one index is chosen, as NNI exports it). Loading
validates against the space and each error names the label. ``build_network`` turns a valid
architecture into the final network through NNI's ``fixed_arch``.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import random
from dataclasses import dataclass
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from nni.retiarii import fixed_arch
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice

from ..errors import ArchError
from ..fileio import read_json, short, write_json
from .macro import trellis_nodes
from .model import RSPNet, SpaceConfig, as_space_config

Arch = Dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """One label of the space: an op choice (``names``) or an input choice (``n_candidates``, ``n_chosen``)."""

    label: str
    names: Tuple[str, ...] = ()
    n_candidates: int = 0
    n_chosen: int = 0

    @property
    def is_op(self) -> bool:
        return bool(self.names)

    @property
    def size(self) -> int:
        """Number of distinct values of this choice."""
        return len(self.names) if self.is_op else math.comb(self.n_candidates, self.n_chosen)

    def values(self) -> List[Any]:
        if self.is_op:
            return list(self.names)
        return [list(c) for c in itertools.combinations(range(self.n_candidates), self.n_chosen)]


_SPECS: "OrderedDict[str, Tuple[Choice, ...]]" = OrderedDict()  # the last few spaces' labels, by config


def _read_choices(net: RSPNet) -> Tuple[Choice, ...]:
    found: Dict[str, Choice] = {}
    for _, module in net.named_modules():
        if isinstance(module, LayerChoice):
            choice = Choice(module.label, names=tuple(module.names))
        elif isinstance(module, InputChoice):
            choice = Choice(module.label, n_candidates=module.n_candidates, n_chosen=module.n_chosen)
        else:
            continue
        if found.setdefault(choice.label, choice) != choice:
            raise RuntimeError(f"label {choice.label!r} is used by two different choices")
    return tuple(found[k] for k in sorted(found))


def space_spec(config: Union[SpaceConfig, Mapping[str, Any], str, os.PathLike]) -> Dict[str, Choice]:
    """All labels of the space, sorted, with their choices (read off the supernet itself, once per config)."""
    cfg = as_space_config(config)
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _SPECS:
        # Building the supernet draws its initial weights from torch's global generator; forked, so that a
        # network built with a seed (build_network validates through here) gets the same weights whether
        # or not it is the first of its space in the process.
        with torch.random.fork_rng(devices=[]):
            _SPECS[key] = _read_choices(RSPNet(cfg))
        if len(_SPECS) > 16:
            _SPECS.popitem(last=False)
    _SPECS.move_to_end(key)
    return {c.label: c for c in _SPECS[key]}


def search_space_size_log10(config) -> float:
    """log10 of the number of distinct architectures (product of the label sizes)."""
    return sum(math.log10(c.size) for c in space_spec(config).values())


def validate(arch: Any, config, source: str = "architecture") -> Arch:
    """Checks ``arch`` against the space and returns it normalised (input choices as sorted lists).

    Raises:
        ArchError: naming ``source`` and the label: not a JSON object, unknown label, missing label,
            unknown op, index out of range, wrong number of paths.
    """
    if not isinstance(arch, Mapping):
        raise ArchError(f"{source}: expected a JSON object of label -> choice, got {type(arch).__name__}")
    spec = space_spec(config)
    for label in arch:
        if label not in spec:
            near = [k for k in spec if k.split("/")[0] == str(label).split("/")[0]][:3]
            raise ArchError(f"{source}: unknown label {short(label, 60)} (not in this space; labels look like {near})")
    out: Arch = {}
    for label, choice in spec.items():
        if label not in arch:
            raise ArchError(f"{source}: missing label {label!r}")
        value = arch[label]
        if choice.is_op:
            if value not in choice.names:
                raise ArchError(f"{source}: {label!r} has unknown op {short(value, 60)}; "
                                f"expected one of {list(choice.names)}")
            out[label] = value
            continue
        chosen = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(chosen, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in chosen):
            raise ArchError(f"{source}: {label!r} must be a list of {choice.n_chosen} input indices, "
                            f"got {short(value, 60)}")
        bad = [i for i in chosen if not 0 <= i < choice.n_candidates]
        if bad:
            raise ArchError(f"{source}: {label!r} index {bad[0]} out of range [0, {choice.n_candidates})")
        if len(set(chosen)) != choice.n_chosen:
            raise ArchError(f"{source}: {label!r} must choose {choice.n_chosen} distinct paths of "
                            f"{choice.n_candidates}, got {short(value, 60)}")
        out[label] = sorted(chosen)
    return out


def load_arch(path: Union[str, os.PathLike], config=None) -> Arch:
    """Reads an architecture JSON file; with ``config`` it is validated (errors name the file)."""
    arch = read_json(path, "architecture file", ArchError, expected="a JSON object of label -> choice")
    return validate(arch, config, source=os.fspath(path)) if config is not None else arch


def save_arch(arch: Mapping[str, Any], path: Union[str, os.PathLike], config=None) -> None:
    """Writes ``arch`` as sorted, indented JSON (atomically); with ``config`` it is validated first."""
    if config is not None:
        arch = validate(arch, config)
    write_json(path, dict(sorted(arch.items())))


def build_network(config, arch: Union[Mapping[str, Any], str, os.PathLike]) -> RSPNet:
    """The final network for ``arch`` (a dict or a JSON path): plain PyTorch, scriptable.

    It is built by NNI's ``fixed_arch`` on the same classes as the supernet; it contains no NNI choice
    module, only the chosen ops and paths, and no node that cannot reach the head.
    """
    cfg = as_space_config(config)  # validated once: here for a mapping or a path, at construction for a SpaceConfig
    arch = load_arch(arch, cfg) if isinstance(arch, (str, os.PathLike)) else validate(arch, cfg)
    with fixed_arch(arch, verbose=False):
        return RSPNet(cfg)


def random_arch(config, seed: Optional[int] = None) -> Arch:
    """A valid architecture drawn uniformly, label by label, from ``random.Random(seed)``."""
    rng = random.Random(seed)
    arch: Arch = {}
    for label, choice in space_spec(config).items():
        if choice.is_op:
            arch[label] = rng.choice(choice.names)
        else:
            arch[label] = sorted(rng.sample(range(choice.n_candidates), choice.n_chosen))
    return arch


def describe(arch: Mapping[str, Any], config=None) -> str:
    """A readable, multi-line view of an architecture: the cell's nodes, then the trellis paths.

    With ``config``, the cell edges that the input choices drop are left out and every path index is
    spelled as its source node, for example ``l2_s8 <- l1_s4 (down), l1_s8``.
    """
    lines: List[str] = ["cell:"]
    nodes = sorted({k.split("/")[1] for k in arch if k.startswith("cell/")}, key=lambda n: int(n[4:]))
    for node in nodes:
        prefix = f"cell/{node}/"
        ops = {int(k[len(prefix) + 2:]): v for k, v in arch.items() if k.startswith(prefix + "op")}
        chosen = arch.get(prefix + "in")
        chosen = sorted(ops) if chosen is None else ([chosen] if isinstance(chosen, int) else chosen)
        src = lambda j: "input" if j == 0 else f"node{j - 1}"  # noqa: E731
        lines.append(f"  {node} = " + " + ".join(f"{ops[j]}({src(j)})" for j in chosen if j in ops))
    lines.append("macro:")
    if config is not None:
        cfg = as_space_config(config)
        res = cfg.resolutions
        name = lambda l, r: "stem" if l == 0 else f"l{l}_s{res[r]}"  # noqa: E731
        for spec in trellis_nodes(cfg.layers, len(res), cfg.skip_paths):
            label = spec.label(res)
            chosen = arch.get(label, list(range(len(spec.candidates))))
            chosen = [chosen] if isinstance(chosen, int) else chosen
            srcs = []
            for j in chosen:
                l, r = spec.candidates[j]
                kind = {1: " (down)", 0: "", -1: " (up)"}[spec.res - r]
                srcs.append(name(l, r) + kind)
            lines.append(f"  {name(spec.layer, spec.res)} <- " + ", ".join(srcs))
    else:
        for label in sorted(k for k in arch if k.startswith("macro/")):
            lines.append(f"  {label} = {arch[label]}")
    return "\n".join(lines)
