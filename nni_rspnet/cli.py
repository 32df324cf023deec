"""The ``nni-rspnet`` command: one subcommand per step of the pipeline.

Each subcommand is a pair of functions, ``_args_<name>(parser)`` and ``_cmd_<name>(args)``, listed in
``COMMANDS``. A command that reads a config takes ``--config`` and ``--set SECTION.KEY=VALUE`` and
builds the run's ``RunConfig`` once (``_run_config``). The few short flags that stand for a setting are
aliases, listed in ``ALIASES`` and turned into overrides in one place (``_overrides``): ``--data SPEC``
is ``--set data.dataset=SPEC``.

The library is imported inside the ``_cmd_*`` handlers, not at the top: importing this module must not
load torch, Lightning or NNI, so ``nni-rspnet --help`` returns at once. Every ``UserError`` (a bad
config, architecture, data or model file, an unwritable output, a diverged run) is caught once, in
``main``: one line, exit status 2; so is a bad command line (``_Parser.error``). Ctrl-C is one line too
(which checkpoint was kept, how to ``--resume``) and exit status 130; no result is written.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, Dict, List, Optional, Tuple

from .errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, ConfigError, UserError
from .runtime import set_threads
from .schema import DEFAULT_CONFIG

# Short flags that stand for one setting: option name -> (SECTION.KEY, metavar or None for a switch, help).
ALIASES: Dict[str, Tuple[str, Optional[str], str]] = {
    "data": ("data.dataset", "SPEC", "builtin | cityscapes:PATH | voc:PATH | folder:PATH"),
    "verify": ("data.verify", None, "read every file of both splits once when the datasets are built"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nni-rspnet evaluate: error: argument --window: ...`` and status 2
    (argparse prints the whole usage first, which buries the line that matters)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _int_at_least(low: int, high: int = 1 << 20):
    """An argparse type: an integer in ``[low, high]`` (sizes, counts and repeats; huge ones would allocate)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse


_SIZE = _int_at_least(1, 16384)     # a side of an image, window or stride, in pixels
_COUNT = _int_at_least(0, 100_000)  # images to show or save, samples to draw


def _add_config_args(p: argparse.ArgumentParser, *aliases: str) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="YAML config (sections space/search/train/data): a file, or the name of a shipped one "
                        "(tiny, cityscapes; see 'nni-rspnet configs'); default %(default)s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set space.layers=3 (repeatable)")
    for name in aliases:
        key, metavar, text = ALIASES[name]
        if metavar is None:
            p.add_argument(f"--{name}", dest=f"alias_{name}", action="store_true", default=None,
                           help=f"same as --set {key}=true: {text}")
        else:
            p.add_argument(f"--{name}", dest=f"alias_{name}", default=None, metavar=metavar,
                           help=f"same as --set {key}={metavar}: {text}")


def _overrides(args: argparse.Namespace) -> List[str]:
    """The ``--set`` overrides, then the aliases given (the one place an alias becomes an override)."""
    items = list(args.overrides)
    for name, (key, _, _) in ALIASES.items():
        value = getattr(args, f"alias_{name}", None)
        if value is not None:
            items.append(f"{key}={json.dumps(value)}")  # a JSON value is a YAML value: paths stay strings
    return items


def _run_config(args: argparse.Namespace):
    """The run's ``RunConfig``: ``--config``, then ``--set`` and the aliases; every section validated."""
    from .config import RunConfig

    return RunConfig.load(args.config, _overrides(args))


