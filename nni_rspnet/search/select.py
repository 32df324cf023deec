"""Stage 3 of the search: choose among candidates drawn from what the two stages learned.

A one-shot search exports the supernet's argmax. How far that choice can be trusted is what the rank
check measures (``rank_check.py``), and on the built-in digits it could not be: the stage-1 supernet
ranked 8 architectures across the space at Kendall tau 0.07 against their mIoU trained alone (5
epochs), where their MACs ranked them at 0.71 (p 0.014); on the quality table's 8 architectures
(15 epochs) the supernet's tau was -0.43 and the MACs' 0.93. A 3-epoch stand-alone training scored by
validation loss ranked the table at 0.64 and 0.57 for two training seeds (by mIoU: 0.71 and 0.29).
So the search can end with a selection step that keeps the supernet's judgement where it is
informative (which neighbourhood of the space to look in) and judges the candidates there by another
criterion. It is off by default (``search.rerank_by: none``): on the quality benchmark (3 searches x 2
training seeds, 15 epochs) the ``macs`` choice kept the argmax of one search, and of the other two
one gained 0.6 and one lost 1.3 mIoU points (mean 0.576 against the argmax's 0.579): within the
+-10 % parameter band the MACs no longer rank architectures the way they do across the space. With
``loss`` (4 candidates, 3 epochs each) all three searches kept their argmax: the supernet's choice beat
its sampled neighbours, so this step only helps where the candidates reach beyond that neighbourhood.
On the generated shapes, where no supernet ranks the networks (tau about 0) and the learned
distributions stay nearly flat, ``loss`` with 8 candidates of 5 epochs each moved the three searches'
networks from 0.557 to 0.577 mean val mIoU (15-epoch protocol, 2 seeds each; the random mean 0.561,
permutation p 0.20) at about twice the search's time (BENCHMARKS.md, stage 3's short trainings).

1. **candidates**: the argmax and ``rerank_candidates - 1`` distinct architectures drawn from the
   learned distributions (the softmax of each cell edge's alphas, the mean attention of each path
   choice, sharpened or flattened by ``rerank_temperature``), kept only when their cost is within
   ``rerank_tolerance`` of the argmax's, so a resource-aware search keeps its target and the found
   network stays as cheap as the supernet chose it (cost: the target's metric from the search's cost
   table when a target is set, else the parameter count);
2. **scores**, by ``rerank_by``:

   - ``supernet``: the stage-1 supernet's mIoU of each candidate on the architecture split, BatchNorm
     re-estimated first (the score ``nni-rspnet rank-check`` correlates with training alone; seconds per
     candidate). Worth it where the rank check's tau is high, which needs a supernet trained on the
     sub-networks it scores (``search.path_sampling``: with every path on, the digits' tau was 0.07;
     with sampled paths 0.57);
   - ``macs``: the multiply-accumulates at the data's image size, highest first (zero cost): at equal
     parameters (or latency) the network that computes more, mostly at higher resolution. ``nni-rspnet
     rank-check`` reports this criterion's tau next to the supernet's, for your data;
   - ``loss``: each candidate trained alone for ``rerank_epochs`` on the search's weight split, then
     its loss on the architecture split, lowest first (the data's val split stays unseen). It costs
     ``rerank_candidates`` short trainings and needs no assumption about the task;
   - ``none`` (default): the argmax, as a plain one-shot search.

Every candidate, its cost and score go to ``candidates.json`` (written after each scored candidate, so a
killed ``loss`` selection resumes where it stopped); ``arch_supernet.json`` keeps the argmax.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..fileio import make_dirs, read_json, write_json
from ..measure import count_macs, count_params
from ..seg.data import DataConfig, Datasets
from ..seg.train import TrainConfig, train_network
from ..space.arch import build_network, space_spec
from ..space.model import SpaceConfig
from .rank_check import SupernetScorer, scoring_batches
from .settings import SearchConfig

CANDIDATES_FILE = "candidates.json"
SUPERNET_ARCH_FILE = "arch_supernet.json"
CALIB_BATCHES = 10  # BatchNorm recalibration batches of a supernet score (as nni-rspnet rank-check's default)
Log = Callable[[str], None]


def _weights(values: Sequence[float], temperature: float) -> List[float]:
    """``p ** (1 / temperature)``, normalised; a distribution with no mass is uniform."""
    w = [max(float(v), 0.0) ** (1.0 / temperature) if math.isfinite(float(v)) else 0.0 for v in values]
    total = sum(w)
    return [x / total for x in w] if total > 0 else [1.0 / len(w)] * len(w)


def sample_arch(space_cfg: SpaceConfig, probs: Mapping[str, float], rng: random.Random,
                temperature: float = 1.0) -> Dict[str, Any]:
    """One architecture drawn label by label from ``probs`` (``label/op`` and ``label/index`` keys, as the
    search's ``probs.json``); an input choice of ``n_chosen`` paths draws them without replacement.
    Labels without probabilities are drawn uniformly."""
    arch: Dict[str, Any] = {}
    for label, choice in space_spec(space_cfg).items():
        if choice.is_op:
            w = _weights([probs.get(f"{label}/{name}", 1.0) for name in choice.names], temperature)
            arch[label] = rng.choices(list(choice.names), weights=w)[0]
        else:
            w = _weights([probs.get(f"{label}/{i}", 1.0) for i in range(choice.n_candidates)], temperature)
            # Without replacement in proportion to w: the n smallest of -log(u) / w (exponential races).
            keys = sorted(range(choice.n_candidates),
                          key=lambda i: -math.log(1.0 - rng.random()) / w[i] if w[i] > 0 else math.inf)
            arch[label] = sorted(keys[:choice.n_chosen])
    return arch


def _key(arch: Mapping[str, Any]) -> str:
    return json.dumps(arch, sort_keys=True)


@dataclass
class Candidate:
    arch: Dict[str, Any]
    params: int
    macs: float
    cost: float
    source: str


def candidates(space_cfg: SpaceConfig, search_cfg: SearchConfig, argmax: Mapping[str, Any],
               probs: Mapping[str, float], input_size: Sequence[int],
               cost_of: Optional[Callable[[Mapping[str, Any]], float]] = None,
               max_draws: int = 2000) -> List[Candidate]:
    """The argmax and up to ``rerank_candidates - 1`` distinct draws within the cost band (see the module
    docstring); draws are seeded by ``search_cfg.seed``, so the list is a pure function of its inputs."""
    def describe(arch: Mapping[str, Any], source: str) -> Candidate:
        net = build_network(space_cfg, dict(arch))
        params = count_params(net)
        macs = float(count_macs(net, list(input_size), space_cfg.in_channels))
        cost = float(cost_of(arch)) if cost_of is not None else float(params)
        return Candidate(dict(arch), params, macs, cost, source)

    first = describe(argmax, "argmax")
    out = [first]
    seen = {_key(argmax)}
    rng = random.Random(search_cfg.seed)
    tol = search_cfg.rerank_tolerance
    for _ in range(max_draws):
        if len(out) >= search_cfg.rerank_candidates:
            break
        arch = sample_arch(space_cfg, probs, rng, search_cfg.rerank_temperature)
        key = _key(arch)
        if key in seen:
            continue
        seen.add(key)
        cand = describe(arch, "sample")
        if abs(cand.cost - first.cost) <= tol * first.cost:
            out.append(cand)
    return out


def _train_cfg(search_cfg: SearchConfig, device: str) -> TrainConfig:
    """The short stand-alone training of a candidate: the search's own optimiser settings."""
    return TrainConfig(epochs=search_cfg.rerank_epochs, optimizer=search_cfg.optimizer, lr=search_cfg.lr,
                       momentum=search_cfg.momentum, weight_decay=search_cfg.weight_decay,
                       warmup_epochs=min(1.0, search_cfg.rerank_epochs / 3), seed=search_cfg.seed,
                       threads=search_cfg.threads, grad_clip=search_cfg.grad_clip,
                       accelerator="gpu" if str(device).startswith("cuda") else "cpu")


def select(space_cfg: SpaceConfig, search_cfg: SearchConfig, data_cfg: DataConfig, argmax: Mapping[str, Any],
           probs: Mapping[str, float], out_dir: str, split: Datasets, device: str = "cpu",
           cost_of: Optional[Callable[[Mapping[str, Any]], float]] = None,
           log: Optional[Log] = None) -> Dict[str, Any]:
    """Stage 3 (see the module docstring): returns the chosen architecture and writes ``candidates.json``.

    Args:
        split: ``Datasets(weights part, architecture part, classes)`` of the search
            (``split.split_for_search``); ``loss`` trains on the first and scores on the second.
        cost_of: the cost of an architecture in the target's metric (default: its parameters).
    """
    write_json(os.path.join(out_dir, SUPERNET_ARCH_FILE), dict(argmax), sort_keys=True)
    how = search_cfg.rerank_by
    if how == "none" or search_cfg.rerank_candidates <= 1:
        return dict(argmax)
    cands = candidates(space_cfg, search_cfg, argmax, probs, data_cfg.image_size, cost_of)
    path = os.path.join(out_dir, CANDIDATES_FILE)
    settings = {k: getattr(search_cfg, k) for k in ("rerank_by", "rerank_candidates", "rerank_epochs",
                                                    "rerank_tolerance", "rerank_temperature", "seed")}
    done: Dict[str, float] = {}
    if os.path.isfile(path):  # a killed selection: keep the scores of the same candidates
        old = read_json(path, "candidates")
        if isinstance(old, dict) and old.get("settings") == settings:
            done = {_key(r["arch"]): r["score"] for r in old.get("candidates", []) if r.get("score") is not None}
    rows: List[Dict[str, Any]] = [{"source": c.source, "params": c.params, "macs": c.macs, "cost": c.cost,
                                   "score": done.get(_key(c.arch)), "arch": c.arch} for c in cands]

    def save(chosen: Optional[int]) -> None:
        write_json(path, {"settings": settings, "criterion": _CRITERION[how], "chosen": chosen,
                          "candidates": rows}, sort_keys=True)

    if how == "supernet":
        scorer = SupernetScorer.from_search(out_dir, space_cfg, device)
        calib, evaluation = scoring_batches(data_cfg, scorer.search_cfg, space_cfg.num_classes, CALIB_BATCHES)
    for i, row in enumerate(rows):
        if row["score"] is not None:
            continue
        if how == "macs":
            row["score"] = row["macs"]
        elif how == "supernet":
            row["score"] = scorer.score(row["arch"], calib, evaluation)
        else:
            # Every candidate starts from weights drawn from the same seed, whatever the run consumed of the
            # global generator before (a resumed search must score as an uninterrupted one did).
            torch.manual_seed(search_cfg.seed)
            net = build_network(space_cfg, row["arch"])
            run_dir = os.path.join(out_dir, "candidates", str(i))
            make_dirs(run_dir)
            result = train_network(net, data_cfg, _train_cfg(search_cfg, device), run_dir, device=device,
                                   progress=False, datasets=split)
            loss = result["history"][-1].get("val_loss") if result["history"] else None
            row["score"] = -float(loss) if loss is not None and math.isfinite(loss) else -math.inf
            row["val_miou"] = result["val_miou"]
            save(None)
        if log is not None:
            log(f"candidate {i + 1}/{len(rows)} ({row['source']}): {row['params']:,} parameters, "
                f"{row['macs'] / 1e6:.1f} M MACs, score {row['score']:.4g}")
    best = max(range(len(rows)), key=lambda i: (rows[i]["score"], -i))
    save(best)
    return dict(rows[best]["arch"])


_CRITERION = {"supernet": "the stage-1 supernet's mIoU on the architecture split, BatchNorm recalibrated (higher is "
                          "better)",
              "macs": "multiply-accumulates at the data's image size (higher is better)",
              "loss": "loss on the architecture split after a short stand-alone training (negated: higher is "
                      "better)",
              "none": "the supernet's argmax"}
