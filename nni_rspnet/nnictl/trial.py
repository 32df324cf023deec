"""The nnictl trial: ``python -m nni_rspnet.nnictl.trial --stage {cell,macro,arch} --config tiny``.

NNI 2.10.1 runs only HPO experiments from YAML, so each trial of ``experiment_configs/*.yml`` runs one
piece of our pipeline with the parameters its tuner drew:

- ``cell`` / ``macro``: a one-shot ``TwoStageDarts`` search (``search.driver.run_search``) whose settings the
  tuner picks (``search.*``/``space.*`` keys: target latency, lambda, paths kept, architecture lr).
  A ``cell`` trial is judged on the cell stage: it reports the stage-1 epochs only (``cell.yml`` keeps
  the path stage to one epoch); a ``macro`` trial reports every search epoch;
- ``arch``: the tuner samples the architecture itself (labels of ``search_spaces/*_arch.json``).

``--config`` is a file or the name of a shipped config, so the trial runs from any folder.

Then the found network is retrained briefly, measured and exported. ``RunConfig.load`` layers the settings: dataclass
defaults, the YAML the experiment names (``--config``, ``--set``), then ``nni.get_next_parameter()``.
Every epoch reports ``{'default': val mIoU, ...}``; the final result is
``{'default': mIoU after retraining, 'params', 'macs', 'latency_ms'}``. ``NNI_OUTPUT_DIR`` (the trial
folder, shown in the web UI) receives ``arch.json``, ``probs.json`` (search stages), ``config.json``,
``result.json``, the scripted network ``model_scripted.pt``, the picture ``arch.png``, ``architecture.md``
(also printed at the end of the trial's log), the ``search/`` and ``train/`` folders (``train/model.pt``,
training curves) and ``tensorboard/`` (search and retraining curves and the architecture, opened by the
web UI's TensorBoard button; see ``board.py``). Outside NNI the same command runs standalone (the
architecture is then drawn at random from ``--seed``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import nni
import torch

from ..config import RunConfig
from ..errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, ConfigError, UserError
from ..fileio import atomic_write_text, write_json
from ..measure import measure_cost
from ..runtime import set_threads
from ..schema import DEFAULT_CONFIG
from ..search.driver import run_search
from ..seg.data import Datasets, build_datasets
from ..seg.deploy import export_torchscript, load_model
from ..seg.train import train_network
from ..space.arch import build_network, describe, random_arch, save_arch, validate
from ..space.draw import draw_architecture
from .board import SearchCurves, architecture_summary, board_dir, write_architecture
from .hpo import split_sample

STAGES = ("cell", "macro", "arch")


@contextlib.contextmanager
def relay_reports(phase: str, finals: List[Any]) -> Iterator[None]:
    """Tags intermediate results reported inside the block with ``phase`` and holds back final ones.

    The training module reports to NNI whenever a tuner parameter is current, as it must in Retiarii
    multi-trial runs; in this trial only ``run_trial`` may send the final result (NNI keeps the first
    one), so any final result sent inside the block goes to ``finals`` instead.
    """
    report_intermediate, report_final = nni.report_intermediate_result, nni.report_final_result

    def intermediate(metric: Any) -> None:
        metric = dict(metric) if isinstance(metric, Mapping) else {"default": metric}
        report_intermediate({**metric, "phase": phase})

    nni.report_intermediate_result, nni.report_final_result = intermediate, finals.append
    try:
        yield
    finally:
        nni.report_intermediate_result, nni.report_final_result = report_intermediate, report_final


def _search(stage: str, cfg: RunConfig, datasets: Datasets, out_dir: Path,
            device: str) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """Runs the two-stage one-shot search; returns ``(arch, probs)``.

    A ``macro`` trial reports every search epoch; a ``cell`` trial only those of the cell stage (its
    experiment keeps the path stage short with ``--set search.stage2_epochs=1``), so the assessor
    compares cell searches with cell searches.
    """

    curves = SearchCurves(out_dir)

    def on_epoch(record: Mapping[str, Any]) -> None:
        metrics = record.get("metrics", {})
        curves.add(int(record["global_epoch"]), metrics)
        if metrics.get("val_miou") is None or (stage == "cell" and record["stage"] != 1):
            return
        extra = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "val_miou"}
        nni.report_intermediate_result({"default": float(metrics["val_miou"]), **extra,
                                        "phase": f"search{record['stage']}", "epoch": int(record["global_epoch"])})

    try:
        result = run_search(cfg.space, cfg.search, cfg.data, out_dir / "search", device=device,
                            epoch_callback=on_epoch, progress_bar=True,  # lines in the trial's log, never bars
                            datasets=datasets)
    finally:
        curves.close()
    return dict(result.arch), dict(result.probs)


def run_trial(stage: str, config: str, overrides: Sequence[str] = (), sample: Optional[Mapping[str, Any]] = None,
              out_dir: Optional[str] = None, device: str = "cpu", seed: int = 0,
              report: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """One trial: find (or take) an architecture, retrain it, measure it, export it.

    Args:
        stage: ``cell``, ``macro`` or ``arch``.
        config: YAML with sections ``space``/``search``/``train``/``data``.
        overrides: ``SECTION.KEY=VALUE`` strings applied to the YAML.
        sample: the tuner's parameters (``nni.get_next_parameter()``); ``None`` standalone.
        out_dir: where the outputs go (the trial folder under NNI).
        device: ``cpu`` or ``cuda``.
        seed: seed of the random architecture of a standalone ``arch`` trial.
        report: receives the final metric dict (``nni.report_final_result`` under NNI).

    Returns:
        The final metric dict: ``default`` (val mIoU after retraining), ``params``, ``macs``, ``latency_ms``.
    """
    if stage not in STAGES:
        raise ConfigError(f"--stage must be one of {list(STAGES)}, got {stage!r}")
    arch_part, settings = split_sample(sample)
    tuned = bool(sample)
    cfg = RunConfig.load(config, overrides, settings)
    space_cfg, train_cfg, data_cfg = cfg.space, cfg.train, cfg.data
    datasets = build_datasets(data_cfg, space_cfg.num_classes)  # once, for the search and the retraining
    out = Path(out_dir or os.environ.get("NNI_OUTPUT_DIR") or f"runs/trial-{stage}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"stage": stage, "config": config, "sample": sample or {}, **cfg.to_dict()},
               default=str)

    probs = None
    if stage == "arch":
        if arch_part:
            arch = validate(arch_part, space_cfg, source="tuner sample")
        elif tuned:
            raise ConfigError("stage 'arch': the tuner sent no architecture label; give the experiment a "
                              "search space from 'nni-rspnet export-search-space'")
        else:
            arch = random_arch(space_cfg, seed)
    else:
        if arch_part:
            raise ConfigError(f"stage {stage!r} searches the architecture; the tuner must not sample labels "
                              f"such as {next(iter(arch_part))!r}")
        arch, probs = _search(stage, cfg, datasets, out, device)
    save_arch(arch, out / "arch.json", space_cfg)
    if probs is not None:
        write_json(out / "probs.json", probs, sort_keys=True)

    torch.manual_seed(train_cfg.seed)  # the initial weights are part of the run: same seed, same result
    net = build_network(space_cfg, arch)
    finals: List[Any] = []
    with relay_reports("retrain", finals):
        trained = train_network(net, data_cfg, train_cfg, os.fspath(out / "train"), device=device,
                                space=space_cfg.to_dict(), arch=arch, progress=True, datasets=datasets,
                                tensorboard_dir=os.fspath(board_dir(out)))
    miou = trained["val_miou"]
    if miou is None:
        raise RuntimeError(f"{out / 'train'}: retraining ran no validation epoch (train.epochs = {train_cfg.epochs})")
    # The weights that were validated (the EMA copy when train.ema_decay > 0), as train_network saved them.
    net = load_model(trained["model_path"], device="cpu")
    size = data_cfg.crop_size or data_cfg.image_size
    cost = measure_cost(net, size, space_cfg.in_channels, device="cpu", repeats=5)
    _export(net, arch, space_cfg, probs, trained, out)

    final = {"default": float(miou), "params": int(cost["params"]), "macs": int(cost["macs"]),
             "latency_ms": round(float(cost["latency_ms"]), 3)}
    write_json(out / "result.json", {**final, "stage": stage, "input_size": list(size)})
    # What the web UI's trial panel (its log) and TensorBoard show of the found architecture.
    summary = architecture_summary(arch, final, size, out, describe(arch, space_cfg))
    atomic_write_text(out / "architecture.md", summary)
    write_architecture(out, summary, out / "arch.png")
    print(summary, flush=True)
    if report is not None:
        report(final)
    return final


def _export(net, arch: Dict[str, Any], space_cfg, probs: Optional[Dict[str, Any]], trained: Dict[str, Any],
            out: Path) -> None:
    """The scripted network, ``model.pt`` beside it, and the picture of the architecture."""
    export_torchscript(net, os.fspath(out / "model_scripted.pt"),
                       meta={"space": space_cfg.to_dict(), "arch": arch, "val_miou": trained["val_miou"]})
    flat = _flat_probs(probs) if probs else None
    draw_architecture(arch, space_cfg, out / "arch.png", probs=flat)


def _flat_probs(probs: Mapping[str, Any]) -> Optional[Dict[str, float]]:
    """``probs.json`` as the drawing wants it (label -> number), or None when it holds other shapes."""
    flat = {k: v for k, v in probs.items() if isinstance(v, (int, float))}
    return flat or None


RETIARII_ENTRY = "nni.retiarii.trial_entry"


def retiarii_trial_command_params() -> Dict[str, str]:
    """Makes a Retiarii multi-trial experiment start its workers through this module.

    NNI launches each multi-trial worker as ``python -m nni.retiarii.trial_entry py``; that imports
    Lightning, hence torchvision, before anything could patch torchvision for CPU torch (see
    ENVIRONMENT.md), and the worker dies. With ``config._trial_command_params =
    retiarii_trial_command_params()`` (the hook NNI's ``RetiariiExeConfig`` fills its command template
    from) the worker runs ``python -m nni_rspnet.nnictl.trial -m nni.retiarii.trial_entry py``: the package is
    imported first, then NNI's entry point runs unchanged.
    """
    return {"python": f"{shlex.quote(sys.executable)} -m nni_rspnet.nnictl.trial"}


def _run_retiarii_entry(argv: Sequence[str]) -> int:
    sys.argv = [RETIARII_ENTRY, *argv]
    runpy.run_module(RETIARII_ENTRY, run_name="__main__", alter_sys=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nni_rspnet.nnictl.trial", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, required=True, help="what the trial runs")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="YAML with space/search/train/data: a file or a shipped name (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value before the tuner's parameters (repeatable)")
    parser.add_argument("--out", default=None, help="output folder (default: $NNI_OUTPUT_DIR, else runs/trial-STAGE)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random architecture of a standalone arch trial")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch CPU threads (default 0: torch's default, one per core)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["-m", RETIARII_ENTRY]:  # a Retiarii multi-trial worker, see retiarii_trial_command_params
        return _run_retiarii_entry(argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"argument --threads: expected a whole number >= 0, got {args.threads}")
    set_threads(args.threads)
    sample = nni.get_next_parameter()  # falsy when run outside NNI
    try:
        final = run_trial(args.stage, args.config, args.overrides, sample or None, args.out, args.device, args.seed,
                          report=nni.report_final_result)
    except UserError as err:
        print(f"nni_rspnet.nnictl.trial: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:  # as in the CLI: never a success, and no final result reported
        print(f"nni_rspnet.nnictl.trial: {' '.join(str(err).split()) or 'interrupted (Ctrl-C)'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"final result: {json.dumps(final)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
