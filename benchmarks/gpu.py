"""Section ``gpu``: with CUDA, the latency table at ``gpu_size``, the tiny space's search cost, and the
Cityscapes supernet step time at its crops, from which a full Cityscapes search is projected."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from nni_rspnet.config import RunConfig
from nni_rspnet.search.settings import SearchConfig

from . import search_cost
from .common import BenchmarkConfig
from .latency import latency_table


def project_search_hours(step_s: Dict[str, float], search: SearchConfig, num_train: int = 2975,
                         batch_size: int = 8) -> Optional[Dict[str, float]]:
    """Hours of a full search from measured step times: ``stage1_d2`` for warm-up and stage 1 (an
    over-estimate for the weights-only warm-up), ``stage2_d2`` for stage 2; one step per training
    batch (Cityscapes: 2975 training images)."""
    if "stage1_d2" not in step_s or "stage2_d2" not in step_s:
        return None
    steps = -(-num_train // batch_size)
    seconds = steps * ((search.warmup_epochs + search.stage1_epochs) * step_s["stage1_d2"]
                       + (search.stage2_warmup_epochs + search.stage2_epochs) * step_s["stage2_d2"])
    return {"steps_per_epoch": steps, "hours": seconds / 3600}


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    if not torch.cuda.is_available():
        log("[gpu] not measured: no CUDA device on this machine")
        return {"measured": False, "why": "no CUDA device on this machine (torch.cuda.is_available() is False)"}
    table = latency_table(cfg, cfg.gpu_size, "cuda", None, log)
    cost = search_cost.run(cfg, log, device="cuda")
    city_cfg = RunConfig.load(cfg.cityscapes_config)
    batch, size = city_cfg.data.batch_size, city_cfg.data.crop_size or [512, 1024]
    try:
        city = search_cost.measure(cfg.cityscapes_config, only=("stage1_d2", "stage2_d2"), rounds=1,
                                   steps=3 if cfg.quick else 6, batch=batch,
                                   input_size=[128, 256] if cfg.quick else size, device="cuda", log=log)
        city_result = {"measured": True, "device": "cuda", "table": city}
        step_s = {name: run["step_s"] for name, run in city["runs"].items()}
        projection = project_search_hours(step_s, city_cfg.search, batch_size=batch)
    except RuntimeError as err:
        city_result, projection = {"measured": False, "why": str(err).splitlines()[0]}, None
    s = city_cfg.search
    return {"measured": True, "gpu": torch.cuda.get_device_name(0), "latency": table, "search_cost": cost,
            "cityscapes_cost": city_result, "projection": projection,
            "search_epochs": [s.warmup_epochs, s.stage1_epochs, s.stage2_warmup_epochs, s.stage2_epochs],
            "batch_size": batch, "crop": list(size)}
