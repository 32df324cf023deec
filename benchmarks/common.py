"""What every benchmark section shares: the settings, the run configurations, the results file and
the machine description."""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, List, Optional, Sequence

import torch

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import write_json
from nni_rspnet.space.arch import load_arch

# The quality section's quick sizes: the config's space, tiny data, a one-epoch search (plumbing only).
QUICK_QUALITY = ("data.num_train=32", "data.num_val=16", "data.image_size=[32,64]", "data.crop_size=[32,64]",
                 "data.batch_size=8", "data.val_batch_size=8", "search.warmup_epochs=0", "search.stage1_epochs=1",
                 "search.stage2_epochs=1", "search.limit_batches=2")
SECTIONS = ("search", "search_cost", "latency", "fidelity", "quality", "demo", "gpu")
# The groups of the quality section, in the order of its tables.
QUALITY_GROUPS = ("searched", "random", "plain_cnn", "plain_cnn_wide", "lraspp")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class BenchmarkConfig:
    """Sizes and budgets of the benchmark run (``quick()`` shrinks them to a smoke test).

    Attributes:
        out_dir: where results, searches and training runs go.
        markdown: the page to write (``BENCHMARKS.md``).
        tiny_config: the searched space (its data section gives the built-in data).
        cityscapes_config: the product's space, for reference rows of the latency table.
        light_config: the light Cityscapes space: its found networks (``search_spaces/found/<space>-*.json``),
            lightest and heaviest networks in the latency table.
        data_train, data_val: built-in images per split for the searches and the quality runs.
        image_size: ``[H, W]`` of the built-in images (searches and quality runs).
        search_epochs: ``(warmup, stage 1, stage 2)`` epochs of both searches.
        search_limit_batches: batches per epoch and split of the search (0 = all).
        latency_size: ``[H, W]`` of the latency table.
        latency_classes: output classes of every network in the latency table (Cityscapes: 19).
        latency_threads: torch CPU threads while timing.
        latency_rounds, latency_warmup: timed and untimed interleaved rounds.
        latency_int8: also time int8 onnxruntime (found networks and peers).
        latency_cpu_clock: also time with one thread by its CPU time (robust to other jobs).
        fidelity_archs: random architectures per space of the cost-model fidelity section.
        fidelity_rounds: interleaved rounds of its whole-network timings and cost tables.
        fidelity_light_size: ``[H, W]`` at which the light Cityscapes space is measured there (the tiny
            space: its YAML's ``data.image_size``, the size it is searched and deployed at).
        quality_config: the config of the quality section (default ``tiny_config``): its search, data and
            train sections are the budgets (see ``quality.py``).
        quality_datasets: its tasks, among ``builtin`` (digits) and ``shapes``.
        quality_epochs: training epochs of every quality run (``None``: the config's ``train.epochs``).
        quality_search_seeds: searches (``search.seed`` = 0, 1, ...) per task.
        quality_train_seeds: training seeds of every network of the section.
        quality_random: random architectures of similar cost per task.
        quality_groups: the groups whose networks are trained (an experiment may train only ``searched``,
            e.g. to compare two searches of the same protocol); all of them by default.
        quality_param_tolerance: "similar cost": parameters within this fraction of the searched mean.
        quality_rank_archs, quality_rank_epochs: architectures and training epochs of the rank check
            (0 architectures: no rank check).
        quality_calib_batches: BatchNorm recalibration batches of the supernet scores.
        quality_overrides: ``SECTION.KEY=VALUE`` overrides of the quality config (quick mode shrinks it).
        quality_jobs: jobs at once (worker processes, ``train_threads`` threads each).
        quality_found_dir: where the quoted architectures are written (``None``: nowhere).
        train_threads: torch threads of the search and the training runs (1: on a shared machine more
            threads spin for busy cores and run several times slower).
        demo_timeout_s: the demo's time limit.
        search_cost_rounds, search_cost_steps: interleaved rounds and DARTS steps per measurement of
            the search-cost section.
        gpu_size: ``[H, W]`` of the GPU latency table.
        cpu_projection_size, cpu_projection_batch: where the Cityscapes supernet's CPU steps are timed,
            to project a full Cityscapes search on this CPU (``gpu.cpu_projection``).
        train_overrides: ``train`` section keys to change for the quality runs (e.g. ``optimizer``).
        quick: smoke-test sizes (set by ``quick()``; recorded in the results).
    """

    out_dir: str = "runs/benchmark"
    markdown: str = "BENCHMARKS.md"
    tiny_config: str = os.path.join(ROOT, "search_spaces", "tiny.yaml")
    cityscapes_config: str = os.path.join(ROOT, "search_spaces", "cityscapes.yaml")
    light_config: str = os.path.join(ROOT, "search_spaces", "cityscapes_light.yaml")
    data_train: int = 1000
    data_val: int = 200
    image_size: List[int] = field(default_factory=lambda: [64, 128])
    search_epochs: List[int] = field(default_factory=lambda: [1, 2, 2])
    search_limit_batches: int = 10
    latency_size: List[int] = field(default_factory=lambda: [512, 1024])
    latency_classes: int = 19
    latency_threads: int = 2
    latency_rounds: int = 15
    latency_warmup: int = 2
    latency_int8: bool = True
    latency_cpu_clock: bool = True
    fidelity_archs: int = 16
    fidelity_rounds: int = 15
    fidelity_light_size: List[int] = field(default_factory=lambda: [512, 1024])
    quality_config: Optional[str] = None
    quality_datasets: Sequence[str] = ("builtin", "shapes")
    quality_epochs: Optional[int] = None
    quality_search_seeds: int = 3
    quality_train_seeds: int = 2
    quality_random: int = 5
    quality_groups: Sequence[str] = QUALITY_GROUPS
    quality_param_tolerance: float = 0.10
    quality_rank_archs: int = 8
    quality_rank_epochs: int = 5
    quality_calib_batches: int = 10
    quality_overrides: List[str] = field(default_factory=list)
    quality_jobs: int = 1
    quality_found_dir: Optional[str] = os.path.join(ROOT, "search_spaces", "found")
    train_threads: int = 1
    demo_timeout_s: float = 1500.0
    search_cost_rounds: int = 2
    search_cost_steps: int = 4
    gpu_size: List[int] = field(default_factory=lambda: [1024, 2048])
    cpu_projection_size: List[int] = field(default_factory=lambda: [128, 256])
    cpu_projection_batch: int = 2
    train_overrides: Dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def quick_version(self) -> "BenchmarkConfig":
        """The smoke-test sizes: tiny data, one epoch, few rounds, small latency inputs."""
        return replace(self, data_train=16, data_val=8, image_size=[32, 64], search_epochs=[0, 1, 1],
                       search_limit_batches=2, latency_size=[64, 128], latency_rounds=3,
                       latency_warmup=1, latency_int8=False, fidelity_archs=3,
                       fidelity_rounds=2, fidelity_light_size=[64, 128], quality_epochs=1, quality_search_seeds=2, quality_train_seeds=1,
                       quality_random=2, quality_rank_archs=3, quality_rank_epochs=1, quality_calib_batches=2,
                       quality_overrides=list(QUICK_QUALITY), quality_found_dir=None, gpu_size=[128, 256],
                       cpu_projection_size=[64, 128], cpu_projection_batch=2,
                       quick=True)


