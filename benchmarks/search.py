"""Section ``search``: the search that produces "the found network" (the tiny space on the built-in
data, as the demo does); its ``arch.json`` is what the latency and quality sections measure."""
from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Dict

from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.search.driver import run_search
from nni_rspnet.space.arch import build_network

from .common import ROOT, BenchmarkConfig, configs, search_dir


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Searches the tiny space on the built-in data (as the demo does): "the found network".

    The Cityscapes space is not searched: its supernet is far beyond a CPU at this budget, and even
    its lightest architecture is several times the parameter goal (the latency section shows it).
    """
    run_cfg = configs(cfg, cfg.tiny_config)
    space, search, data = run_cfg.space, run_cfg.search, run_cfg.data
    out = search_dir(cfg, "tiny")
    if os.path.isdir(out):
        shutil.rmtree(out)  # a fresh search, never a resumed one
    log(f"[search] tiny space, {data.num_train}/{data.num_val} built-in images at {data.image_size[0]}x"
        f"{data.image_size[1]}, epochs (warm-up, stage 1, stage 2) = {cfg.search_epochs}, "
        f"limit_batches={search.limit_batches}")
    start = time.time()
    result = run_search(space, search, data, out, progress_bar=False, epoch_callback=lambda r: log(
        f"[search] stage {r['stage']} epoch {r['epoch']}/{r['epochs']}: val mIoU "
        f"{r['metrics'].get('val_miou', float('nan')):.4f} ({(time.time() - start) / 60:.1f} min)"))
    seconds = time.time() - start
    net = build_network(space, result.arch)
    run = {"space": space.name, "config": os.path.relpath(cfg.tiny_config, ROOT), "seconds": round(seconds, 1),
           "epochs": list(cfg.search_epochs), "limit_batches": search.limit_batches, "num_train": data.num_train,
           "num_val": data.num_val, "image_size": list(data.image_size), "batch_size": data.batch_size,
           "val_miou_supernet": result.val_miou, "params": count_params(net),
           "macs": count_macs(net, data.image_size, space.in_channels),
           "arch_path": os.path.relpath(os.path.join(out, "arch.json"), cfg.out_dir)}
    log(f"[search] {seconds / 60:.1f} min, found net {run['params']:,} parameters")
    return {"runs": {"tiny": run}}
