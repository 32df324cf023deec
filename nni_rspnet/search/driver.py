"""The search driver: datasets, evaluator and ``TwoStageDarts`` through ``RetiariiExperiment``.

``run_search(space_cfg, search_cfg, data_cfg, out_dir)`` is what the CLI (``nni-rspnet search``), the
nnictl trial and the demo call. It writes into ``out_dir``:

* ``arch.json``: the found architecture, flat label -> choice (loads with ``space.arch.load_arch`` and
  NNI's ``fixed_arch``);
* ``arch_supernet.json``: the supernet's argmax, and ``candidates.json``: stage 3, the candidates at its
  cost and their scores (``select.py``: ``arch.json`` is the best of them by ``search.rerank_by``);
* ``probs.json``: the probabilities of every candidate (cell: softmax of the stage-1 alphas; paths:
  mean validation attention of stage 2);
* ``cell.json``: the stage-1 cell alone (written as soon as stage 1 ends);
* ``supernet_stage1.pt``: the stage-1 supernet's weights and architecture parameters (every cell op
  trained, every path on), for scoring sub-networks (rank checks);
* ``checkpoint.pt``: after every epoch (atomically): stage, epoch, weights, architecture parameters,
  optimiser and penalty states, RNG; ``resume=True`` continues from it after a crash or SIGKILL;
* ``history.json``: one record per epoch (stage, epoch, validation mIoU, temperature, cost terms);
* ``cost_table.json`` when a resource target is set (measured at the deployment size, in the
  deployment runtime, with the reference network of a relative target; reused by a later search in
  the same folder with the same settings), and ``result.json`` (measured cost of the exported network,
  targets, final validation mIoU).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Union

import pytorch_lightning as pl
import torch
from nni.retiarii.evaluator.pytorch import Lightning, Trainer
from nni.retiarii.experiment.pytorch import RetiariiExeConfig, RetiariiExperiment

from ..errors import ConfigError, DivergedError, Interrupted, ModelFileError
from ..fileio import load_torch, make_dirs, save_torch, write_json
from ..measure import measure_cost
from ..seg.data import DataConfig, Datasets, build_loaders, datasets_for
from ..seg.guard import check_same_run, run_identity, stopped
from ..seg.progress import trainer_callbacks
from ..seg.train import SegmentationModule
from ..space.arch import build_network, save_arch, validate
from ..space.model import RSPNetSpace, SpaceConfig
from .cost_table import CostTable, cost_table_for, resolve_target, table_clock
from .penalty import ResourcePenalty
from .select import select
from .split import split_for_search  # noqa: F401 - part of the driver's API (examples, rank check)
from .settings import SearchConfig
from .strategy import CELL_PREFIX, TwoStageDarts

EpochCallback = Callable[[Dict[str, Any]], None]


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
        target: the resource target (``{metric: value, "given": as configured}``), or ``None``.
    """

    arch: Dict[str, Any]
    probs: Dict[str, float]
    cell: Dict[str, Any]
    cost: Dict[str, float]
    history: List[Dict[str, Any]] = field(default_factory=list)
    val_miou: Optional[float] = None
    out_dir: str = "."
    target: Optional[Dict[str, Any]] = None


def _write_json(path: str, data: Any) -> None:
    write_json(path, data, sort_keys=True)


def search_loaders(data_cfg: DataConfig, weights_set: Any, arch_set: Any) -> tuple:
    """The search's two loaders: the weights part at ``data.batch_size`` and the architecture part at
    ``max(data.batch_size, data.val_batch_size)``.

    Every search step is a weight step and an architecture step, and Lightning cycles the shorter loader
    (``max_size_cycle``), so an architecture batch smaller than the training batch would multiply the steps
    of an epoch and make each architecture gradient noisier: with Cityscapes' ``val_batch_size: 1`` (full
    images, for evaluation) an epoch was 1488 steps instead of 186. A larger val batch is kept.
    """
    return build_loaders(replace(data_cfg, val_batch_size=_arch_batch(data_cfg)), weights_set, arch_set, shuffle=True)