def results_path(cfg: BenchmarkConfig) -> str:
    return os.path.join(cfg.out_dir, "results.json")


def load_results(cfg: BenchmarkConfig) -> Dict[str, Any]:
    """The stored section results (``{}`` when there are none yet)."""
    path = results_path(cfg)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def store_result(cfg: BenchmarkConfig, section: str, result: Dict[str, Any]) -> None:
    """Merges one section's result into ``results.json`` (atomically, under a lock, re-reading the file
    first: sections may run in separate processes at the same time)."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    result = dict(result, finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  quick=cfg.quick)
    with open(os.path.join(cfg.out_dir, ".results.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(cfg)
        results[section] = result
        write_json(results_path(cfg), results, indent=1, sort_keys=True)


def machine_info() -> Dict[str, Any]:
    """CPU model, cores, memory, GPU and the versions that matter for the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("nni", "pytorch_lightning", "torchvision", "torchmetrics"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            versions[name] = "not installed"
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "os": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "versions": versions, "load_average": load}


# --- configs -----------------------------------------------------------------------------------------

def configs(cfg: BenchmarkConfig, path: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The run configuration of a space YAML with the benchmark's sizes.

    Data and training always come from the tiny YAML (the built-in digits), so the search and every
    quality run see the same images with the same optimiser.
    """
    own, tiny = RunConfig.load(path, list(overrides)), RunConfig.load(cfg.tiny_config)
    sections = own.to_dict()
    warmup, stage1, stage2 = cfg.search_epochs
    sections["search"].update(warmup_epochs=warmup, stage1_epochs=stage1, stage2_epochs=stage2,
                              limit_batches=cfg.search_limit_batches, latency_input_size=None, lut=None,
                              threads=cfg.train_threads)
    sections["data"] = dict(tiny.to_dict()["data"], num_train=cfg.data_train, num_val=cfg.data_val,
                            image_size=list(cfg.image_size), crop_size=list(cfg.image_size))
    sections["train"] = dict(tiny.to_dict()["train"], epochs=cfg.quality_epochs or tiny.train.epochs,
                             threads=cfg.train_threads,
                             warmup_epochs=min(tiny.train.warmup_epochs, 1.0), **cfg.train_overrides)
    return RunConfig.from_sections(sections, f"{path} (benchmark sizes)")


def search_dir(cfg: BenchmarkConfig, name: str) -> str:
    """Where the ``search`` section leaves the search of space ``name`` (its ``arch.json``)."""
    return os.path.join(cfg.out_dir, f"search_{name}")


def found_arch(cfg: BenchmarkConfig, name: str) -> Optional[Dict[str, Any]]:
    """The architecture the ``search`` section found for space ``name``, or ``None`` before it ran."""
    path = os.path.join(search_dir(cfg, name), "arch.json")
    return load_arch(path) if os.path.isfile(path) else None
