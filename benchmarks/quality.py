"""Section ``quality``: the searched architecture, random architectures of the same space and LR-ASPP
from scratch, each trained by the product's ``train_network`` with one budget; mIoU mean and spread
over seeds."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.seg.data import DataConfig, Datasets, build_datasets, build_loaders
from nni_rspnet.seg.metrics import SegMetric
from nni_rspnet.seg.train import train_network
from nni_rspnet.space.arch import build_network, random_arch

from .common import BenchmarkConfig, configs, found_arch, store_result
from .latency import torchvision_peer
from .render import PEER_NAMES


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Trains the searched net, random nets of the same space and LR-ASPP with one budget."""
    run_cfg = configs(cfg, cfg.tiny_config)
    space, data, train = run_cfg.space, run_cfg.data, run_cfg.train
    searched = found_arch(cfg, "tiny")
    # Ordered so that a run cut short still has one of each kind: first seeds first, extra seeds last.
    searched_runs = [("searched", "searched (tiny)", seed, lambda: build_network(space, searched), searched)
                     for seed in range(cfg.quality_searched_seeds)] if searched is not None else []
    peer_runs = [("lraspp", PEER_NAMES["lraspp"], seed, lambda: torchvision_peer("lraspp", space.num_classes), None)
                 for seed in range(cfg.quality_peer_seeds)]
    random_runs = [("random", f"random seed {i}", 0, lambda a=arch: build_network(space, a), arch)
                   for i, arch in enumerate(random_arch(space, i) for i in range(cfg.quality_random))]
    plan = searched_runs[:1] + peer_runs[:1] + random_runs + searched_runs[1:] + peer_runs[1:]
    datasets = build_datasets(data)  # once, for every run
    rows: List[Dict[str, Any]] = []
    info = {"epochs": cfg.quality_epochs, "num_train": data.num_train, "num_val": data.num_val,
            "image_size": list(data.image_size), "optimizer": train.optimizer, "lr": train.lr,
            "weight_decay": train.weight_decay,
            "batch_size": data.batch_size, "threads": cfg.train_threads, "planned": len(plan)}
    for i, (kind, name, seed, make, arch) in enumerate(plan):
        torch.manual_seed(seed)
        net = make()
        params, macs = count_params(net), count_macs(net, data.image_size, 3)
        out = os.path.join(cfg.out_dir, "quality", f"{name.replace(' ', '_').replace('(', '').replace(')', '')}"
                                                   f"_train{seed}")
        if os.path.isdir(out):
            shutil.rmtree(out)  # a fresh run, never a resumed one
        log(f"[quality] {i + 1}/{len(plan)}: {name}, training seed {seed}, {params:,} parameters")
        result = train_network(net, data, replace(train, seed=seed), out, progress=False,
                               space=space.to_dict() if arch is not None else None, arch=arch, datasets=datasets)
        best = max((r["val_miou"] for r in result["history"] if r.get("val_miou") is not None), default=None)
        last = result["history"][-1] if result["history"] else {}
        rows.append({"kind": kind, "name": name, "seed": seed, "params": params, "macs": macs,
                     "val_miou": result["val_miou"], "best_val_miou": best, "val_loss": last.get("val_loss"),
                     "pixel_accuracy": _pixel_accuracy(net, datasets, data), "epochs": result["epochs"],
                     "seconds": round(result["seconds"], 1)})
        log(f"[quality] {name} seed {seed}: val mIoU {result['val_miou']:.4f} after {result['epochs']} epochs, "
            f"{result['seconds'] / 60:.1f} min")
        # Stored after every run, so a run cut short still leaves the finished ones on the page.
        store_result(cfg, "quality", dict(info, rows=rows, complete=False))
    return dict(info, rows=rows, complete=True)


@torch.inference_mode()
def _pixel_accuracy(net: nn.Module, datasets: Datasets, data: DataConfig) -> float:
    """Share of labelled validation pixels predicted right (moves before mIoU does: a network still
    predicting mostly background already gets the easy digit pixels)."""
    _, loader = build_loaders(data, datasets.train, datasets.val, shuffle=False)
    net.eval()
    metric = SegMetric(len(datasets.classes))
    for x, y in loader:
        metric.update(net(x), y)
    return metric.pixel_accuracy()
