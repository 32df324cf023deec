"""Section ``gpu``: with CUDA, the Cityscapes supernet step time at its crops and batch, from which a full
Cityscapes search is projected (first, so a short lease gets it), then the latency table at ``gpu_size`` and
the tiny space's search cost; with or without CUDA, the same projection on this CPU (one core), from steps
timed at a smaller size."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from nni_rspnet.config import RunConfig
from nni_rspnet.search.driver import search_steps_per_epoch
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.seg.data import DataConfig

from . import search_cost
from .common import BenchmarkConfig, machine_info
from .latency import latency_table


def project_search_hours(step_s: Dict[str, float], search: SearchConfig, data: DataConfig,
                         num_train: int = 2975) -> Optional[Dict[str, float]]:
    """Hours of a full search from measured step times of the default search (``search_cost.DEFAULT``):
    its stage-1 step for warm-up and stage 1 (an over-estimate for the weights-only, single-path
    warm-up), its stage-2 step for stage 2; an epoch is as many steps as ``nni-rspnet search`` loops
    over ``num_train`` training images (``driver.search_steps_per_epoch``; Cityscapes: 2975 images)."""
    one, two = search_cost.DEFAULT[1], search_cost.DEFAULT[2]
    if one not in step_s or two not in step_s:
        return None
    steps = search_steps_per_epoch(data, search, num_train)
    seconds = steps * ((search.warmup_epochs + search.stage1_epochs) * step_s[one]
                       + (search.stage2_warmup_epochs + search.stage2_epochs) * step_s[two])
    return {"steps_per_epoch": steps, "hours": seconds / 3600}


def cpu_projection(cfg: BenchmarkConfig, log: Callable[[str], None] = print,
                   city_cfg: Optional[RunConfig] = None) -> Optional[Dict[str, Any]]:
    """Core-hours of a full Cityscapes search on this CPU, one thread.

    The default form's stage-1 and stage-2 steps of ``cfg.cityscapes_config`` are timed (process CPU time,
    one thread) at ``cfg.cpu_projection_size`` and batch ``cfg.cpu_projection_batch``, then scaled
    linearly in pixels x batch to the config's crop and batch (convolutions cost in proportion to the
    pixels they see; per-op overhead does not grow with them, so the scaling over-estimates a little).
    ``None`` when the measurement fails (its reason is logged)."""
    city_cfg = city_cfg or RunConfig.load(cfg.cityscapes_config)
    batch, size = city_cfg.data.batch_size, city_cfg.data.crop_size or [512, 1024]
    small, small_batch = cfg.cpu_projection_size, cfg.cpu_projection_batch
    try:
        table = search_cost.measure(cfg.cityscapes_config, only=tuple(search_cost.DEFAULT.values()), rounds=1,
                                    steps=2 if cfg.quick else 3, batch=small_batch, input_size=small, device="cpu",
                                    log=log)
    except RuntimeError as err:
        log(f"[gpu] no CPU projection: {str(err).splitlines()[0]}")
        return None
    scale = (size[0] * size[1] * batch) / (small[0] * small[1] * small_batch)
    step_s = {name: run["step_s"] * scale for name, run in table["runs"].items()}
    hours = project_search_hours(step_s, city_cfg.search, city_cfg.data)
    return {"measured_size": list(small), "measured_batch": small_batch, "scale": scale,
            "step_s_measured": {name: run["step_s"] for name, run in table["runs"].items()},
            "step_s_projected": step_s, "crop": list(size), "batch_size": batch, "projection": hours}


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    city_cfg = RunConfig.load(cfg.cityscapes_config)
    if not torch.cuda.is_available():
        log("[gpu] not measured: no CUDA device on this machine; projecting the Cityscapes search on this CPU")
        return {"measured": False, "why": "no CUDA device on this machine (torch.cuda.is_available() is False)",
                "cpu": cpu_projection(cfg, log, city_cfg), "search_epochs": _epochs(city_cfg.search)}
    # The Cityscapes steps first: the projection is the section's point, and a short lease gets it even if
    # a later part fails (it is logged as soon as it is known).
    batch, size = city_cfg.data.batch_size, city_cfg.data.crop_size or [512, 1024]
    try:
        city = search_cost.measure(cfg.cityscapes_config, only=tuple(search_cost.DEFAULT.values()), rounds=1,
                                   steps=3 if cfg.quick else 6, batch=batch,
                                   input_size=[128, 256] if cfg.quick else size, device="cuda", log=log)
        city_result = {"measured": True, "device": "cuda", "table": city}
        step_s = {name: run["step_s"] for name, run in city["runs"].items()}
        projection = project_search_hours(step_s, city_cfg.search, city_cfg.data)
        if projection:
            log(f"[gpu] projected full Cityscapes search: {projection['hours']:.1f} GPU hours "
                f"({projection['hours'] / 24:.2f} GPU-days)")
    except RuntimeError as err:
        log(f"[gpu] no Cityscapes step time: {str(err).splitlines()[0]}")
        city_result, projection = {"measured": False, "why": str(err).splitlines()[0]}, None
    table = latency_table(cfg, cfg.gpu_size, "cuda", None, log)
    cost = search_cost.run(cfg, log, device="cuda")
    return {"measured": True, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cuda": torch.version.cuda, "versions": machine_info()["versions"], "latency": table, "search_cost": cost,
            "cityscapes_cost": city_result, "projection": projection, "search_epochs": _epochs(city_cfg.search),
            "batch_size": batch, "crop": list(size), "cpu": cpu_projection(cfg, log, city_cfg)}


def _epochs(s: SearchConfig) -> list:
    return [s.warmup_epochs, s.stage1_epochs, s.stage2_warmup_epochs, s.stage2_epochs]
