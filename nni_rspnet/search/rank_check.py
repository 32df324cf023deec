"""Rank check: does the trained supernet rank architectures as training them alone does?

A one-shot search is only as good as its supernet's judgement: the architecture it exports is the one
the supernet's shared weights favour, which need not be the one that trains best alone. The standard
diagnostic (Yu et al., 2020, "Evaluating the search phase of neural architecture search"; Zela et al.,
2020) is the rank correlation between the supernet's scores of several architectures and their
accuracy when trained alone. ``run_rank_check`` computes it for a finished ``run_search`` folder:

1. samples ``n`` architectures: the search's own ``arch.json`` and ``n - 1`` ``random_arch`` draws;
2. scores each with the stage-1 supernet (``supernet_stage1.pt``: every cell op trained, every macro
   path on): ``SupernetScorer`` restricts the supernet to the architecture (one op per cell edge, the
   chosen cell inputs and macro paths), recalibrates its BatchNorm statistics on a few batches of the
   search's weight split, and measures the mIoU on the search's architecture split (the split the
   search judged architectures on, ``split.split_for_search``);
3. trains each architecture alone (``train_network``, a brief budget) and takes its mIoU on the
   data's val split;
4. reports Kendall's tau and Spearman's rho between the two, a table and a scatter plot.

How a sub-network is read out of the supernet, and how that differs from the network trained alone:

- cell edges run their chosen op only (``CellMixedOp.chosen``); with PC-DARTS partial channels
  (``search.partial_channels = K > 1``) the op sees ``1/K`` of the channels and the rest bypass, as
  during the search, where the trained network runs the op on every channel;
- a cell node's two chosen inputs get softmax weight 1/2 each (the other logits at -1e4): the mean,
  the scale the supernet was trained at, where the final network sums them;
- a trellis node averages its chosen paths (``FixedInputs(..., "mean")``), as stage 1 averaged all
  of them; nodes the head cannot reach still run but no longer matter;
- BatchNorm statistics of the shared weights are averages over every sub-network the supernet saw;
  they are reset and re-estimated for each architecture (train-mode forwards without gradients,
  cumulative averaging), as in single-path one-shot NAS (Guo et al., 2020).

Scoring is deterministic (no augmentation, fixed batches) and leaves the supernet exactly as it was
loaded: its state is restored after every architecture.

**How much the supernet uses its cells** (``cell_reliance``): the searched architecture is scored again with
every cell's output zeroed (the RSP bypass, transitions, resamplers and head left), in the supernet and in
the network trained alone, BatchNorm recalibrated on the same batches both times, mIoU on the data's val
split. A network trained alone leans on its cells: the tiny space's searched network on the digits,
trained 5 epochs, drops from 0.411 to 0.177. The supernet that chose it (6-epoch warm-up) drops from 0.155
to 0.146 (-0.9 points), and swapping the op of any one cell edge moved its score by at most 0.4 points.
A supernet that loses much less than the network trained alone has learned to route around the cells it
was meant to judge, so its cell choice follows little signal. An 18-epoch warm-up raised the supernet's
loss to 5.6 points (0.304 to 0.248).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import time
from dataclasses import replace
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedInput
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError, ModelFileError
from ..fileio import load_torch, make_dirs, read_json, save_figure, write_json
from ..measure import count_macs, count_params
from ..seg.data import DataConfig, Datasets, build_datasets, build_loaders
from ..seg.deploy import load_model
from ..seg.metrics import SegMetric
from ..seg.train import SegmentationModule, TrainConfig, train_network
from ..space.arch import build_network, load_arch, random_arch, validate
from ..space.cell import Cell
from ..space.choices import FixedInputs
from ..space.model import RSPNetSpace, SpaceConfig
from .split import split_for_search
from .settings import SearchConfig
from .strategy import MACRO_PREFIX, RSPDartsModule
from .supermodules import CellMixedOp, FrozenChoice

Log = Callable[[str], None]
SUPERNET_FILE = "supernet_stage1.pt"
SEARCH_CONFIG_FILE = "search_config.json"
RESULT_FILE = "rank_check.json"
PLOT_FILE = "rank_check.png"
SEARCHED = "searched"
_OFF = -1.0e4  # logit of an unchosen cell input: exp(-1e4) is exactly 0 in float32


# --- the search folder ------------------------------------------------------------------------------

def read_search_config(search_dir: str) -> Dict[str, Dict[str, Any]]:
    """The ``space``, ``search`` and ``data`` sections a search ran with (its ``search_config.json``).

    Raises:
        ConfigError: ``search_dir`` is not a folder, or not the output folder of a search.
    """
    if not os.path.isdir(search_dir):
        raise ConfigError(f"{search_dir}: search folder not found")
    path = os.path.join(search_dir, SEARCH_CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{search_dir}: not a search folder (no {SEARCH_CONFIG_FILE}); give the --out folder "
                          f"of 'nni-rspnet search'")
    data = read_json(path, "search config")
    missing = [s for s in ("space", "search", "data") if not isinstance(data.get(s), dict)]
    if missing:
        raise ConfigError(f"{path}: no {missing[0]!r} section; not written by 'nni-rspnet search'")
    sections = {s: dict(data[s]) for s in ("space", "search", "data")}
    sections["search"]["lut"] = None  # the cost table steered the search; scoring needs none (it may be gone)
    return sections


def load_supernet_state(search_dir: str, space_cfg: SpaceConfig) -> Dict[str, Any]:
    """The stage-1 supernet a search saved (``{"space", "search", "model"}``), checked against the space.

    Raises:
        ModelFileError: the file is missing (stage 1 not finished), unreadable, or of another space.
    """
    path = os.path.join(search_dir, SUPERNET_FILE)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path} not found: the search has not finished stage 1 (resume it with "
                             f"'nni-rspnet search --resume --out {search_dir}')")
    state = load_torch(path, "stage-1 supernet (not a readable supernet)", ModelFileError)  # bounded, weights_only
    if not isinstance(state, dict) or not {"space", "search", "model"} <= set(state):
        raise ModelFileError(f"{path}: not a stage-1 supernet written by 'nni-rspnet search'")
    if state["space"] != space_cfg.to_dict():
        raise ModelFileError(f"{path}: a supernet of another space ({state['space'].get('name')!r} with other "
                             f"settings) than the one given; leave space.* as the search had it")
    return state


# --- scoring with the supernet ----------------------------------------------------------------------

def build_stage1_supernet(space_cfg: SpaceConfig, search_cfg: SearchConfig) -> RSPDartsModule:
    """A fresh stage-1 supernet as ``TwoStageDarts`` builds it: cell choices relaxed (with the search's
    partial channels), every macro path choice held "all on"."""
    inner = SegmentationModule(space_cfg.num_classes, optimizer=search_cfg.optimizer, lr=search_cfg.lr,
                               momentum=search_cfg.momentum, weight_decay=search_cfg.weight_decay)
    inner.running_mode = "oneshot"
    inner.set_model(RSPNetSpace(space_cfg))
    return RSPDartsModule(inner, all_on=(MACRO_PREFIX,), arc_learning_rate=search_cfg.arc_lr,
                          arc_weight_decay=search_cfg.arc_weight_decay,
                          gradient_clip_val=search_cfg.grad_clip or None, tau_init=search_cfg.tau_init,
                          tau_min=search_cfg.tau_min, partial_channels=search_cfg.partial_channels,
                          warmup_sampling=search_cfg.warmup_sampling, path_sampling=search_cfg.path_sampling,
                          stage1_weight_sampling=search_cfg.stage1_weight_sampling,
                          stage1_arch_sampling=search_cfg.stage1_arch_sampling)


class SupernetScorer:
    """Scores architectures with a trained stage-1 supernet (see the module docstring).

    Args:
        space_cfg: the searched space.
        search_cfg: the search settings (partial channels, temperatures: how the supernet was built; its
            ``arch_fraction`` and ``seed`` give the split to score on, see ``scoring_batches``).
        weights: the supernet's state dict (``supernet_stage1.pt``'s ``model``).
        device: where to run.
    """

    def __init__(self, space_cfg: SpaceConfig, search_cfg: SearchConfig, weights: Mapping[str, torch.Tensor],
                 device: str = "cpu"):
        self.space_cfg = space_cfg
        self.search_cfg = search_cfg
        self.device = torch.device(device)
        self.module = build_stage1_supernet(space_cfg, search_cfg)
        try:
            self.module.load_state_dict(dict(weights))
        except RuntimeError as err:
            why = " ".join(str(err).split())[:200]
            raise ModelFileError(f"the supernet's weights do not fit space {space_cfg.name!r} with search.partial_"
                                 f"channels={search_cfg.partial_channels} ({why})") from None
        self.module.to(self.device).eval()
        self.net: nn.Module = self.module.model.model
        self.cell_ops: List[CellMixedOp] = [m for m in self.module.nas_modules if isinstance(m, CellMixedOp)]
        self.cell_inputs: List[DifferentiableMixedInput] = [m for m in self.module.nas_modules
                                                            if isinstance(m, DifferentiableMixedInput)]
        self.paths: List[FrozenChoice] = [m for m in self.module.nas_modules if isinstance(m, FrozenChoice)
                                          and isinstance(getattr(m, m._inner_name), FixedInputs)
                                          and m.label.startswith(MACRO_PREFIX)]
        self.norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @classmethod
    def from_search(cls, search_dir: str, space_cfg: SpaceConfig, device: str = "cpu") -> "SupernetScorer":
        """The scorer of the supernet that the search in ``search_dir`` saved (see ``load_supernet_state``)."""
        state = load_supernet_state(search_dir, space_cfg)
        search_cfg = SearchConfig.from_dict(dict(state["search"], lut=None),
                                            f"{os.path.join(search_dir, SUPERNET_FILE)} [search]")
        return cls(space_cfg, search_cfg, state["model"], device)

    def _snapshot(self) -> Tuple[Dict[str, torch.Tensor], List[List[int]], List[Any]]:
        state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        paths = [list(getattr(m, m._inner_name).chosen) for m in self.paths]
        return state, paths, [bn.momentum for bn in self.norms]

    def _restore(self, snapshot: Tuple[Dict[str, torch.Tensor], List[List[int]], List[Any]]) -> None:
        state, paths, momenta = snapshot
        self.module.load_state_dict(state)
        for m, chosen in zip(self.paths, paths):
            getattr(m, m._inner_name).chosen = list(chosen)
        for bn, momentum in zip(self.norms, momenta):
            bn.momentum = momentum
        for m in self.cell_ops:
            m.chosen = None
        self.module.eval()

    def apply(self, arch: Mapping[str, Any]) -> None:
        """Restricts the supernet to ``arch`` (validated against the space); ``score`` undoes it."""
        arch = validate(dict(arch), self.space_cfg)
        used = set()
        for m in self.cell_ops:
            m.chosen = list(m.op_names).index(arch[m.label])
            used.add(m.label)
        with torch.no_grad():
            for m in self.cell_inputs:
                chosen = arch[m.label]
                chosen = [chosen] if isinstance(chosen, int) else list(chosen)
                logits = torch.full_like(m._arch_alpha, _OFF)
                logits[chosen] = 0.0
                m._arch_alpha.copy_(logits)  # shared by every module of the label
                used.add(m.label)
        for m in self.paths:
            getattr(m, m._inner_name).chosen = list(arch[m.label])
            used.add(m.label)
        unused = sorted(set(arch) - used)
        if unused:  # a label the supernet has no module for: the space and the supernet disagree
            raise ModelFileError(f"the supernet has no choice labelled {unused[0]!r}")

    def recalibrate(self, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Resets every BatchNorm's statistics and re-estimates them (cumulative average) on ``batches``."""
        return recalibrate_bn(self.net, batches, self.device)

    def miou(self, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> float:
        """The mIoU of the (restricted) supernet over ``batches``."""
        return network_miou(self.net, batches, self.space_cfg.num_classes, self.device)

    def score(self, arch: Mapping[str, Any], calibration: Sequence[Tuple[torch.Tensor, torch.Tensor]],
              evaluation: Iterable[Tuple[torch.Tensor, torch.Tensor]], cells: float = 1.0) -> float:
        """The supernet's mIoU of ``arch`` on ``evaluation`` after recalibrating on ``calibration``, every
        cell's output multiplied by ``cells`` (0: the cells ablated, see ``cell_reliance``); the supernet
        is restored afterwards, whatever happens."""
        snapshot = self._snapshot()
        try:
            with cells_scaled(self.net, cells):
                self.apply(arch)
                self.recalibrate(calibration)
                return self.miou(evaluation)
        finally:
            self._restore(snapshot)


@contextlib.contextmanager
def cells_scaled(net: nn.Module, factor: float):
    """While the context lasts, every ``Cell`` of ``net`` has its output multiplied by ``factor``
    (nothing is hooked for 1). Yields the number of cells."""
    cells = [m for m in net.modules() if isinstance(m, Cell)]
    hooks = [] if factor == 1.0 else [m.register_forward_hook(lambda _m, _i, out: out * factor) for m in cells]
    try:
        yield len(cells)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                   device: Union[str, torch.device] = "cpu") -> int:
    """Resets every BatchNorm's statistics of ``net`` and re-estimates them (cumulative average, train-mode
    forwards without gradients) on ``batches``; leaves ``net`` in eval mode and returns the batch count.
    The momenta become ``None``: callers that must restore the network keep their own copy."""
    for bn in net.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    net.train()
    n = 0
    for x, _ in batches:
        net(x.to(device))
        n += 1
    net.eval()
    return n