def _threads(text: str) -> int:
    """``--threads N``: a count >= 0 (0: torch's default, one thread per core)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text[:40]!r}")
    if value > 1024:
        raise argparse.ArgumentTypeError(f"expected at most 1024 threads, got {value}")
    return value


# --- space -----------------------------------------------------------------------------------------

def _args_space(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--input-size", nargs=2, type=_SIZE, default=[64, 128], metavar=("H", "W"),
                   help="input size for the MAC count of the sampled networks")
    p.add_argument("--samples", type=_COUNT, default=5, help="random architectures to sample for the cost range")
    p.add_argument("--seed", type=int, default=0, help="seed of the first sampled architecture")


def _cmd_space(args: argparse.Namespace) -> int:
    from .measure import count_macs, count_params
    from .space.arch import build_network, random_arch, search_space_size_log10, space_spec
    from .space.model import RSPNetSpace

    cfg = _run_config(args).space
    spec = space_spec(cfg)
    print(f"space {cfg.name!r} from {args.config}")
    print(f"  trellis: {cfg.layers} layers x resolutions {['1/%d' % r for r in cfg.resolutions]}, "
          f"channels {cfg.channels}, {cfg.paths_per_node} paths per node, RSP depth {cfg.rsp_depth}, "
          f"{cfg.cell_nodes}-node cell")
    print(f"\n{'label':<28} choices")
    for label, choice in spec.items():
        if choice.is_op:
            values = ", ".join(choice.names)
        else:
            values = f"{choice.n_chosen} of {choice.n_candidates} inputs ({choice.size} sets)"
        print(f"{label:<28} {values}")
    print(f"\nlabels: {len(spec)}   search space size: 10^{search_space_size_log10(cfg):.2f} architectures")
    supernet = RSPNetSpace(cfg)
    print(f"supernet parameters: {count_params(supernet):,}")
    h, w = args.input_size
    costs = []
    for i in range(args.samples):
        net = build_network(cfg, random_arch(cfg, args.seed + i))
        costs.append((count_params(net), count_macs(net, (h, w), cfg.in_channels)))
    if costs:
        params, macs = zip(*costs)
        print(f"{args.samples} sampled networks at {h}x{w}: parameters {min(params):,} .. {max(params):,}, "
              f"MACs {min(macs) / 1e6:.1f} M .. {max(macs) / 1e6:.1f} M")
    return 0


# --- export-search-space / report (nnictl experiments) ---------------------------------------------

def _args_export_search_space(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--out", required=True, help="tuner search-space JSON to write, e.g. search_spaces/tiny_arch.json")
    p.add_argument("--extra", default=None, metavar="JSON",
                   help="further tuner parameters as a JSON object of SECTION.KEY -> {_type, _value}")


def _cmd_export_search_space(args: argparse.Namespace) -> int:
    from .fileio import parse_json
    from .nnictl.hpo import write_search_space

    cfg = _run_config(args).space
    extra = parse_json(args.extra, "--extra") if args.extra else None
    space = write_search_space(cfg, args.out, extra)
    n_arch = sum("/" in k for k in space)
    print(f"wrote {args.out}: {n_arch} architecture labels and {len(space) - n_arch} other parameters "
          f"of space {cfg.name!r} from {args.config}")
    return 0


def _args_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment id (looked up in ~/nni-experiments) or experiment folder")
    p.add_argument("--out", default=None, help="folder for trials.md/csv, pareto.png, best_arch.json "
                                               "(default: <experiment folder>/report)")


def _cmd_report(args: argparse.Namespace) -> int:
    from .nnictl.report import make_report

    print(make_report(args.experiment, args.out).text())
    return 0


# --- experiment (nnictl, bound to localhost) ------------------------------------------------------------

def _args_experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["create", "view", "stop"],
                   help="create: start an nnictl experiment; view: reopen a stopped one; stop: stop one")
    p.add_argument("id", nargs="?", default=None, help="experiment id (view, stop)")
    p.add_argument("--config", default=None, help="nnictl experiment YAML (create), e.g. experiment_configs/macro.yml")
    p.add_argument("--port", type=_int_at_least(1, 65535), default=8080, help="port of the web UI and REST API")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the web UI and REST API listen on: 127.0.0.1, this machine only (the default), or "
                        "0.0.0.0, every interface: anyone who can reach this machine can then read the experiment "
                        "and stop or change it, since NNI has no authentication")
    p.add_argument("--all", action="store_true", help="stop: every running experiment")


def _cmd_experiment(args: argparse.Namespace) -> int:
    import os

    from .nnictl import experiment as ex

    if args.action == "stop":
        if bool(args.id) == bool(args.all):
            raise ConfigError("experiment stop: give one experiment id or --all")
        for exp_id in ex.running_ids() if args.all else [args.id]:
            left = ex.stop(ex.Experiment(exp_id, args.port, ex.working_dir_of_id(exp_id)))
            print(f"experiment {exp_id} stopped" + (f"; processes {left} are still alive" if left else ""))
        return 0
    if args.action == "create":
        if not args.config or args.id:
            raise ConfigError("experiment create: give --config EXPERIMENT.yml (and no id)")
        exp = ex.launch(args.config, args.port, ex.working_dir_of(args.config), host=args.host)
    else:
        if not args.id:
            raise ConfigError("experiment view: give the id of a stopped experiment")
        exp = ex.view(args.id, args.port, os.path.expanduser(ex.DEFAULT_WORKING_DIR), host=args.host)
    print(f"experiment {exp.id}: web UI and REST API at {exp.url}")
    if exp.host != ex.LOCALHOST:
        print(f"listening on {exp.host}:{exp.port}: anyone who can reach this machine on that port can read the "
              f"experiment and stop or change it (NNI has no authentication)")
    else:
        print(f"listening on {exp.host}:{exp.port} only: other machines cannot reach it")
    print(f"stop it with: nni-rspnet experiment stop {exp.id}")
    return 0


# --- data / train / evaluate / export / predict ------------------------------------------------------

def _args_data(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, "data", "verify")
    p.add_argument("--split", choices=["train", "val"], default="train", help="split to show")
    p.add_argument("--preview", default=None, metavar="PNG", help="write a grid of images with coloured masks")
    p.add_argument("--count", type=_int_at_least(1, 1024), default=8, help="images in the preview")
    p.add_argument("--export-cityscapes", metavar="DIR", default=None,
                   help="write both splits in Cityscapes' layout (leftImg8bit/, gtFine/*_labelIds.png; class i "
                        "becomes train id i), to try the Cityscapes path with --data cityscapes:DIR")


def _cmd_data(args: argparse.Namespace) -> int:
    import numpy as np

    from .seg.data import build_datasets
    from .seg.metrics import IGNORE_INDEX
    from .seg.visual import save_preview

    cfg = _run_config(args).data
    train, val, classes = build_datasets(cfg)
    print(f"dataset {cfg.dataset}: {len(classes)} classes, train {len(train)} images, val {len(val)} images")
    ds = train if args.split == "train" else val
    counts = np.zeros(256, np.int64)
    for i in range(min(len(ds), 64)):
        counts += np.bincount(ds[i][1].numpy().ravel(), minlength=256)[:256]
    total = max(1, counts.sum())
    print(f"pixel share in the first {min(len(ds), 64)} {args.split} images:")
    for c, name in enumerate(classes):
        print(f"  {c:3d} {name:<16} {100 * counts[c] / total:6.2f} %")
    print(f"  {IGNORE_INDEX} {'(ignore)':<16} {100 * counts[IGNORE_INDEX] / total:6.2f} %")
    if args.preview:
        save_preview(ds, args.preview, args.count, cfg.mean, cfg.std, cfg.dataset)
        print(f"preview written to {args.preview}")
    if args.export_cityscapes:
        from .seg.cityscapes import export_cityscapes
        from .seg.datasets import CITYSCAPES_CLASSES

        counts = export_cityscapes([("train", train), ("val", val)], args.export_cityscapes)
        names = ", ".join(f"{c} -> {CITYSCAPES_CLASSES[i]}" for i, c in enumerate(classes))
        print(f"wrote {counts['train']} train and {counts['val']} val images in Cityscapes' layout to "
              f"{args.export_cityscapes} ({names})")
        print(f"use it with --data cityscapes:{args.export_cityscapes} --set space.num_classes="
              f"{len(CITYSCAPES_CLASSES)}")
    return 0


def _args_train(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, "data")
    p.add_argument("--arch", required=True, help="architecture JSON (label -> choice)")
    p.add_argument("--out", default="runs/train", help="run folder: checkpoints, history, model.pt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt after a kill")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .seg.train import train_network
    from .space.arch import build_network, load_arch

    cfg = _run_config(args)
    arch = load_arch(args.arch, cfg.space)
    torch.manual_seed(cfg.train.seed)  # the initial weights follow train.seed too: a run repeats exactly
    net = build_network(cfg.space, arch)
    result = train_network(net, cfg.data, cfg.train, args.out, device=args.device, resume=args.resume,
                           space=cfg.space.to_dict(), arch=arch, progress=not args.no_progress,
                           max_time_s=args.max_minutes * 60 if args.max_minutes else None)
    if result["global_zero"]:
        if result["resumed_after_epoch"] is not None:
            print(f"resumed from {args.out}/last.ckpt after epoch {result['resumed_after_epoch']}")
        where = f" on {result['world_size']} processes ({result['backend']})" if result["world_size"] > 1 else ""
        print(f"trained {result['epochs']} epochs{where} in {result['seconds']:.1f} s: "
              f"val mIoU {result['val_miou']:.4f}")
        print(f"model written to {result['model_path']}")
    return 0


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, "data")
    p.add_argument("--checkpoint", required=True,
                   help="model.pt written by train, or a TorchScript or .onnx file written by export (ONNX runs in "
                        "onnxruntime)")
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole", help="whole-image or sliding-window")
    p.add_argument("--window", nargs=2, type=_SIZE, default=None, metavar=("H", "W"), help="sliding window size")
    p.add_argument("--stride", nargs=2, type=_SIZE, default=None, metavar=("H", "W"), help="sliding window step")
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--out", default=None, help="folder for iou.md, iou.json and predictions (default: beside model)")
    p.add_argument("--save-images", type=_COUNT, default=8, help="coloured predictions to write")
    p.add_argument("--device", default="cpu")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import os

    from .seg.data import make_dataset
    from .seg.deploy import load_network
    from .seg.evaluate import evaluate_network, iou_table_markdown

    data_cfg = _run_config(args).data
    net, meta = load_network(args.checkpoint, args.device, args.threads or None)
    meta = meta or {}
    split = args.split if data_cfg.dataset == "builtin" else (data_cfg.val_split if args.split == "val"
                                                               else data_cfg.train_split)
    dataset = make_dataset(data_cfg, split, train=False)
    if args.mode == "slide" and args.window is None:
        raise ConfigError("--mode slide needs --window H W")
    if meta.get("classes") and len(meta["classes"]) != len(dataset.classes):
        raise ConfigError(f"{args.checkpoint}: the model predicts {len(meta['classes'])} classes but dataset "
                          f"{data_cfg.dataset} has {len(dataset.classes)}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{split}")
    result = evaluate_network(net, dataset, dataset.classes, out, args.mode, args.window, args.stride, args.flip,
                              args.device, args.save_images, data_cfg.dataset, mean=data_cfg.mean, std=data_cfg.std)
    per_class = [float("nan") if v is None else v for v in result["per_class"].values()]
    print(iou_table_markdown(dataset.classes, per_class, result["miou"], result["pixel_accuracy"]), end="")
    print(f"reports written to {out}")
    return 0


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model.pt written by train")
    p.add_argument("--format", choices=["torchscript", "onnx"], required=True)
    p.add_argument("--out", default=None, help="output file (default: model.ts.pt / model.onnx beside the checkpoint)")
    p.add_argument("--input-size", nargs=2, type=_SIZE, default=[64, 128], metavar=("H", "W"),
                   help="input size the export is traced and checked at (both formats then take any size)")
    p.add_argument("--fixed-size", action="store_true",
                   help="ONNX: a graph for --input-size only (predict and evaluate resize images to it)")
    p.add_argument("--no-fold", action="store_true",
                   help="keep BatchNorm layers (by default they are folded into the convolutions, and checked)")


def _cmd_export(args: argparse.Namespace) -> int:
    import os

    import torch

    from .seg.deploy import export_onnx, export_torchscript, load_checkpoint, load_model

    meta = load_checkpoint(args.checkpoint).get("meta") or {}
    net = load_model(args.checkpoint)
    stem = os.path.splitext(os.path.abspath(args.checkpoint))[0]
    h, w = args.input_size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    if args.format == "torchscript":
        out = args.out or stem + ".ts.pt"
        export_torchscript(net, out, meta, check_input=x, fold=not args.no_fold)
        with torch.no_grad():
            diff = (torch.jit.load(out)(x) - net(x)).abs().max().item()
    else:
        out = args.out or stem + ".onnx"
        diff = export_onnx(net, out, (h, w), meta, fold=not args.no_fold, dynamic_size=not args.fixed_size)
    folded = "" if args.no_fold else "BatchNorm folded into the convolutions; "
    print(f"{args.format} written to {out}; {folded}max |difference| from PyTorch at {h}x{w}: {diff:.2e}")
    return 0


def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.pt, TorchScript .pt or .onnx file")
    p.add_argument("--input", required=True, help="folder of images")
    p.add_argument("--out", required=True, help="folder for the masks")
    p.add_argument("--format", dest="fmt", choices=["palette", "cityscapes"], default="palette",
                   help="palette: PNGs of class indices, coloured; cityscapes: Cityscapes label-id PNGs named as "
                        "the input images, for the benchmark server and the official evaluator (reads every "
                        "*_leftImg8bit.png under --input, e.g. leftImg8bit/val)")
    p.add_argument("--overlay", action="store_true", help="also write the masks blended over the images")
    p.add_argument("--device", default="cpu")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .seg.deploy import predict_folder

    written = predict_folder(args.model, args.input, args.out, args.device, args.overlay, args.fmt)
    kind = "Cityscapes label-id masks" if args.fmt == "cityscapes" else "masks"
    print(f"{len(written)} {kind} written to {args.out}")
    return 0


# --- search / latency-table ----------------------------------------------------------------------

def _args_search(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, "data")
    p.add_argument("--out", default="runs/search", help="output folder: arch.json, probs.json, cell.json, checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt after a kill")
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bar")


def _cmd_search(args: argparse.Namespace) -> int:
    from .search.driver import run_search
    from .space.arch import describe

    cfg = _run_config(args)

    def report(record) -> None:
        m = record["metrics"]
        extra = "".join(f"  {k} {m[k]:.4g}" for k in sorted(m) if k.startswith(("expected_", "derived_", "lambda")))
        kind = "search" if record["searching"] else "warm-up"
        print(f"stage {record['stage']} epoch {record['epoch']}/{record['epochs']} ({kind}): "
              f"val mIoU {m.get('val_miou', float('nan')):.4f}  tau {m.get('tau', float('nan')):.3f}{extra}",
              flush=True)

    result = run_search(cfg.space, cfg.search, cfg.data, args.out, device=args.device, resume=args.resume,
                        epoch_callback=report, progress_bar=args.progress)
    print(describe(result.arch, cfg.space))
    cost = result.cost
    print(f"exported network: {cost['params']:,.0f} parameters, {cost['macs'] / 1e6:.2f} M MACs, "
          f"{cost['latency_ms']:.2f} ms on {cfg.search.latency_device or args.device}")
    if result.target is not None:
        metric = next(k for k in result.target if k != "given")
        target = result.target[metric]
        print(f"target {metric} {target:g} ({result.target['given']}): exported {cost[metric]:g} "
              f"({100 * cost[metric] / target:.0f} % of target)")
    print(f"architecture written to {args.out}/arch.json (probabilities: probs.json, stage-1 cell: cell.json)")
    return 0


def _args_latency_table(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--device", default="cpu", help="where to measure: cpu, cuda, ...")
    p.add_argument("--input-size", type=_SIZE, nargs=2, default=[512, 1024], metavar=("H", "W"),
                   help="image size the network will run at (the deployment size)")
    p.add_argument("--runtime", default="eager", choices=["eager", "torchscript", "onnxruntime"],
                   help="the runtime the network will be deployed with (default eager: PyTorch)")
    p.add_argument("--reference", action="append", default=[], metavar="NAME",
                   help="also time this reference network (lraspp, deeplabv3), for relative targets such as "
                        "search.target_latency=0.5xlraspp (repeatable)")
    p.add_argument("--repeats", type=_int_at_least(1, 1000), default=5, help="interleaved timing rounds (median kept)")
    p.add_argument("--timing-threads", type=_threads, default=1, metavar="N",
                   help="CPU threads while timing (default 1, as the search's latency targets assume; "
                        "0: the process' setting)")
    p.add_argument("--out", required=True, help="JSON cost table to write (use it with --set search.lut=FILE)")


def _cmd_latency_table(args: argparse.Namespace) -> int:
    from .search.cost_table import build_cost_table
    from .search.references import check_reference

    for name in args.reference:
        check_reference(name, "--reference")
    space = _run_config(args).space
    table = build_cost_table(space, args.input_size, args.device, latency=True, repeats=args.repeats,
                             threads=args.timing_threads or None, runtime=args.runtime, references=args.reference,
                             log=print)
    table.save(args.out)
    lo, hi = table.extreme_arch("latency_ms", min), table.extreme_arch("latency_ms", max)
    h, w = args.input_size
    print(f"cost table of {space.name!r} at {h}x{w} on {args.device} ({args.runtime}): {len(table.choices)} labels, "
          f"{len(table.nodes)} nodes, {len(table.entries)} op entries")
    print(f"fixed part (stem, head, upsampling): {table.fixed['params']:,.0f} parameters, "
          f"{table.fixed['macs'] / 1e6:.1f} M MACs, {table.fixed['latency_ms']:.2f} ms")
    print(f"estimated latency range: {table.derived(lo, 'latency_ms'):.2f} .. {table.derived(hi, 'latency_ms'):.2f} ms "
          f"({table.derived(lo, 'params'):,.0f} .. {table.derived(hi, 'params'):,.0f} parameters)")
    for name, ms in table.references.items():
        print(f"reference {name}: {ms:.2f} ms (the cheapest architecture is {table.derived(lo, 'latency_ms') / ms:.2f}x)")
    print(f"written to {args.out}")
    return 0


# --- rank-check ----------------------------------------------------------------------------------

def _args_rank_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--search", required=True, metavar="DIR", help="a finished search: the --out folder of 'search'")
    p.add_argument("--config", default=None,
                   help="take every section from this config (a file or a shipped name) instead of the search's "
                        "search_config.json; default: the search's space/search/data and the train section of "
                        f"{DEFAULT_CONFIG!r}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one space/data/train value, e.g. --set train.lr=0.001 (repeatable; the search "
                        "settings are those saved with the supernet)")
    p.add_argument("-n", "--num", type=int, default=8, help="architectures, the search's own included (default 8)")
    p.add_argument("--epochs", type=int, default=5,
                   help="training epochs of each architecture alone (default 5; the rest of the recipe is the "
                        "config's train section)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random architectures and of the first trainings")
    p.add_argument("--seeds", type=int, default=2,
                   help="trainings of each architecture (seeds SEED, SEED+1, ...; default 2): their mean is what the "
                        "supernet is judged against, and how far they agree with each other says whether the "
                        "architectures differ by more than training noise at all (1 halves the time, without that)")
    p.add_argument("--calib-batches", type=int, default=10,
                   help="batches for re-estimating BatchNorm statistics per architecture (default 10)")
    p.add_argument("--score-batches", type=int, default=0,
                   help="batches of the search's architecture split to score on (default 0: all)")
    p.add_argument("--out", default=None, help="output folder (default: SEARCH/rank_check)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _cmd_rank_check(args: argparse.Namespace) -> int:
    import os

    from .config import RunConfig
    from .schema import parse_overrides, read_sections
    from .search.rank_check import format_table, read_search_config, run_rank_check

    searched = read_search_config(args.search)
    sections = read_sections(args.config or DEFAULT_CONFIG)
    if args.config is None:
        sections.update(searched)
    for section, values in parse_overrides(args.overrides).items():
        sections[section].update(values)
    cfg = RunConfig.from_sections(sections, args.config or os.path.join(args.search, "search_config.json"))
    out = args.out or os.path.join(args.search, "rank_check")
    result = run_rank_check(args.search, cfg.space, cfg.data, cfg.train, out, n=args.num,
                            epochs=args.epochs, seed=args.seed, device=args.device, calib_batches=args.calib_batches,
                            score_batches=args.score_batches, seeds=args.seeds)
    print(format_table(result))
    print(f"written to {os.path.join(out, 'rank_check.json')} and {os.path.join(out, 'rank_check.png')}")
    return 0


# --- demo ----------------------------------------------------------------------------------------

def _args_demo(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--fast", action="store_true", help="a seconds-long run on a tinier space (for tests)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue a killed demo from its checkpoints")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, args.config, fast=args.fast, overrides=_overrides(args), device=args.device,
             resume=args.resume)
    return 0


# --- configs -------------------------------------------------------------------------------------

def _args_configs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", metavar="NAME", default=None,
                   help="print only the path of the shipped file NAME (e.g. for an editor: "
                        "\"$(nni-rspnet configs --path macro)\")")


def _cmd_configs(args: argparse.Namespace) -> int:
    from .resources import KINDS, all_shipped, shipped

    if args.path is not None:
        found = [item for item in all_shipped() if args.path in (item.name, item.path.name)]
        if len(found) != 1:
            names = ", ".join(sorted(item.path.name for item in all_shipped()))
            why = "not a shipped file" if not found else "ambiguous; add the extension"
            raise ConfigError(f"--path {args.path}: {why} (shipped: {names})")
        print(found[0].path)
        return 0
    usage = {"config": "--config NAME", "tuner": "searchSpaceFile of the experiments",
             "arch": "--arch PATH", "experiment": "nni-rspnet experiment create --config NAME"}
    for kind, (_, _, what) in KINDS.items():
        items = shipped(kind)
        if not items:
            continue
        print(f"{what} ({usage[kind]}), in {items[0].path.parent}:")
        width = max(len(item.name) for item in items)
        for item in items:
            print(f"  {item.name:<{width}}  {item.description}")
    return 0


# --- registry --------------------------------------------------------------------------------------

COMMANDS: Dict[str, Tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "demo": ("the whole pipeline on the built-in data: search, retrain, evaluate, export, pictures",
             _args_demo, _cmd_demo),
    "space": ("print the search space: labels, size, supernet and sampled-network costs", _args_space, _cmd_space),
    "search": ("two-stage search (cell, then paths with path attention): arch.json, probs.json, --resume",
               _args_search, _cmd_search),
    "rank-check": ("score architectures with a search's supernet and train them alone: Kendall tau of the two",
                   _args_rank_check, _cmd_rank_check),
    "latency-table": ("measure every candidate's parameters, MACs and latency at an input size on a device",
                      _args_latency_table, _cmd_latency_table),
    "export-search-space": ("write the NNI tuner search space (JSON) of a model space, for arch_hpo.yml",
                            _args_export_search_space, _cmd_export_search_space),
    "report": ("table, Pareto front and best architecture of an nnictl experiment", _args_report, _cmd_report),
    "configs": ("list the configs, tuner search spaces and experiment configs shipped with the package",
                _args_configs, _cmd_configs),
    "experiment": ("create, view or stop an nnictl experiment whose web UI listens on 127.0.0.1 only",
                   _args_experiment, _cmd_experiment),
    "data": ("show a dataset (classes, sizes, pixel shares) and write a preview grid", _args_data, _cmd_data),
    "train": ("train a fixed architecture: checkpoints every epoch, --resume, DDP on CPU", _args_train, _cmd_train),
    "evaluate": ("mIoU and per-class IoU of a model.pt, TorchScript or ONNX file (onnxruntime; whole/sliding window, "
                 "flip)", _args_evaluate, _cmd_evaluate),
    "export": ("export a model.pt to TorchScript or ONNX, BatchNorm folded (checked against PyTorch)", _args_export,
               _cmd_export),
    "predict": ("predict masks for a folder of images with a model.pt, TorchScript or ONNX file",
                _args_predict, _cmd_predict),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nni-rspnet", description="NAS of light-weight semantic-segmentation "
                                     "networks (RSPNet) with NNI: search, train, evaluate, export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.add_argument("--threads", type=_threads, default=0, metavar="N",
                       help="torch CPU threads for this command (default 0: torch's default, one per core)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # Lightning's per-fit banner ("GPU available: False ...") repeats for every stage; keep warnings.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)  # "Global seed set to 0"
    try:
        set_threads(args.threads)
        if getattr(args, "device", None):
            from .measure import check_device

            check_device(args.device)  # before anything is built: `--device cuda` on a CPU-only machine
        return COMMANDS[args.command][2](args) or 0
    except UserError as err:  # a mistake in the user's own config, data or files: one line, status 2
        print(f"nni-rspnet {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:  # Ctrl-C: never a success; errors.Interrupted says what was kept
        text = " ".join(str(err).split()) or "interrupted (Ctrl-C); no result was written"
        print(f"nni-rspnet {args.command}: {text}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
