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
    """Hours of a full search from measured step times of the default search (``search_cost.DEFAULT``):
    its stage-1 step for warm-up and stage 1 (an over-estimate for the weights-only, single-path
    warm-up), its stage-2 step for stage 2; one step per training batch (Cityscapes: 2975 images)."""
    one, two = search_cost.DEFAULT[1], search_cost.DEFAULT[2]
    if one not in step_s or two not in step_s:
        return None
    steps = -(-num_train // batch_size)
    seconds = steps * ((search.warmup_epochs + search.stage1_epochs) * step_s[one]
                       + (search.stage2_warmup_epochs + search.stage2_epochs) * step_s[two])
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
        city = search_cost.measure(cfg.cityscapes_config, only=tuple(search_cost.DEFAULT.values()), rounds=1,
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
