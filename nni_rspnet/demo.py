"""``nni-rspnet demo``: the whole pipeline on the built-in data, on a laptop CPU, in minutes.

Data preview, stage 1 (cell), stage 2 (paths), the found architecture as a picture, retraining,
evaluation, export (TorchScript and ONNX, both checked against PyTorch), then a summary table and
where every file went. The demo's own sizes are config overrides (``DEMO_PRESETS``) applied before
the user's ``--set`` overrides, so any of them can be changed from the command line.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterable, List, Optional

import torch

from .config import RunConfig
from .fileio import atomic_write_text, make_dirs, write_json
from .measure import count_macs, count_params, measure_latency
from .schema import DEFAULT_CONFIG
from .search.driver import run_search
from .search.split import arch_part_size
from .seg.data import build_datasets
from .seg.deploy import export_onnx, export_torchscript, load_model
from .seg.evaluate import evaluate_network
from .seg.train import train_network
from .seg.visual import save_preview
from .space.arch import build_network, describe
from .space.draw import draw_architecture

# The demo runs the config (search_spaces/tiny.yaml) with a shorter search, 10+1+1 epochs (warm-up, cell
# search, paths) instead of the config's 18+2+1, to stay within ten minutes on two CPU cores. Measured on a
# fresh clone: with 18+1+1 the demo took 11.0 min (search 374 s: a warm-up epoch costs about 16 s with two
# threads, the relaxed cell-search epoch 75 s; retraining 282 s) and reached 0.627 val mIoU, its supernet
# 0.234 at the end of stage 1. `nni-rspnet search` runs the config's own search; --set changes these.
# --fast shrinks everything to seconds for tests. Torch's threads are the process' (one per core unless
# --threads says otherwise).
DEMO_PRESETS: Dict[bool, List[str]] = {
    False: ["search.warmup_epochs=10", "search.stage1_epochs=1"],
    True: ["space.layers=2", "space.channels=[8, 16, 16]", "space.resolutions=[4, 8, 16]", "space.cell_nodes=2",
           "space.ops=[skip_connect, sep_conv_3x3, zoomed_conv]", "space.stem_channels=8", "space.head_channels=8",
           "data.num_train=48", "data.num_val=16", "data.image_size=[32, 64]", "data.crop_size=[32, 64]",
           "data.batch_size=8", "data.val_batch_size=8",
           "search.warmup_epochs=0", "search.stage1_epochs=1", "search.stage2_epochs=1", "search.limit_batches=2",
           "search.latency_repeats=1", "train.epochs=1", "train.warmup_epochs=0"],
}


def _step(n: int, total: int, text: str) -> float:
    print(f"\n[{n}/{total}] {text}", flush=True)
    return time.time()


def run_demo(out_dir: str = "runs/demo", config: str = DEFAULT_CONFIG, fast: bool = False,
             overrides: Optional[Iterable[str]] = None, device: str = "cpu", resume: bool = False) -> Dict[str, Any]:
    """Runs the pipeline and returns the summary (also written to ``out_dir/summary.json`` and ``.md``).

    Args:
        out_dir: where everything goes (sub-folders ``search``, ``train``, ``eval``, ``export``).
        config: the YAML config (sections ``space``, ``search``, ``train``, ``data``).
        fast: a seconds-long variant for tests (tiny space, a few images, one epoch per stage).
        overrides: ``SECTION.KEY=VALUE`` strings applied after the demo presets.
        device: ``cpu`` or ``cuda``.
        resume: continue a killed demo: the search and the training resume from their checkpoints.
    """
    started = time.time()
    cfg = RunConfig.load(config, DEMO_PRESETS[fast] + list(overrides or []), origin=f"{config} (with demo presets)")
    space_cfg, search_cfg, train_cfg, data_cfg = cfg.space, cfg.search, cfg.train, cfg.data
    make_dirs(out_dir)
    files: Dict[str, str] = {}
    timings: Dict[str, float] = {}
    total = 6

    t = _step(1, total, f"data: {data_cfg.dataset}")
    datasets = build_datasets(data_cfg, space_cfg.num_classes)  # once, for every step below
    val_set, classes = datasets.val, datasets.classes
    print(f"  {len(datasets.train)} train / {len(val_set)} val images, {len(classes)} classes: "
          f"{', '.join(classes[:12])}{' ...' if len(classes) > 12 else ''}", flush=True)
    files["data preview"] = os.path.join(out_dir, "data_preview.png")
    save_preview(val_set, files["data preview"], count=6, mean=data_cfg.mean, std=data_cfg.std)
    timings["data"] = time.time() - t

    t = _step(2, total, f"two-stage search of space {space_cfg.name!r}: warm-up {search_cfg.warmup_epochs}, "
                        f"cell {search_cfg.stage1_epochs}, paths {search_cfg.stage2_epochs} epochs")

    supernet: Dict[int, float] = {}
    arch_images = arch_part_size(len(datasets.train), search_cfg.arch_fraction)

    def report(record: Dict[str, Any]) -> None:
        metrics = record.get("metrics", {})
        miou = metrics.get("val_miou")
        if miou is not None:
            supernet[record["stage"]] = miou
        kind = "search" if record["searching"] else (
            "warm-up, one sampled sub-network" if search_cfg.warmup_sampling and record["stage"] == 1 else "warm-up")
        # Every epoch but a stage's last is scored on search.val_images images of the architecture split.
        part = (0 < search_cfg.val_images < arch_images and record["epoch"] < record["epochs"]
                and not search_cfg.limit_batches)
        print(f"  stage {record['stage']} epoch {record['epoch']}/{record['epochs']} ({kind})"
              + (f"  supernet val mIoU {miou:.3f}" if miou is not None else "")
              + (f" ({search_cfg.val_images} of {arch_images} images)" if miou is not None and part else ""),
              flush=True)

    search_dir = os.path.join(out_dir, "search")
    found = run_search(space_cfg, search_cfg, data_cfg, search_dir, device=device, resume=resume,
                       epoch_callback=report, progress_bar=True, datasets=datasets)
    files["architecture"] = os.path.join(search_dir, "arch.json")
    files["path probabilities"] = os.path.join(search_dir, "probs.json")
    files["stage-1 cell"] = os.path.join(search_dir, "cell.json")
    files["architecture picture"] = os.path.join(out_dir, "architecture.png")
    macro_probs = {k: v for k, v in found.probs.items() if k.startswith("macro/")}
    draw_architecture(found.arch, space_cfg, files["architecture picture"], probs=macro_probs)
    print(describe(found.arch, space_cfg))
    timings["search"] = time.time() - t

    t = _step(3, total, f"retraining the found network for {train_cfg.epochs} epochs")
    net = build_network(space_cfg, found.arch)
    train_dir = os.path.join(out_dir, "train")
    trained = train_network(net, data_cfg, train_cfg, train_dir, device=device, resume=resume,
                            space=space_cfg.to_dict(), arch=found.arch, progress=True, datasets=datasets)
    files["trained model"] = trained["model_path"]
    files["training curves"] = os.path.join(train_dir, "curves.png")
    timings["train"] = time.time() - t

    t = _step(4, total, "evaluation on the validation split")
    net = load_model(trained["model_path"], device)
    eval_dir = os.path.join(out_dir, "eval")
    evaluation = evaluate_network(net, val_set, classes, eval_dir, device=device, mean=data_cfg.mean,
                                  std=data_cfg.std, batch_size=data_cfg.val_batch_size, progress=True)
    files["per-class IoU"] = os.path.join(eval_dir, "iou.md")
    files["predictions"] = os.path.join(eval_dir, "predictions.png")
    timings["evaluate"] = time.time() - t

    t = _step(5, total, "export: TorchScript and ONNX, checked against PyTorch")
    net = net.cpu().eval()
    h, w = data_cfg.image_size
    x = torch.randn(1, space_cfg.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    meta = {"classes": classes, "mean": list(data_cfg.mean), "std": list(data_cfg.std), "arch": found.arch}
    files["TorchScript"] = os.path.join(out_dir, "export", "model.torchscript.pt")
    files["ONNX"] = os.path.join(out_dir, "export", "model.onnx")
    make_dirs(os.path.dirname(files["ONNX"]))
    export_torchscript(net, files["TorchScript"], meta=meta, check_input=x)
    onnx_diff = export_onnx(net, files["ONNX"], (h, w), meta=meta)
    timings["export"] = time.time() - t

    t = _step(6, total, "cost of the found network on this CPU")
    params = count_params(net)
    macs = count_macs(net, (h, w), space_cfg.in_channels)
    latency = measure_latency(net, x, repeats=20, warmup=3, threads=1)
    timings["cost"] = time.time() - t
    timings["total"] = time.time() - started

    summary = {
        "miou": evaluation["miou"], "pixel_accuracy": evaluation.get("pixel_accuracy"),
        "supernet_val_miou": found.val_miou, "supernet_val_miou_by_stage": supernet, "params": params, "macs": macs,
        "latency_ms": latency, "input_size": [h, w], "onnx_max_abs_diff": onnx_diff,
        "seconds": timings, "files": files, "fast": fast,
    }
    rows = [("mIoU (val, retrained)", f"{evaluation['miou']:.3f}"),
            ("supernet val mIoU, end of stage 1 / stage 2",
             " / ".join(f"{supernet[k]:.3f}" if k in supernet else "-" for k in (1, 2))),
            ("parameters", f"{params:,}"),
            ("MACs", f"{macs / 1e6:.1f} M at {h}x{w}"),
            ("CPU latency", f"{latency:.1f} ms at {h}x{w}, 1 thread, median of 20"),
            ("ONNX vs PyTorch", f"max |diff| {onnx_diff:.1e}"),
            ("wall time", f"{timings['total'] / 60:.1f} min (search {timings['search']:.0f} s, "
                          f"training {timings['train']:.0f} s)")]
    table = "| result | value |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    where_md = "| file | path |\n| --- | --- |\n" + "".join(f"| {k} | `{v}` |\n" for k, v in files.items())
    files["summary"] = os.path.join(out_dir, "summary.md")
    write_json(os.path.join(out_dir, "summary.json"), summary)
    atomic_write_text(files["summary"], "# nni-rspnet demo\n\n" + table + "\n" + where_md)
    print("\n" + table + "\n" + where_md.replace("`", ""), flush=True)
    return summary