@torch.no_grad()
def network_miou(net: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                 device: Union[str, torch.device] = "cpu") -> float:
    """The mIoU of ``net`` (eval mode) over ``batches``."""
    net.eval()
    metric = SegMetric(num_classes)
    for x, y in batches:
        metric.update(net(x.to(device)).cpu(), y)
    return float(metric.compute())


def cell_reliance(net: nn.Module, calibration: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                  evaluation: Sequence[Tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                  device: Union[str, torch.device] = "cpu") -> Dict[str, float]:
    """A network trained alone, scored as the supernet is: BatchNorm recalibrated on ``calibration``, mIoU on
    ``evaluation``, with its cells as they are and with every cell's output zeroed. Works on a copy."""
    net = copy.deepcopy(net).to(device)
    out = {}
    for key, factor in (("miou", 1.0), ("cells_zeroed", 0.0)):
        with cells_scaled(net, factor):
            recalibrate_bn(net, calibration, device)
            out[key] = network_miou(net, evaluation, num_classes, device)
    return out


def _take(loader: DataLoader, batches: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """The first ``batches`` batches of ``loader`` (all of them for 0), in memory."""
    out = []
    for i, batch in enumerate(loader):
        if batches and i >= batches:
            break
        out.append(batch)
    return out


def scoring_batches(data_cfg: DataConfig, search_cfg: SearchConfig, num_classes: int, calib_batches: int,
                    score_batches: int = 0, datasets: Optional[Datasets] = None
                    ) -> Tuple[List[Tuple[torch.Tensor, torch.Tensor]], List[Tuple[torch.Tensor, torch.Tensor]]]:
    """The fixed batches of a rank check: ``(calibration, evaluation)``.

    Both come from the data's train split as the search cut it (``split_for_search`` with the search's
    ``arch_fraction`` and seed): calibration from the part that trained the weights, evaluation from
    the part that trained the architecture. No augmentation, no shuffling: the same batches every time.

    Args:
        data_cfg: the search's data section.
        search_cfg: the search section (its split).
        num_classes: the classes of the space (checked against the data).
        calib_batches: batches (of ``data.batch_size``) for BatchNorm recalibration.
        score_batches: batches (of ``data.val_batch_size``) to score on; 0 = the whole architecture split.
        datasets: the un-augmented datasets, when the caller has them.
    """
    plain = replace(data_cfg, augment=False)
    if datasets is None:
        datasets = build_datasets(plain, num_classes)
    weights_part, arch_part = split_for_search(datasets.train, search_cfg.arch_fraction, search_cfg.seed)
    calib_loader, eval_loader = build_loaders(plain, weights_part, arch_part, shuffle=False)
    return _take(calib_loader, calib_batches), _take(eval_loader, score_batches)


# --- sampling and statistics ------------------------------------------------------------------------

def sample_archs(space_cfg: SpaceConfig, n: int, seed: int,
                 searched: Optional[Mapping[str, Any]] = None) -> List[Tuple[str, Dict[str, Any]]]:
    """``n`` distinct architectures ``(name, arch)``: ``searched`` first (named ``"searched"``) when given,
    then ``random_arch`` draws with seeds ``1000 * seed``, ``1000 * seed + 1``, ... (named ``random-<seed>``),
    skipping repeats."""
    out: List[Tuple[str, Dict[str, Any]]] = [(SEARCHED, dict(searched))] if searched is not None else []
    seen = {_key(a) for _, a in out}
    draw = 1000 * seed
    while len(out) < n:
        arch = random_arch(space_cfg, draw)
        if _key(arch) not in seen:
            seen.add(_key(arch))
            out.append((f"random-{draw}", arch))
        draw += 1
        if draw - 1000 * seed > 100 * n + 1000:
            raise ConfigError(f"space {space_cfg.name!r} has fewer than {n} distinct architectures")
    return out


def _key(arch: Mapping[str, Any]) -> str:
    return repr(sorted(arch.items()))


def _finite(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def rank_correlation(scores: Sequence[float], mious: Sequence[float], resamples: int = 1000,
                     level: float = 0.9) -> Dict[str, Any]:
    """Kendall's tau (tau-b) and Spearman's rho of two paired lists, with their p-values, and a ``level``
    bootstrap interval of tau (``kendall_ci``: percentiles over ``resamples`` resamplings of the pairs,
    seeded, so the same lists give the same interval); ``None`` where undefined: fewer than two pairs, or
    one list constant.

    Over 8 architectures the interval is wide (tau +0.36 from ranks 3 1 2 8 6 5 4 7: [-0.17, +0.77]), so
    the point value alone reads as a verdict it cannot carry; ``verdict`` reads the interval."""
    if len(scores) != len(mious):
        raise ValueError(f"{len(scores)} scores but {len(mious)} mIoUs")
    if len(scores) < 2 or len(set(scores)) < 2 or len(set(mious)) < 2:
        return {"kendall_tau": None, "kendall_p": None, "spearman": None, "spearman_p": None, "kendall_ci": None}
    tau = stats.kendalltau(scores, mious)
    rho = stats.spearmanr(scores, mious)
    return {"kendall_tau": _finite(tau.statistic), "kendall_p": _finite(tau.pvalue),
            "spearman": _finite(rho.statistic), "spearman_p": _finite(rho.pvalue),
            "kendall_ci": tau_interval(scores, mious, resamples, level)}


MIN_PAIRS_FOR_INTERVAL = 5  # 3 pairs have 10 distinct resamples: a "90 % interval" of [+1, +1] from 3 points


def tau_interval(scores: Sequence[float], mious: Sequence[float], resamples: int = 1000,
                 level: float = 0.9) -> Optional[List[float]]:
    """The percentile bootstrap interval of Kendall's tau-b over resampled pairs (``None`` for fewer than
    ``MIN_PAIRS_FOR_INTERVAL`` pairs, whose resamples are too few to say anything, or when no resample has
    a defined tau, or for ``resamples`` <= 0, which asks for none)."""
    if len(scores) < MIN_PAIRS_FOR_INTERVAL or resamples <= 0:
        return None
    x, y = np.asarray(scores, dtype=float), np.asarray(mious, dtype=float)
    rng = np.random.default_rng(0)
    taus = []
    for _ in range(resamples):
        i = rng.integers(0, len(x), len(x))
        t = stats.kendalltau(x[i], y[i]).statistic
        if math.isfinite(t):
            taus.append(t)
    if not taus:
        return None
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(taus, [tail, 100 - tail])
    return [float(lo), float(hi)]


def training_agreement(runs: Sequence[Sequence[float]]) -> Optional[Dict[str, Any]]:
    """How far trainings alone agree with themselves: the noise ceiling of any rank correlation against them.

    ``runs`` holds, per architecture, its trained mIoUs with seeds ``0 .. K-1`` (the same ``K >= 2`` for every
    one, at least 3 architectures); ``None`` otherwise, and where every value is the same (networks that all
    predict background agree perfectly and say nothing). Returns:

    - ``within_sd``: the spread of one architecture over seeds; ``between_sd``: the spread of the
      architectures' true means (one-way ANOVA: the variance of the means less ``within**2 / K``, at least 0);
    - ``icc``: the share of one training's variance that is the architecture's, ``between**2 / (between**2 +
      within**2)``, which is the correlation expected between two trainings of the same architectures;
    - ``seed_tau``: the Kendall tau expected between two such trainings, ``2 / pi * asin(icc)`` (Greiner's
      relation, normal noise). The observed tau between "seed 0" and "seed 1" is not used: over a few
      architectures it depends on which of two exchangeable runs is called which;
    - ``mean_reliability``: the share of the ``K``-seed means' variance that is the architectures' (Spearman-
      Brown), and ``tau_ceiling``, the Kendall tau a perfect score would reach against those means,
      ``2 / pi * asin(sqrt(mean_reliability))``. A supernet cannot be expected to do better.

    The quality benchmark's 8 searched and random architectures, trained twice for 15 epochs: on the digits ICC
    0.85, seed tau +0.64, ceiling +0.81; on the shapes ICC 0.51, seed tau +0.34, ceiling +0.61.
    """
    k = len(runs[0]) if runs else 0
    if len(runs) < 3 or k < 2 or any(len(r) != k for r in runs):
        return None
    values = np.asarray(runs, dtype=float)
    within = float(values.var(axis=1, ddof=1).mean())
    between = max(float(values.mean(axis=1).var(ddof=1)) - within / k, 0.0)
    if between + within == 0:
        return None
    icc = between / (between + within)
    reliability = k * icc / (1 + (k - 1) * icc)
    return {"seeds": k, "archs": len(runs), "within_sd": math.sqrt(within), "between_sd": math.sqrt(between),
            "icc": icc, "seed_tau": 2 / math.pi * math.asin(icc), "mean_reliability": reliability,
            "tau_ceiling": 2 / math.pi * math.asin(math.sqrt(reliability))}


def agreement_line(agreement: Optional[Mapping[str, Any]], of: str = "") -> str:
    """One line on the trainings' own agreement ('' without it); ``of`` names the trainings (" of the ...")."""
    if not agreement:
        return ""
    return (f"Training noise{of} ({agreement['seeds']} seeds per architecture, {agreement['archs']} architectures): one "
            f"architecture's seeds spread {agreement['within_sd'] * 100:.1f} points (sd), the architectures "
            f"{agreement['between_sd'] * 100:.1f} (ICC {agreement['icc']:.2f}); two trainings rank them alike at "
            f"Kendall tau {agreement['seed_tau']:+.2f}, and a perfect score would reach {agreement['tau_ceiling']:+.2f} "
            f"against their means")


NOISY_CEILING = 0.3  # where a perfect score could not reach this tau, the trainings are no yardstick


def interval_text(ci: Optional[Sequence[float]]) -> str:
    """``", 90 % interval [lo, hi]"`` for a ``kendall_ci``, or nothing where there is none."""
    return f", 90 % interval [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""


def ranks(values: Sequence[float]) -> List[int]:
    """1 = the highest value (ties share the better rank)."""
    return [1 + sum(1 for w in values if w > v) for v in values]


# --- the whole check --------------------------------------------------------------------------------

def run_rank_check(search_dir: str, space_cfg: SpaceConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
                   out_dir: str, n: int = 8, epochs: int = 5, seed: int = 0, device: str = "cpu",
                   calib_batches: int = 10, score_batches: int = 0, seeds: int = 2,
                   log: Optional[Log] = print) -> Dict[str, Any]:
    """Samples, scores, trains and correlates (see the module docstring); writes ``rank_check.json`` (after
    every trained architecture) and ``rank_check.png`` into ``out_dir``.

    A rerun with the same settings and ``out_dir`` keeps the trainings that finished (the scores are
    recomputed: they are cheap and deterministic).

    Args:
        search_dir: a ``run_search`` output folder (``arch.json``, ``supernet_stage1.pt``).
        space_cfg, data_cfg: the search's space and data (``read_search_config``); the search settings
            (how the supernet was built, the split) are those saved with the supernet.
        train_cfg: the recipe of the trainings alone; ``epochs`` and ``seed`` replace its own.
        out_dir: where the results and each training (``train/<name>``) go.
        n: architectures, the searched one included (>= 2).
        epochs: training epochs of each architecture.
        seed: seed of the random architectures and of the first training of each.
        seeds: trainings of each architecture, with seeds ``seed``, ``seed + 1``, ...; their mean is its trained
            mIoU, and with 2 or more the check measures how far the trainings agree with each other
            (``training_agreement``), the ceiling of any tau against them.
        device: where to score and train.
        calib_batches: batches of the weight split for BatchNorm recalibration (>= 1).
        score_batches: batches of the architecture split to score on (0 = all of it).
        log: progress lines (``None``: quiet).

    Returns:
        The content of ``rank_check.json``: ``archs`` (name, searched, params, macs, supernet_miou,
        trained_miou: the mean of trained_mious, one per seed; ranks), ``kendall_tau``, ``spearman`` (and
        p-values), ``agreement`` (``training_agreement``; ``None`` with one seed), the settings.

    Raises:
        ConfigError: a bad folder or argument; ModelFileError: a missing or foreign supernet.
    """
    say = log or (lambda s: None)
    if n < 2:
        raise ConfigError(f"-n {n}: a rank correlation needs at least 2 architectures")
    if epochs < 1 or calib_batches < 1 or seeds < 1 or score_batches < 0:
        raise ConfigError(f"--epochs ({epochs}), --calib-batches ({calib_batches}) and --seeds ({seeds}) must be >= 1, "
                          f"--score-batches ({score_batches}) >= 0")
    read_search_config(search_dir)  # a search folder at all
    arch_path = os.path.join(search_dir, "arch.json")
    if not os.path.isfile(arch_path):
        raise ConfigError(f"{search_dir}: the search has not finished (no arch.json); resume it with "
                          f"'nni-rspnet search --resume --out {search_dir}'")
    scorer = SupernetScorer.from_search(search_dir, space_cfg, device)  # first: it names a space mismatch
    searched = load_arch(arch_path, space_cfg)
    make_dirs(out_dir)

    train = replace(train_cfg, epochs=epochs, seed=seed)
    settings = {"search_dir": os.path.abspath(search_dir), "n": n, "epochs": epochs, "seed": seed, "seeds": seeds,
                "calib_batches": calib_batches, "score_batches": score_batches, "space": space_cfg.to_dict(),
                "search": scorer.search_cfg.to_dict(), "data": data_cfg.to_dict(), "train": train.to_dict()}
    result_path = os.path.join(out_dir, RESULT_FILE)
    previous = _previous(result_path, settings)

    archs = sample_archs(space_cfg, n, seed, searched)
    h, w = data_cfg.image_size
    # the split the supernet was searched on (its saved settings)
    calibration, evaluation = scoring_batches(data_cfg, scorer.search_cfg, space_cfg.num_classes, calib_batches,
                                              score_batches)
    say(f"[rank-check] scoring {n} architectures with the stage-1 supernet of {search_dir} "
        f"({len(calibration)} calibration batches, {sum(len(y) for _, y in evaluation)} images of the architecture "
        f"split)")
    rows: List[Dict[str, Any]] = []
    for name, arch in archs:
        start = time.time()
        net = build_network(space_cfg, arch)
        row = {"name": name, "searched": name == SEARCHED, "arch": arch, "params": count_params(net),
               "macs": count_macs(net, (h, w), space_cfg.in_channels),
               "supernet_miou": scorer.score(arch, calibration, evaluation), "trained_miou": None,
               "trained_mious": []}
        say(f"[rank-check] {name}: supernet mIoU {row['supernet_miou']:.4f} ({row['params']:,} parameters, "
            f"{time.time() - start:.1f} s)")
        rows.append(row)

    datasets = build_datasets(data_cfg, space_cfg.num_classes)
    # How much the supernet uses its cells: the searched architecture with every cell's output zeroed, on the
    # data's val split (the network trained alone is measured the same way once it is trained).
    val_batches = _take(build_loaders(replace(data_cfg, augment=False), datasets.train, datasets.val,
                                      shuffle=False)[1], score_batches)
    reliance: Dict[str, Dict[str, float]] = {
        "supernet": {"miou": scorer.score(searched, calibration, val_batches),
                     "cells_zeroed": scorer.score(searched, calibration, val_batches, cells=0.0)}}
    say(f"[rank-check] the supernet's use of its cells: searched architecture {reliance['supernet']['miou']:.4f} "
        f"val mIoU, {reliance['supernet']['cells_zeroed']:.4f} with every cell's output zeroed")
    for i, row in enumerate(rows):
        done = previous.get(row["name"])
        kept = list(done.get("trained_mious") or []) if done is not None and done.get("arch") == row["arch"] else []
        if kept and done.get("train_seconds") is not None:
            row["train_seconds"] = done["train_seconds"]
        for k in range(seeds):
            if k < len(kept):
                row["trained_mious"].append(kept[k])
                say(f"[rank-check] {i + 1}/{n} {row['name']} seed {seed + k}: trained mIoU {kept[k]:.4f} "
                    "(kept from an earlier run)")
                continue
            # the first seed trains into train/<name> (where cell_reliance reads the searched network)
            run_dir = os.path.join(out_dir, "train", row["name"] if k == 0 else f"{row['name']}-seed{seed + k}")
            if os.path.isdir(run_dir):
                shutil.rmtree(run_dir)  # an unfinished training: start it again
            say(f"[rank-check] {i + 1}/{n} training {row['name']} alone for {epochs} epochs (seed {seed + k})")
            torch.manual_seed(seed + k)  # the initial weights follow the seed, as in 'nni-rspnet train'
            net = build_network(space_cfg, row["arch"])
            out = train_network(net, data_cfg, replace(train, seed=seed + k), run_dir, device=device, progress=False,
                                space=space_cfg.to_dict(), arch=row["arch"], datasets=datasets)
            row["trained_mious"].append(float(out["val_miou"]))
            row["train_seconds"] = round(row.get("train_seconds", 0.0) + out["seconds"], 1)
            say(f"[rank-check] {row['name']} seed {seed + k}: trained mIoU {out['val_miou']:.4f} "
                f"({out['seconds'] / 60:.1f} min)")
            # saved after every training: a killed check keeps what it trained
            write_json(result_path, dict(_summary(rows, settings, complete=False), cell_reliance=reliance), indent=1)
        row["trained_miou"] = float(np.mean(row["trained_mious"]))
        write_json(result_path, dict(_summary(rows, settings, complete=False), cell_reliance=reliance), indent=1)

    model_file = os.path.join(out_dir, "train", SEARCHED, "model.pt")
    if os.path.isfile(model_file):
        reliance["alone"] = cell_reliance(load_model(model_file), calibration, val_batches, space_cfg.num_classes,
                                          device)
    result = dict(_summary(rows, settings, complete=True), cell_reliance=reliance)
    write_json(result_path, result, indent=1)
    plot_rank_check(result, os.path.join(out_dir, PLOT_FILE))
    return result


def _previous(path: str, settings: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Finished trainings of an earlier check with the same settings in the same folder, by name. The number of
    seeds may differ (a check rerun with more ``--seeds`` trains only the new ones); a check written before
    there were seeds counts its one training as the first seed's."""
    if not os.path.isfile(path):
        return {}
    try:
        old = read_json(path, "rank check")
    except ConfigError:
        return {}
    same = lambda s: {k: v for k, v in s.items() if k != "seeds"}  # noqa: E731
    if not isinstance(old.get("settings"), dict) or same(old["settings"]) != same(settings):
        return {}
    rows = {}
    for r in old.get("archs", []):
        if isinstance(r, dict) and "name" in r:
            if "trained_mious" not in r and r.get("trained_miou") is not None:
                r = dict(r, trained_mious=[r["trained_miou"]])
            rows[r["name"]] = r
    return rows


def _summary(rows: List[Dict[str, Any]], settings: Dict[str, Any], complete: bool) -> Dict[str, Any]:
    trained = [r for r in rows if r.get("trained_miou") is not None]
    agreement = training_agreement([r["trained_mious"] for r in trained]) if trained else None
    corr = rank_correlation([r["supernet_miou"] for r in trained], [r["trained_miou"] for r in trained])
    rank = {r["name"]: (a, b) for r, a, b in zip(trained, ranks([r["supernet_miou"] for r in trained]),
                                                  ranks([r["trained_miou"] for r in trained]))}
    archs = [dict(r, **({"rank_supernet": rank[r["name"]][0], "rank_trained": rank[r["name"]][1]}
                        if r["name"] in rank else {})) for r in rows]
    # The zero-cost criterion of the search's stage 3 (search.rerank_by: macs), judged the same way.
    # Its interval is never shown, so no bootstrap is spent on it.
    macs = rank_correlation([float(r["macs"]) for r in trained], [r["trained_miou"] for r in trained],
                            resamples=0)
    return {"archs": archs, **corr, "macs_kendall_tau": macs["kendall_tau"], "macs_kendall_p": macs["kendall_p"],
            "trained": len(trained), "agreement": agreement, "complete": complete, "settings": settings}


# --- output -------------------------------------------------------------------------------------------

def _fmt(x: Optional[float], digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def format_table(result: Mapping[str, Any]) -> str:
    """The check as text: one line per architecture (rank 1 = best), then tau and rho."""
    lines = [f"{'architecture':<16} {'params':>9} {'supernet mIoU':>13} {'trained mIoU':>12} "
             f"{'rank (supernet)':>15} {'rank (trained)':>14}"]
    for r in sorted(result["archs"], key=lambda r: -r["supernet_miou"]):
        name = r["name"] + (" *" if r["searched"] else "")
        trained = "n/a" if r.get("trained_miou") is None else f"{r['trained_miou']:.4f}"
        lines.append(f"{name:<16} {r['params']:>9,} {r['supernet_miou']:>13.4f} {trained:>12} "
                     f"{r.get('rank_supernet', '-'):>15} {r.get('rank_trained', '-'):>14}")
    s = result["settings"]
    seeds = s.get("seeds", 1)
    which = f"seed {s['seed']}" if seeds == 1 else f"the mean of seeds {s['seed']} to {s['seed'] + seeds - 1}"
    lines.append(f"* the search's own architecture; trained alone for {s['epochs']} epochs ({which}), "
                 f"mIoU on the data's val split; supernet mIoU on the search's architecture split")
    lines.append(f"Kendall tau {_fmt(result['kendall_tau'])}{interval_text(result.get('kendall_ci'))} "
                 f"(p {_fmt(result['kendall_p'], 2)[1:]}), Spearman rho "
                 f"{_fmt(result['spearman'])} (p {_fmt(result['spearman_p'], 2)[1:]}) over {result['trained']} "
                 f"architectures")
    line = agreement_line(result.get("agreement"))
    if line:
        lines.append(line)
    lines.append(verdict(result["kendall_tau"], result.get("kendall_ci"), result["trained"], result.get("agreement")))
    line = reliance_line(result.get("cell_reliance"))
    if line:
        lines.append(line)
    if result.get("macs_kendall_tau") is not None:
        lines.append(f"MACs (the search's stage 3 with search.rerank_by: macs) against trained mIoU: Kendall tau "
                     f"{_fmt(result['macs_kendall_tau'])} (p {_fmt(result['macs_kendall_p'], 2)[1:]}); where it is "
                     f"low, use search.rerank_by: loss")
    return "\n".join(lines)


def reliance_line(reliance: Optional[Mapping[str, Mapping[str, float]]]) -> str:
    """One line on how much the supernet uses its cells, next to the network trained alone ('' without data)."""
    sup = (reliance or {}).get("supernet")
    if not sup:
        return ""
    drop = lambda r: (r["miou"] - r["cells_zeroed"]) * 100  # noqa: E731
    text = (f"Cells: zeroing every cell's output moves the searched architecture's val mIoU from "
            f"{sup['miou']:.3f} to {sup['cells_zeroed']:.3f} in the supernet ({-drop(sup):+.1f} points)")
    alone = reliance.get("alone")
    if not alone:
        return text
    text += f", from {alone['miou']:.3f} to {alone['cells_zeroed']:.3f} trained alone ({-drop(alone):+.1f} points)"
    if drop(alone) > 0 and drop(sup) < drop(alone) / 3:
        text += ("; the supernet routes around the cells it judges, so its cell choice follows little signal: "
                 "lengthen search.warmup_epochs")
    return text


def verdict(tau: Optional[float], ci: Optional[Sequence[float]] = None, n: Optional[int] = None,
            agreement: Optional[Mapping[str, Any]] = None) -> str:
    """How far to trust a one-shot search with this rank correlation (a reading, not a test). With the
    bootstrap interval ``ci`` (``rank_correlation``'s ``kendall_ci``) a ranking whose interval reaches
    zero or below is unresolved, whatever its point value: more architectures, not a verdict, are due.
    Where the trainings' own agreement (``training_agreement``) caps every tau below ``NOISY_CEILING``, they
    are no yardstick: the architectures differ by little more than training noise at this budget, whatever
    the supernet says."""
    ceiling = (agreement or {}).get("tau_ceiling")
    if ceiling is not None and ceiling < NOISY_CEILING:
        return (f"no verdict on the supernet: the trainings alone disagree so much (ICC {agreement['icc']:.2f}) that "
                f"even a perfect score would rank them at tau {ceiling:+.2f}; at this budget the architectures "
                f"differ by little more than training noise, so neither the supernet nor the search can be checked "
                f"(train longer with --epochs, or more --seeds), and a search can do little better than chance")
    if tau is None:
        return ("no verdict: the scores or the trained mIoUs are all equal (train longer, or check more "
                "architectures)")
    if ci is not None and ci[0] <= 0.0 < tau:
        more = f" than {n}" if n else ""
        return (f"unresolved: the 90 % interval of tau reaches {ci[0]:+.2f}, so the supernet may not rank "
                f"architectures at all; check more architectures{more} (--n) before trusting the search")
    if tau >= 0.6:
        return "the supernet ranks architectures much as training them alone does: trust the search"
    if tau >= 0.3:
        return "the supernet's ranking agrees only loosely with training alone: check the top few by training them"
    return ("the supernet's ranking barely predicts (or contradicts) training alone: do not trust the search; "
            "train the supernet longer (warm-up, stage 1) or compare candidates by training them")


def plot_rank_check(result: Mapping[str, Any], path: str) -> None:
    """A scatter plot of supernet mIoU against trained mIoU, the searched architecture marked (atomic)."""
    archs = [r for r in result["archs"] if r.get("trained_miou") is not None]
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    for r in archs:
        runs = r.get("trained_mious") or []
        if len(runs) > 1:  # the spread of its trainings
            ax.vlines(r["supernet_miou"], min(runs), max(runs), color="0.6", lw=1, zorder=2)
        ax.scatter(r["supernet_miou"], r["trained_miou"], marker="*" if r["searched"] else "o",
                   s=160 if r["searched"] else 40, color="C3" if r["searched"] else "C0", zorder=3)
        ax.annotate(r["name"], (r["supernet_miou"], r["trained_miou"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel("supernet mIoU (architecture split, recalibrated BN)")
    seeds = result["settings"].get("seeds", 1)
    ax.set_ylabel(f"mIoU trained alone ({result['settings']['epochs']} epochs, val split"
                  + (f")\nmean and range of {seeds} seeds" if seeds > 1 else ")"), fontsize=9)
    agreement = result.get("agreement")
    ceiling = f" (ceiling {_fmt(agreement['tau_ceiling'], 2)})" if agreement else ""
    ax.set_title(f"Kendall tau {_fmt(result['kendall_tau'], 2)}{ceiling}, Spearman {_fmt(result['spearman'], 2)} "
                 f"({len(archs)} architectures)", fontsize=9)
    ax.locator_params(axis="x", nbins=5)  # scores can sit close together: keep their labels apart
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
