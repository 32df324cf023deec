"""The search driver: datasets, evaluator and ``TwoStageDarts`` through ``RetiariiExperiment``.

``run_search(space_cfg, search_cfg, data_cfg, out_dir)`` is what the CLI (``nni-rspnet search``), the
nnictl trial and the demo call. It writes into ``out_dir``:

* ``arch.json``: the found architecture, flat label -> choice (loads with ``arch.load_arch`` and
  NNI's ``fixed_arch``);
* ``probs.json``: the probabilities of every candidate (cell: softmax of the stage-1 alphas; paths:
  mean validation attention of stage 2);
* ``cell.json``: the stage-1 cell alone (written as soon as stage 1 ends);
* ``checkpoint.pt``: after every epoch (atomically): stage, epoch, weights, architecture parameters,
  optimiser and penalty states, RNG; ``resume=True`` continues from it after a crash or SIGKILL;
* ``history.json``: one record per epoch (stage, epoch, validation mIoU, temperature, cost terms);
* ``cost_table.json`` when a resource target is set, and ``result.json`` (measured cost of the
  exported network, targets, final validation mIoU).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

import torch

from ..space.arch import build_network, save_arch, validate
from ..fileio import save_torch, write_json
from ..errors import ConfigError
from ..schema import from_mapping, load_section
from ..space.model import SpaceConfig

EpochCallback = Callable[[Dict[str, Any]], None]


@dataclass
class SearchConfig:
    """The search, as in the ``search`` section of ``search_spaces/*.yaml``.

    Attributes:
        warmup_epochs: weights-only epochs before stage 1.
        stage1_epochs: cell-search epochs.
        stage2_epochs: path-search epochs.
        stage2_warmup_epochs: weights-only epochs at the start of stage 2.
        lr, momentum, weight_decay: SGD of the supernet weights (training split).
        arc_lr, arc_weight_decay: Adam of the architecture parameters (validation split).
        tau_init, tau_min: softmax temperature, annealed geometrically within each stage.
        grad_clip: gradient-norm clipping of the weight step (0 = off).
        target_latency_ms: latency to aim at (ms, on ``latency_device`` at ``latency_input_size``).
        target_params: parameter count to aim at. At most one of the two targets may be set.
        lambda_init, lambda_rate: initial weight of the resource penalty and its adaptation speed.
        latency_input_size: ``[H, W]`` at which costs are measured (default: the data's image size).
        latency_device: where latencies are measured (default: the search device).
        latency_repeats: timed runs per candidate (the median is kept).
        lut: a cost table from ``nni-rspnet latency-table`` (default: measured at the start).
        limit_batches: batches per epoch and split (0 = all), for quick runs.
        arch_fraction: share of the data's *train* split that trains the architecture parameters (and
            gives the supernet's per-epoch validation mIoU); the rest trains the weights. The data's
            val split is never seen by the search, so the found network is evaluated on held-out data.
        threads: CPU threads of the search (0 = torch's default); on a shared machine 1 can be
            many times faster than threads spinning for busy cores.
        seed: seed of weights, architecture parameters and data order.
    """

    warmup_epochs: int = 1
    stage1_epochs: int = 3
    stage2_epochs: int = 3
    stage2_warmup_epochs: int = 0
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arc_lr: float = 3e-3
    arc_weight_decay: float = 1e-3
    tau_init: float = 1.0
    tau_min: float = 0.5
    grad_clip: float = 5.0
    target_latency_ms: Optional[float] = None
    target_params: Optional[float] = None
    lambda_init: float = 0.1
    lambda_rate: float = 0.2
    latency_input_size: Optional[List[int]] = None
    latency_device: Optional[str] = None
    latency_repeats: int = 5
    lut: Optional[str] = None
    limit_batches: int = 0
    arch_fraction: float = 0.5
    threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value."""
        for key in ("warmup_epochs", "stage2_warmup_epochs", "limit_batches", "threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("stage1_epochs", "stage2_epochs", "latency_repeats"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.arch_fraction < 1:
            raise ValueError(f"arch_fraction must be in (0, 1), got {self.arch_fraction}")
        for key in ("lr", "arc_lr", "tau_init", "tau_min", "lambda_init"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "arc_weight_decay", "grad_clip", "lambda_rate", "momentum"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("target_latency_ms", "target_params"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0 (or null for no target), got {value}")
        if self.target_latency_ms is not None and self.target_params is not None:
            raise ValueError("set at most one of target_latency_ms and target_params, got both")
        if self.latency_input_size is not None and (len(self.latency_input_size) != 2
                                                    or min(self.latency_input_size) < 1):
            raise ValueError(f"latency_input_size must be [H, W] or null, got {self.latency_input_size}")

    @property
    def target(self) -> Optional[tuple]:
        """``(metric, value)`` of the resource target, or ``None``."""
        if self.target_latency_ms is not None:
            return "latency_ms", float(self.target_latency_ms)
        if self.target_params is not None:
            return "params", float(self.target_params)
        return None

    @classmethod
    def from_yaml(cls, path: Union[str, os.PathLike], overrides: Optional[Iterable[str]] = None) -> "SearchConfig":
        """Loads the ``search`` section of a config file; ``overrides`` are ``search.KEY=VALUE`` strings."""
        return load_section(cls, path, "search", overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "search config") -> "SearchConfig":
        return from_mapping(cls, data, where)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """What ``run_search`` found and wrote.

    Attributes:
        arch: the architecture (label -> choice), validated against the space.
        probs: candidate probabilities (``label/index`` or ``label/op`` -> probability).
        cell: the stage-1 cell labels alone.
        cost: measured cost of the exported network (``params``, ``macs``, ``latency_ms``).
        history: one record per epoch (stage, epoch, metrics).
        val_miou: the validation mIoU of the supernet after the last epoch (``None`` if not logged).
        out_dir: where the files are.
    """

    arch: Dict[str, Any]
    probs: Dict[str, float]
    cell: Dict[str, Any]
    cost: Dict[str, float]
    history: List[Dict[str, Any]] = field(default_factory=list)
    val_miou: Optional[float] = None
    out_dir: str = "."


def _write_json(path: str, data: Any) -> None:
    write_json(path, data, sort_keys=True)


def split_for_search(dataset: Any, arch_fraction: float, seed: int) -> tuple:
    """Two disjoint random subsets of ``dataset``: ``(weights part, architecture part)``.

    Raises:
        ConfigError: when either part would be empty.
    """
    from torch.utils.data import Subset

    n = len(dataset)
    n_arch = int(round(n * arch_fraction))
    if not 0 < n_arch < n:
        raise ConfigError(f"search.arch_fraction={arch_fraction} leaves an empty part of the {n} training "
                          f"images; use more images or a fraction nearer 0.5")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, sorted(order[n_arch:])), Subset(dataset, sorted(order[:n_arch]))


def run_search(space_cfg: SpaceConfig, search_cfg: SearchConfig, data_cfg: Any, out_dir: Union[str, os.PathLike],
               device: str = "cpu", resume: bool = False, epoch_callback: Optional[EpochCallback] = None,
               progress_bar: bool = False) -> SearchResult:
    """Runs the two-stage search and writes its outputs into ``out_dir`` (see the module docstring).

    Args:
        space_cfg: the search space.
        search_cfg: the search settings.
        data_cfg: a ``data.DataConfig``; its train split is cut in two disjoint parts (see
            ``SearchConfig.arch_fraction``): one trains the weights, the other the architecture
            parameters and gives the per-epoch validation mIoU. Its val split is not used.
        out_dir: output folder (created).
        device: ``"cpu"`` or an accelerator such as ``"cuda"``.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (finished stages are skipped).
        epoch_callback: called after every epoch with a dict: ``stage``, ``epoch`` (within the stage),
            ``epochs``, ``global_epoch``, ``searching`` and ``metrics`` (``val_miou``, ``tau``, ...).
        progress_bar: show Lightning's progress bar.

    Raises:
        ConfigError: a checkpoint of a different space, or an unreadable cost table.
    """
    old_threads = torch.get_num_threads()
    if search_cfg.threads:
        torch.set_num_threads(search_cfg.threads)
    try:
        return _run_search(space_cfg, search_cfg, data_cfg, out_dir, device, resume, epoch_callback, progress_bar)
    finally:
        torch.set_num_threads(old_threads)


def _run_search(space_cfg: SpaceConfig, search_cfg: SearchConfig, data_cfg: Any, out_dir: Union[str, os.PathLike],
                device: str, resume: bool, epoch_callback: Optional[EpochCallback],
                progress_bar: bool) -> SearchResult:
    """The body of ``run_search``."""
    import pytorch_lightning as pl
    from nni.retiarii.evaluator.pytorch import Lightning, Trainer
    from nni.retiarii.experiment.pytorch import RetiariiExeConfig, RetiariiExperiment

    from ..measure import measure_cost
    from .cost_table import CostTable, build_cost_table
    from .penalty import ResourcePenalty
    from ..seg.data import build_datasets, build_loaders
    from ..space.model import RSPNetSpace
    from .strategy import CELL_PREFIX, TwoStageDarts
    from ..seg.train import SegmentationModule

    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    state = None
    if resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("space") != space_cfg.to_dict():
            raise ConfigError(f"{ckpt_path}: checkpoint of a different space ({state.get('space', {}).get('name')!r});"
                              f" use another --out or drop --resume")
    elif resume:
        warnings.warn(f"{ckpt_path} not found: starting a new search", RuntimeWarning)
    _write_json(os.path.join(out, "search_config.json"),
                {"space": space_cfg.to_dict(), "search": search_cfg.to_dict(), "data": data_cfg.to_dict()})

    pl.seed_everything(search_cfg.seed, workers=True)
    train_set, _, _ = build_datasets(data_cfg)  # the val split stays held out for the final evaluation
    weights_set, arch_set = split_for_search(train_set, search_cfg.arch_fraction, search_cfg.seed)
    train_loader, val_loader = build_loaders(data_cfg, weights_set, arch_set, shuffle=True)

    penalty = None
    table = None
    input_size = list(search_cfg.latency_input_size or data_cfg.image_size)
    if search_cfg.target is not None:
        metric, target = search_cfg.target
        saved_table = os.path.join(out, "cost_table.json")
        source = search_cfg.lut or (saved_table if state is not None and os.path.exists(saved_table) else None)
        if source:  # a given table, or on resume the one measured at the start (same penalty after it)
            table = CostTable.load(source)
        else:
            table = build_cost_table(space_cfg, input_size, search_cfg.latency_device or device,
                                     latency=metric == "latency_ms", repeats=search_cfg.latency_repeats)
        table.save(os.path.join(out, "cost_table.json"))
        floor = table.derived(table.extreme_arch(metric, min), metric)
        if target < floor:
            warnings.warn(f"search target {metric}={target:g} is below the cheapest architecture of space "
                          f"{space_cfg.name!r} by the cost table ({floor:g}): the search can only approach it",
                          RuntimeWarning)
        penalty = ResourcePenalty(table, metric, target, search_cfg.lambda_init, search_cfg.lambda_rate)

    history: List[Dict[str, Any]] = []
    epochs_stage1 = search_cfg.warmup_epochs + search_cfg.stage1_epochs

    def on_epoch(record: Dict[str, Any]) -> None:
        ckpt = dict(record["state"])
        ckpt["space"] = space_cfg.to_dict()
        save_torch(ckpt, ckpt_path)
        if record["stage"] == 1 and record["epoch"] == epochs_stage1:
            _write_json(os.path.join(out, "cell.json"),
                        {k: v for k, v in record["arch"].items() if k.startswith(CELL_PREFIX)})
        public = {k: v for k, v in record.items() if k not in ("state", "probs")}
        history[:] = list(record["state"].get("history", []))
        _write_json(os.path.join(out, "history.json"), history)
        if epoch_callback is not None:
            epoch_callback(public)

    strategy = TwoStageDarts(
        warmup_epochs=search_cfg.warmup_epochs, stage1_epochs=search_cfg.stage1_epochs,
        stage2_epochs=search_cfg.stage2_epochs, stage2_warmup_epochs=search_cfg.stage2_warmup_epochs,
        arc_learning_rate=search_cfg.arc_lr, arc_weight_decay=search_cfg.arc_weight_decay,
        gradient_clip_val=search_cfg.grad_clip or None, tau_init=search_cfg.tau_init, tau_min=search_cfg.tau_min,
        penalty=penalty, epoch_hook=on_epoch, resume_state=state)

    limit = search_cfg.limit_batches or None
    trainer = Trainer(max_epochs=1, accelerator="gpu" if str(device).startswith("cuda") else "cpu", devices=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=progress_bar,
                      enable_model_summary=False, limit_train_batches=limit, limit_val_batches=limit,
                      default_root_dir=out)
    module = SegmentationModule(space_cfg.num_classes, lr=search_cfg.lr, momentum=search_cfg.momentum,
                                weight_decay=search_cfg.weight_decay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plain (untraced) DataLoaders are fine in one shot
        evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    space = RSPNetSpace(space_cfg)
    config = RetiariiExeConfig()
    config.execution_engine = "oneshot"
    RetiariiExperiment(space, evaluator, [], strategy).run(config)

    arch = validate(strategy.export_top_models()[0], space_cfg, source="search export")
    save_arch(arch, os.path.join(out, "arch.json"))
    cell = {k: v for k, v in arch.items() if k.startswith(CELL_PREFIX)}
    _write_json(os.path.join(out, "cell.json"), cell)
    probs = {k: float(v) for k, v in strategy.probs.items()}
    _write_json(os.path.join(out, "probs.json"), probs)

    net = build_network(space_cfg, arch)
    cost = measure_cost(net, input_size, space_cfg.in_channels, search_cfg.latency_device or device,
                        repeats=max(search_cfg.latency_repeats, 5))
    history = strategy.history
    val = [r["metrics"].get("val_miou") for r in history if r["metrics"].get("val_miou") is not None]
    result = SearchResult(arch, probs, cell, cost, history, val[-1] if val else None, out)
    summary = {"cost": cost, "input_size": input_size, "val_miou": result.val_miou,
               "target": dict([search_cfg.target]) if search_cfg.target else None,
               "estimated": ({m: table.derived(arch, m) for m in ("params", "macs", "latency_ms")}
                             if table is not None else None)}
    _write_json(os.path.join(out, "result.json"), summary)
    _write_json(os.path.join(out, "history.json"), history)
    return result