def _arch_batch(data_cfg: DataConfig) -> int:
    """The architecture loader's batch (see ``search_loaders``)."""
    return max(data_cfg.batch_size, data_cfg.val_batch_size)


def search_steps_per_epoch(data_cfg: DataConfig, search_cfg: SearchConfig, num_train: int) -> int:
    """Steps of one search epoch over ``num_train`` training images (see ``search_loaders``)."""
    n_arch = int(round(num_train * search_cfg.arch_fraction))
    n_weights = num_train - n_arch
    b = data_cfg.batch_size
    return max(n_weights // b if n_weights > b else 1, -(-n_arch // _arch_batch(data_cfg)))


def load_search_checkpoint(path: str) -> Dict[str, Any]:
    """A checkpoint written by ``run_search`` (``weights_only``); a truncated, refused or foreign file is one
    ``ModelFileError`` naming it."""
    state = load_torch(path, "search checkpoint", ModelFileError)
    if not isinstance(state, dict) or state.get("stage") not in (1, 2) or not isinstance(state.get("model"), dict):
        raise ModelFileError(f"{path}: not a checkpoint written by nni-rspnet search (no stage and weights)")
    return state


def run_search(space_cfg: SpaceConfig, search_cfg: SearchConfig, data_cfg: DataConfig,
               out_dir: Union[str, os.PathLike], device: str = "cpu", resume: bool = False,
               epoch_callback: Optional[EpochCallback] = None, progress_bar: bool = False,
               datasets: Optional[Datasets] = None) -> SearchResult:
    """Runs the two-stage search and writes its outputs into ``out_dir`` (see the module docstring).

    Args:
        space_cfg: the search space.
        search_cfg: the search settings.
        data_cfg: the data; its train split is cut in two disjoint parts (see
            ``SearchConfig.arch_fraction``): one trains the weights, the other the architecture
            parameters and gives the per-epoch validation mIoU. Its val split is not used.
        out_dir: output folder (created).
        device: ``"cpu"`` or an accelerator such as ``"cuda"``.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (finished stages are skipped).
        epoch_callback: called after every epoch with a dict: ``stage``, ``epoch`` (within the stage),
            ``epochs``, ``global_epoch``, ``searching`` and ``metrics`` (``val_miou``, ``tau``, ...).
        progress_bar: show progress within epochs (a bar on a terminal, a line now and then in a log).
        datasets: the datasets of ``data_cfg`` when the caller has built them already (checked
            against ``space_cfg.num_classes``); built here otherwise.

    Raises:
        ConfigError: a dataset whose classes the space does not predict, a checkpoint of a different
            space, or an unreadable cost table.
    """
    old_threads = torch.get_num_threads()
    if search_cfg.threads:
        torch.set_num_threads(search_cfg.threads)
    try:
        return _run_search(space_cfg, search_cfg, data_cfg, out_dir, device, resume, epoch_callback, progress_bar,
                           datasets)
    finally:
        torch.set_num_threads(old_threads)


def _run_search(space_cfg: SpaceConfig, search_cfg: SearchConfig, data_cfg: DataConfig,
                out_dir: Union[str, os.PathLike], device: str, resume: bool, epoch_callback: Optional[EpochCallback],
                progress_bar: bool, datasets: Optional[Datasets]) -> SearchResult:
    """The body of ``run_search``."""
    # Checked before anything is written: a dataset whose classes the head does not predict.
    datasets = datasets_for(data_cfg, space_cfg.num_classes, datasets)
    # Every input is read and checked before the output folder is touched.
    given_table = CostTable.load(search_cfg.lut) if search_cfg.target is not None and search_cfg.lut else None
    out = os.fspath(out_dir)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    state = None
    # A resumed search must be the search its checkpoint was written for, or its result is no search's result.
    identity = run_identity(space=space_cfg.to_dict(), search=search_cfg.to_dict(), data=data_cfg.to_dict())
    if resume and os.path.exists(ckpt_path):
        state = load_search_checkpoint(ckpt_path)
        check_same_run(state.get("run"), identity, ckpt_path)
    elif resume:
        warnings.warn(f"{ckpt_path} not found: starting a new search", RuntimeWarning)
    make_dirs(out)
    _write_json(os.path.join(out, "search_config.json"),
                {"space": space_cfg.to_dict(), "search": search_cfg.to_dict(), "data": data_cfg.to_dict()})

    pl.seed_everything(search_cfg.seed, workers=True)
    # The val split stays held out for the final evaluation.
    weights_set, arch_set = split_for_search(datasets.train, search_cfg.arch_fraction, search_cfg.seed)
    train_loader, val_loader = search_loaders(data_cfg, weights_set, arch_set)

    penalty = None
    table = None
    target_value = None
    input_size = list(search_cfg.latency_input_size or data_cfg.image_size)
    if search_cfg.target is not None:
        # Measured on this machine at the deployment size (or read back from the output folder).
        saved_table = os.path.join(out, "cost_table.json")
        if state is not None and not search_cfg.lut and os.path.exists(saved_table):
            table = CostTable.load(saved_table)  # on resume, the table of the start: the same penalty after it
        else:
            table, _ = cost_table_for(space_cfg, search_cfg, input_size, device, out)
        metric, target_value = resolve_target(search_cfg, table)
        floor = table.derived(table.extreme_arch(metric, min), metric)
        if target_value < floor:
            warnings.warn(f"search target {metric}={target_value:g} ({search_cfg.target[1]}) is below the cheapest "
                          f"architecture of space {space_cfg.name!r} by the cost table ({floor:g}): the search can "
                          f"only approach it", RuntimeWarning)
        penalty = ResourcePenalty(table, metric, target_value, search_cfg.lambda_init, search_cfg.lambda_rate)

    history: List[Dict[str, Any]] = []
    epochs_stage1 = search_cfg.warmup_epochs + search_cfg.stage1_epochs

    def on_epoch(record: Dict[str, Any]) -> None:
        ckpt = dict(record["state"])
        ckpt["space"] = space_cfg.to_dict()
        ckpt["run"] = identity
        save_torch(ckpt, ckpt_path)
        if record["stage"] == 1 and record["epoch"] == epochs_stage1:
            _write_json(os.path.join(out, "cell.json"),
                        {k: v for k, v in record["arch"].items() if k.startswith(CELL_PREFIX)})
            # The stage-1 supernet (every cell op trained, every path on), kept for rank checks.
            save_torch({"space": space_cfg.to_dict(), "search": search_cfg.to_dict(),
                        "model": record["state"]["model"]}, os.path.join(out, "supernet_stage1.pt"))
        public = {k: v for k, v in record.items() if k not in ("state", "probs")}
        history[:] = list(record["state"].get("history", []))
        _write_json(os.path.join(out, "history.json"), history)
        if epoch_callback is not None:
            epoch_callback(public)

    strategy = TwoStageDarts.from_config(search_cfg, penalty=penalty, epoch_hook=on_epoch, resume_state=state)

    limit = search_cfg.limit_batches or None
    trainer = Trainer(max_epochs=1, accelerator="gpu" if str(device).startswith("cuda") else "cpu", devices=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=progress_bar,
                      callbacks=trainer_callbacks(progress_bar, epoch_lines=False),  # epochs: epoch_callback
                      enable_model_summary=False, limit_train_batches=limit, limit_val_batches=limit,
                      default_root_dir=out)
    module = SegmentationModule(space_cfg.num_classes, optimizer=search_cfg.optimizer, lr=search_cfg.lr,
                                momentum=search_cfg.momentum, weight_decay=search_cfg.weight_decay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # plain (untraced) DataLoaders are fine in one shot
        evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    # Seeded again here: the supernet's initial weights must not depend on whether a cost table was just
    # measured (it builds networks) or, on resume, read from cost_table.json.
    pl.seed_everything(search_cfg.seed, workers=True)
    space = RSPNetSpace(space_cfg)
    config = RetiariiExeConfig()
    config.execution_engine = "oneshot"
    try:
        RetiariiExperiment(space, evaluator, [], strategy).run(config)
        probs = {k: float(v) for k, v in strategy.probs.items()}
        bad = sorted(k for k, v in probs.items() if not math.isfinite(v))
        if bad:
            raise DivergedError(f"the architecture probabilities of {len(bad)} candidates are not finite "
                                f"(first: {bad[0]!r})")
    except (Interrupted, DivergedError) as err:
        last = strategy.history[-1] if strategy.history else None
        kept = ckpt_path if last is not None and os.path.isfile(ckpt_path) else None
        position = f"stage {last['stage']}, epoch {last['epoch']} of {last['epochs']}" if last else None
        if isinstance(err, Interrupted):
            raise Interrupted(stopped(err, kept, position)) from None
        raise DivergedError(stopped(DivergedError(f"the search diverged: {err} (search.lr={search_cfg.lr:g} or "
                                                  f"search.arc_lr={search_cfg.arc_lr:g} may be too high)"),
                                    kept, position, resume=False)) from None

    argmax = validate(strategy.export_top_models()[0], space_cfg, source="search export")
    # Stage 3: the candidates at the argmax's cost, judged by search.rerank_by (select.py).
    cost_of = None
    if table is not None and search_cfg.target is not None:
        metric = search_cfg.target[0]
        cost_of = lambda a: table.derived(dict(a), metric)  # noqa: E731
    arch = validate(select(space_cfg, search_cfg, data_cfg, argmax, probs, out,
                           Datasets(weights_set, arch_set, datasets.classes), device=device, cost_of=cost_of,
                           log=(lambda s: print(f"[search] {s}", flush=True)) if search_cfg.rerank_by == "loss"
                           else None),
                    space_cfg, source="stage 3 selection")
    save_arch(arch, os.path.join(out, "arch.json"))
    cell = {k: v for k, v in arch.items() if k.startswith(CELL_PREFIX)}
    # cell.json stays stage 1's decision (the argmax's cell); arch.json holds the cell stage 3 kept.
    _write_json(os.path.join(out, "cell.json"), {k: v for k, v in argmax.items() if k.startswith(CELL_PREFIX)})
    _write_json(os.path.join(out, "probs.json"), probs)

    net = build_network(space_cfg, arch)
    # Timed as the cost table times: same runtime, threads and clock.
    latency_device = search_cfg.latency_device or device
    threads = search_cfg.latency_threads or None
    cost = measure_cost(net, input_size, space_cfg.in_channels, latency_device, repeats=max(search_cfg.latency_repeats, 5),
                        threads=threads, runtime=search_cfg.latency_runtime, clock=table_clock(latency_device, threads))
    history = strategy.history
    val = [r["metrics"].get("val_miou") for r in history if r["metrics"].get("val_miou") is not None]
    target = ({search_cfg.target[0]: target_value, "given": str(search_cfg.target[1])}
              if search_cfg.target else None)
    result = SearchResult(arch, probs, cell, cost, history, val[-1] if val else None, out, target)
    summary = {"cost": cost, "input_size": input_size, "val_miou": result.val_miou, "target": target,
               "latency": {"runtime": search_cfg.latency_runtime, "threads": threads,
                           "references_ms": table.references if table is not None else {}},
               "estimated": ({m: table.derived(arch, m) for m in ("params", "macs", "latency_ms")}
                             if table is not None else None)}
    _write_json(os.path.join(out, "result.json"), summary)
    _write_json(os.path.join(out, "history.json"), history)
    return result
