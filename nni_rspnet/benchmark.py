"""Benchmarks of issue 6: search cost, the found network against torchvision peers, quality at an
equal training budget, the demo's wall time and (with CUDA) GPU timings; writes ``BENCHMARKS.md``.

Every section stores its numbers in ``<out_dir>/results.json`` (merged, written atomically) and
``BENCHMARKS.md`` is rendered from that file, so sections can run one at a time
(``nni-rspnet benchmark --only latency``) and the page always shows the latest run of each. The
sections:

* ``search``: the search that produces "the found network": the tiny space on the built-in data
  (what the demo does), with a few batches per epoch; its ``arch.json`` lands in
  ``<out_dir>/search_tiny``. The Cityscapes space is represented in the latency table by its
  lightest and a random architecture (its supernet is beyond a shared 2-core CPU).
* ``search_cost``: supernet step time and peak memory (RSP depth 2 against 0, ``TwoStageDarts``
  against NNI's stock DARTS), measured by ``benchmarks/search_cost.py`` (run as it is, not copied).
* ``latency``: the found networks against LR-ASPP- and DeepLabV3-MobileNetV3-Large (no weights):
  parameters, MACs and CPU latency, timed interleaved over many rounds; medians and ratios.
* ``quality``: the searched architecture, random architectures of the same space and LR-ASPP from
  scratch, trained by ``train.train_network`` with one budget; mIoU mean and spread over seeds.
* ``demo``: the wall time of ``nni-rspnet demo`` in a subprocess (when the command exists).
* ``gpu``: with CUDA, the latency table at 1024x2048 and the supernet step time, from which a full
  Cityscapes search is projected; without, the section says so.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .fileio import atomic_write_text

SECTIONS = ("search", "search_cost", "latency", "quality", "demo", "gpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The goals of issue 6 (see BENCHMARKS.md's first table).
GOAL_RSP_COST = 0.55          # RSP depth 2 / depth 0 supernet step time and memory
GOAL_PARAMS = 0.87e6          # parameters of the found network
GOAL_LATENCY_RATIO = 0.5      # found network / LR-ASPP latency
GOAL_MIOU_MARGIN = 0.01       # searched >= best random + 1 mIoU point


@dataclass
class BenchmarkConfig:
    """Sizes and budgets of the benchmark run (``quick()`` shrinks them to a smoke test).

    Attributes:
        out_dir: where results, searches and training runs go.
        markdown: the page to write (``BENCHMARKS.md``).
        tiny_config: the searched space (its data section gives the built-in data).
        cityscapes_config: the product's space, for reference rows of the latency table.
        data_train, data_val: built-in images per split for the searches and the quality runs.
        image_size: ``[H, W]`` of the built-in images (searches and quality runs).
        search_epochs: ``(warmup, stage 1, stage 2)`` epochs of both searches.
        search_limit_batches: batches per epoch and split of the search (0 = all).
        latency_size: ``[H, W]`` of the latency table.
        latency_classes: output classes of every network in the latency table (Cityscapes: 19).
        latency_threads: torch CPU threads while timing.
        latency_rounds, latency_warmup: timed and untimed interleaved rounds.
        quality_epochs: training epochs of every quality run (the equal budget).
        quality_searched_seeds, quality_peer_seeds: training seeds of the searched net and LR-ASPP.
        quality_random: number of random architectures (one training seed each).
        train_threads: torch threads of the search and the training runs (1: on a shared machine more
            threads spin for busy cores and run several times slower).
        demo_timeout_s: the demo's time limit.
        search_cost_rounds, search_cost_steps, search_cost_timeout_s: ``benchmarks/search_cost.py``'s
            interleaved rounds, DARTS steps per measurement, and time limit.
        search_cost_markdown: read the CPU search-cost tables from this earlier output of
            ``benchmarks/search_cost.py`` instead of running it again.
        gpu_size: ``[H, W]`` of the GPU latency table.
        train_overrides: ``train`` section keys to change for the quality runs (e.g. ``optimizer``).
        quick: smoke-test sizes (set by ``quick()``; recorded in the results).
    """

    out_dir: str = "runs/benchmark"
    markdown: str = "BENCHMARKS.md"
    tiny_config: str = os.path.join(ROOT, "search_spaces", "tiny.yaml")
    cityscapes_config: str = os.path.join(ROOT, "search_spaces", "cityscapes.yaml")
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
    quality_epochs: int = 5
    quality_searched_seeds: int = 2
    quality_peer_seeds: int = 1
    quality_random: int = 5
    train_threads: int = 1
    demo_timeout_s: float = 1500.0
    search_cost_rounds: int = 2
    search_cost_steps: int = 4
    search_cost_timeout_s: float = 1500.0
    search_cost_markdown: Optional[str] = None
    gpu_size: List[int] = field(default_factory=lambda: [1024, 2048])
    train_overrides: Dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def quick_version(self) -> "BenchmarkConfig":
        """The smoke-test sizes: tiny data, one epoch, few rounds, small latency inputs."""
        return replace(self, data_train=16, data_val=8, image_size=[32, 64], search_epochs=[0, 1, 1],
                       search_limit_batches=2, latency_size=[64, 128], latency_rounds=3,
                       latency_warmup=1, quality_epochs=1, quality_searched_seeds=1, quality_peer_seeds=1,
                       quality_random=2, gpu_size=[128, 256], quick=True)


# --- results file ------------------------------------------------------------------------------------

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
    import fcntl

    os.makedirs(cfg.out_dir, exist_ok=True)
    result = dict(result, finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  quick=cfg.quick)
    with open(os.path.join(cfg.out_dir, ".results.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(cfg)
        results[section] = result
        atomic_write_text(results_path(cfg), json.dumps(results, indent=1, sort_keys=True) + "\n")


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
            from importlib.metadata import version

            versions[name] = version(name.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a missing package is reported as missing
            versions[name] = "not installed"
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib, "os": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "versions": versions, "load_average": load}


# --- configs -----------------------------------------------------------------------------------------

def _configs(cfg: BenchmarkConfig, path: str, overrides: Sequence[str] = ()):
    """``(space, search, data, train)`` configs of a space YAML with the benchmark's sizes.

    Data and training always come from the tiny YAML (the built-in digits), so the search and every
    quality run see the same images with the same optimiser.
    """
    from .schema import from_mapping, read_sections
    from .seg.data import DataConfig
    from .search.settings import SearchConfig
    from .space.model import SpaceConfig
    from .seg.train import TrainConfig

    sections = read_sections(path, list(overrides))
    tiny = read_sections(cfg.tiny_config)
    data = dict(tiny["data"], num_train=cfg.data_train, num_val=cfg.data_val, image_size=list(cfg.image_size),
                crop_size=list(cfg.image_size))
    warmup, stage1, stage2 = cfg.search_epochs
    search = dict(sections["search"], warmup_epochs=warmup, stage1_epochs=stage1, stage2_epochs=stage2,
                  limit_batches=cfg.search_limit_batches, latency_input_size=None, lut=None,
                  threads=cfg.train_threads)
    train = dict(tiny["train"], epochs=cfg.quality_epochs, threads=cfg.train_threads,
                 warmup_epochs=min(float(tiny["train"].get("warmup_epochs", 0)), 1.0))
    train.update(cfg.train_overrides)
    return (from_mapping(SpaceConfig, sections["space"], f"{path}: space"),
            from_mapping(SearchConfig, search, f"{path}: search"),
            from_mapping(DataConfig, data, "benchmark data"),
            from_mapping(TrainConfig, train, "benchmark train"))


# --- section: search -----------------------------------------------------------------------------------

def _search_dir(cfg: BenchmarkConfig, name: str) -> str:
    return os.path.join(cfg.out_dir, f"search_{name}")


def run_search_section(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Searches the tiny space on the built-in data (as the demo does): "the found network".

    The Cityscapes space is not searched: its supernet is far beyond a shared 2-core CPU, and even
    its lightest architecture is several times the parameter goal (the latency section shows it).
    """
    from .space.arch import build_network
    from .measure import count_macs, count_params
    from .search.driver import run_search

    space, search, data, _ = _configs(cfg, cfg.tiny_config)
    out = _search_dir(cfg, "tiny")
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


def _found_arch(cfg: BenchmarkConfig, name: str) -> Optional[Dict[str, Any]]:
    from .space.arch import load_arch

    path = os.path.join(_search_dir(cfg, name), "arch.json")
    return load_arch(path) if os.path.isfile(path) else None


# --- section: search cost (benchmarks/search_cost.py) ---------------------------------------------------

def _parse_markdown_tables(text: str) -> List[List[Dict[str, str]]]:
    """Every pipe table of a markdown text, as lists of ``{column: cell}`` rows."""
    tables: List[List[Dict[str, str]]] = []
    header: Optional[List[str]] = None
    for line in text.splitlines() + [""]:
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            tables.append([])
        elif not all(set(c) <= set("-: ") for c in cells):
            tables[-1].append(dict(zip(header, cells)))
    return tables


def _run_search_cost_script(cfg: BenchmarkConfig, device: str, args: Sequence[str], tag: str,
                            log: Callable[[str], None]) -> Dict[str, Any]:
    """Runs ``benchmarks/search_cost.py ARGS --device DEVICE`` and keeps its markdown and parsed tables."""
    script = os.path.join(ROOT, "benchmarks", "search_cost.py")
    if not os.path.isfile(script):
        log("[search_cost] not measured: benchmarks/search_cost.py is missing")
        return {"measured": False, "why": "benchmarks/search_cost.py is missing"}
    os.makedirs(cfg.out_dir, exist_ok=True)
    out = os.path.abspath(os.path.join(cfg.out_dir, f"search_cost_{tag}_{device}.md"))
    cmd = [sys.executable, script, *args, "--device", device, "--out", out]
    shown = "python " + " ".join(os.path.relpath(c, ROOT) if c in (script, out) else c for c in cmd[1:])
    log(f"[search_cost] {shown}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=cfg.search_cost_timeout_s)
    except subprocess.TimeoutExpired:
        return {"measured": False, "why": f"benchmarks/search_cost.py ran past {cfg.search_cost_timeout_s:.0f} s"}
    if proc.returncode != 0 or not os.path.isfile(out):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        log(f"[search_cost] failed (status {proc.returncode}): {' / '.join(tail)}")
        return {"measured": False, "why": f"benchmarks/search_cost.py failed (status {proc.returncode})",
                "tail": tail}
    return dict(_read_search_cost_markdown(out), measured=True, device=device, command=f"`{shown}`")


def _read_search_cost_markdown(path: str) -> Dict[str, Any]:
    """The result of an earlier ``benchmarks/search_cost.py --out PATH`` run."""
    with open(path, encoding="utf-8") as f:
        markdown = f.read()
    tables = _parse_markdown_tables(markdown)
    ratios = {row.get("ratio", ""): float(row["value"]) for t in tables for row in t if "value" in row}
    steps = {}
    for row in (row for t in tables for row in t if "configuration" in row):
        key = next((k for k in row if k.startswith("step time")), None)  # "step time (s)", "(s, CPU)", ...
        if key is not None:
            steps[row["configuration"]] = float(row[key])
    return {"ratios": ratios, "step_s": steps, "markdown": markdown}


def run_search_cost_section(cfg: BenchmarkConfig, device: str = "cpu",
                            log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Supernet step time and peak memory of the tiny space, by ``benchmarks/search_cost.py`` (each
    configuration in a fresh subprocess, for clean peak memory; interleaved rounds, medians), or read
    from ``cfg.search_cost_markdown`` when that file exists (the script's own output, not re-run)."""
    if cfg.search_cost_markdown and device == "cpu":
        if not os.path.isfile(cfg.search_cost_markdown):
            raise FileNotFoundError(f"{cfg.search_cost_markdown}: search-cost markdown not found (write it with "
                                    "python benchmarks/search_cost.py --out PATH)")
        log(f"[search_cost] reading {cfg.search_cost_markdown}")
        written = _dt.datetime.fromtimestamp(os.path.getmtime(cfg.search_cost_markdown), _dt.timezone.utc)
        return dict(_read_search_cost_markdown(cfg.search_cost_markdown), measured=True, device=device,
                    command=f"`python benchmarks/search_cost.py` (its output `{cfg.search_cost_markdown}`, "
                            f"written {written:%Y-%m-%d %H:%M} UTC)")
    args = (["--rounds", "1", "--steps", "2", "--input-size", "32", "64", "--batch", "2"] if cfg.quick else
            ["--rounds", str(cfg.search_cost_rounds), "--steps", str(cfg.search_cost_steps)])
    return _run_search_cost_script(cfg, device, args, "tiny", log)


def project_search_hours(step_s: Dict[str, float], search: Any, num_train: int = 2975,
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


# --- section: latency ------------------------------------------------------------------------------------

class DictOutput(nn.Module):
    """Wraps a torchvision segmentation model (which returns ``{"out": ..., "aux": ...}``) so it
    returns the logits tensor like every network of this package."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def torchvision_peer(name: str, num_classes: int) -> nn.Module:
    """``lraspp`` or ``deeplabv3``: the MobileNetV3-Large torchvision model with no weights."""
    from torchvision.models import segmentation

    if name == "lraspp":
        model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    elif name == "deeplabv3":
        model = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                          num_classes=num_classes, aux_loss=False)
    else:
        raise ValueError(f"unknown peer {name!r}; expected 'lraspp' or 'deeplabv3'")
    return DictOutput(model)


PEER_NAMES = {"lraspp": "LR-ASPP-MobileNetV3-Large", "deeplabv3": "DeepLabV3-MobileNetV3-Large"}


@torch.inference_mode()
def interleaved_latency(models: Dict[str, nn.Module], x: torch.Tensor, rounds: int, warmup: int = 1,
                        threads: Optional[int] = 2, log: Callable[[str], None] = print) -> Dict[str, List[float]]:
    """Times every model once per round, in turn, over ``rounds`` rounds (after ``warmup`` untimed
    rounds); returns name -> list of milliseconds.

    Interleaving makes the machine's load drift hit every model alike, so ratios of medians hold up
    on a shared machine where single timings drift by a quarter.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    cuda = x.is_cuda
    times: Dict[str, List[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
        for r in range(warmup + rounds):
            for name, m in models.items():
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                m(x)
                if cuda:
                    torch.cuda.synchronize()
                if r >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
            if r >= warmup and (r - warmup + 1) % 5 == 0:
                log(f"[latency] round {r - warmup + 1}/{rounds}: " + ", ".join(
                    f"{n} {statistics.median(t):.0f} ms" for n, t in times.items()))
    finally:
        torch.set_num_threads(old_threads)
    return times


def lightest_arch(config) -> Dict[str, Any]:
    """The cheapest architecture of a space: ``skip_connect`` (else the first op) on every edge, the
    first inputs of every input choice: a lower bound on what a search of that space can return."""
    from .space.arch import space_spec

    return {label: (("skip_connect" if "skip_connect" in c.names else c.names[0]) if c.is_op
                    else list(range(c.n_chosen))) for label, c in space_spec(config).items()}


def _latency_models(cfg: BenchmarkConfig, num_classes: int) -> Tuple[Dict[str, nn.Module], Dict[str, str]]:
    """The networks of the latency table (name -> network, name -> what it is)."""
    from .space.arch import build_network, random_arch
    from .space.model import SpaceConfig

    models: Dict[str, nn.Module] = {}
    notes: Dict[str, str] = {}
    classes = [f"space.num_classes={num_classes}", "space.aux_heads=false"]
    arch = _found_arch(cfg, "tiny")
    if arch is not None:
        models["found (tiny)"] = build_network(SpaceConfig.from_yaml(cfg.tiny_config, classes), arch)
        notes["found (tiny)"] = "tiny space, the searched arch (search section)"
    space = SpaceConfig.from_yaml(cfg.cityscapes_config, classes)
    models["cityscapes space, lightest"] = build_network(space, lightest_arch(space))
    notes["cityscapes space, lightest"] = "every op skip_connect: the floor of that space"
    models["cityscapes space, random"] = build_network(space, random_arch(space, 0))
    notes["cityscapes space, random"] = "random_arch(seed=0)"
    for peer in ("lraspp", "deeplabv3"):
        torch.manual_seed(0)
        models[PEER_NAMES[peer]] = torchvision_peer(peer, num_classes)
        notes[PEER_NAMES[peer]] = "torchvision, weights=None"
    return models, notes


def latency_table(cfg: BenchmarkConfig, size: Sequence[int], device: str = "cpu", threads: Optional[int] = 2,
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Parameters, MACs and interleaved latency of the found networks and the peers at ``size``."""
    from .measure import count_macs, count_params

    models, notes = _latency_models(cfg, cfg.latency_classes)
    h, w = int(size[0]), int(size[1])
    rows = []
    for name, m in models.items():
        m.to(device)
        rows.append({"name": name, "what": notes[name], "params": count_params(m),
                     "macs": count_macs(m, (h, w), 3, device)})
    log(f"[latency] {len(models)} networks at {h}x{w} on {device}, {threads} thread(s), "
        f"{cfg.latency_rounds} interleaved rounds")
    x = torch.randn(1, 3, h, w, device=device)
    times = interleaved_latency(models, x, cfg.latency_rounds, cfg.latency_warmup, threads, log)
    ref = statistics.median(times[PEER_NAMES["lraspp"]])
    for row in rows:
        t = times[row["name"]]
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        row.update(median_ms=statistics.median(t), q1_ms=q[0], q3_ms=q[2], ratio=statistics.median(t) / ref,
                   # per-round ratios: their median is robust to load that changes between rounds
                   round_ratio=statistics.median(a / b for a, b in zip(t, times[PEER_NAMES["lraspp"]])))
    return {"size": [h, w], "device": device, "threads": threads, "rounds": cfg.latency_rounds,
            "warmup": cfg.latency_warmup, "classes": cfg.latency_classes, "rows": rows}


def run_latency_section(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    return latency_table(cfg, cfg.latency_size, "cpu", cfg.latency_threads, log)


# --- section: quality ------------------------------------------------------------------------------------

def run_quality_section(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Trains the searched net, random nets of the same space and LR-ASPP with one budget."""
    from .space.arch import build_network, random_arch
    from .measure import count_macs, count_params
    from .seg.train import train_network

    space, _, data, train = _configs(cfg, cfg.tiny_config)
    searched = _found_arch(cfg, "tiny")
    # Ordered so that a run cut short still has one of each kind: first seeds first, extra seeds last.
    searched_runs = [("searched", "searched (tiny)", seed, lambda: build_network(space, searched), searched)
                     for seed in range(cfg.quality_searched_seeds)] if searched is not None else []
    peer_runs = [("lraspp", PEER_NAMES["lraspp"], seed, lambda: torchvision_peer("lraspp", space.num_classes), None)
                 for seed in range(cfg.quality_peer_seeds)]
    random_runs = [("random", f"random seed {i}", 0, lambda a=arch: build_network(space, a), arch)
                   for i, arch in enumerate(random_arch(space, i) for i in range(cfg.quality_random))]
    plan = searched_runs[:1] + peer_runs[:1] + random_runs + searched_runs[1:] + peer_runs[1:]
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
                               space=space.to_dict() if arch is not None else None, arch=arch)
        best = max((r["val_miou"] for r in result["history"] if r.get("val_miou") is not None), default=None)
        last = result["history"][-1] if result["history"] else {}
        rows.append({"kind": kind, "name": name, "seed": seed, "params": params, "macs": macs,
                     "val_miou": result["val_miou"], "best_val_miou": best, "val_loss": last.get("val_loss"),
                     "pixel_accuracy": _pixel_accuracy(net, data), "epochs": result["epochs"],
                     "seconds": round(result["seconds"], 1)})
        log(f"[quality] {name} seed {seed}: val mIoU {result['val_miou']:.4f} after {result['epochs']} epochs, "
            f"{result['seconds'] / 60:.1f} min")
        # Stored after every run, so a run cut short still leaves the finished ones on the page.
        store_result(cfg, "quality", dict(info, rows=rows, complete=False))
    return dict(info, rows=rows, complete=True)


@torch.inference_mode()
def _pixel_accuracy(net: nn.Module, data: Any) -> float:
    """Share of labelled validation pixels predicted right (moves before mIoU does: a network still
    predicting mostly background already gets the easy digit pixels)."""
    from .seg.data import build_datasets, build_loaders

    train_set, val_set, _ = build_datasets(data)
    _, loader = build_loaders(data, train_set, val_set, shuffle=False)
    net.eval()
    right = total = 0
    for x, y in loader:
        valid = y != 255
        right += int(((net(x).argmax(1) == y) & valid).sum())
        total += int(valid.sum())
    return right / max(total, 1)


# --- section: demo ----------------------------------------------------------------------------------------

def run_demo_section(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Times ``nni-rspnet demo`` (``--fast`` in quick mode) in a subprocess, when the command exists."""
    from .cli import COMMANDS

    if "demo" not in COMMANDS:
        log("[demo] not measured: there is no `nni-rspnet demo` command yet")
        return {"measured": False, "why": "no `nni-rspnet demo` command in this version"}
    out = os.path.join(cfg.out_dir, "demo")
    cmd = [sys.executable, "-m", "nni_rspnet.cli", "demo", "--out", out] + (["--fast"] if cfg.quick else [])
    log(f"[demo] {' '.join(cmd[1:])}")
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.demo_timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"measured": True, "ok": False, "seconds": cfg.demo_timeout_s, "command": " ".join(cmd[1:]),
                "why": f"timed out after {cfg.demo_timeout_s:.0f} s"}
    seconds = time.time() - start
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    summary = None
    if proc.returncode == 0 and os.path.isfile(os.path.join(out, "summary.json")):
        with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
    return {"measured": True, "ok": proc.returncode == 0, "returncode": proc.returncode,
            "seconds": round(seconds, 1), "command": "nni-rspnet " + " ".join(cmd[3:]), "tail": tail,
            "load_average": [round(x, 2) for x in os.getloadavg()], "summary": summary}


# --- section: gpu ----------------------------------------------------------------------------------------

def run_gpu_section(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """With CUDA: the latency table at ``gpu_size``, the tiny space's search-cost tables, and the
    Cityscapes supernet step time at 512x1024 crops, from which a full Cityscapes search is projected."""
    if not torch.cuda.is_available():
        log("[gpu] not measured: no CUDA device on this machine")
        return {"measured": False, "why": "no CUDA device on this machine (torch.cuda.is_available() is False)"}
    from .schema import load_section, read_sections
    from .search.settings import SearchConfig

    table = latency_table(cfg, cfg.gpu_size, "cuda", None, log)
    cost = run_search_cost_section(cfg, "cuda", log)
    search = load_section(SearchConfig, cfg.cityscapes_config, "search")
    data = read_sections(cfg.cityscapes_config).get("data", {})
    batch = int(data.get("batch_size", 8))
    size = data.get("crop_size") or [512, 1024]
    city = _run_search_cost_script(
        cfg, "cuda", ["--config", cfg.cityscapes_config, "--only", "stage1_d2", "stage2_d2", "--rounds", "1",
                      "--steps", "3" if cfg.quick else "6", "--batch", str(batch), "--input-size",
                      *(map(str, [128, 256] if cfg.quick else size))], "cityscapes", log)
    projection = project_search_hours(city.get("step_s", {}), search, batch_size=batch) if city.get("measured") \
        else None
    return {"measured": True, "gpu": torch.cuda.get_device_name(0), "latency": table, "search_cost": cost,
            "cityscapes_cost": city, "projection": projection,
            "search_epochs": [search.warmup_epochs, search.stage1_epochs, search.stage2_warmup_epochs,
                              search.stage2_epochs], "batch_size": batch, "crop": list(size)}


RUNNERS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "search": run_search_section, "search_cost": run_search_cost_section, "latency": run_latency_section,
    "quality": run_quality_section, "demo": run_demo_section, "gpu": run_gpu_section}


def run_benchmark(cfg: BenchmarkConfig, sections: Sequence[str] = SECTIONS,
                  log: Callable[[str], None] = print) -> str:
    """Runs ``sections`` in order, stores each result as it finishes, writes and returns the page.

    Raises:
        ValueError: an unknown section name.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; expected some of {list(SECTIONS)}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    for section in sections:
        start = time.time()
        result = RUNNERS[section](cfg, log=log)
        result["section_seconds"] = round(time.time() - start, 1)
        store_result(cfg, section, result)
        log(render_section(section, result, load_results(cfg)))
    page = render_page(load_results(cfg), machine_info(), cfg)
    atomic_write_text(cfg.markdown, page)
    log(f"wrote {cfg.markdown}")
    return page


# --- rendering -------------------------------------------------------------------------------------------

def _g(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / 1e9:.2f} G"


def _mean_spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)} seeds)"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_search(r: Dict[str, Any]) -> str:
    rows = []
    for name, run in r.get("runs", {}).items():
        ep = run["epochs"]
        per_epoch = (f"{run['limit_batches']} x {run['batch_size']} images" if run["limit_batches"]
                     else f"all ({run['num_train']})")
        miou = run.get("val_miou_supernet")
        rows.append([name, f"`{run['config']}`",
                     f"{run['num_train']}/{run['num_val']} at {run['image_size'][0]}x{run['image_size'][1]}",
                     f"{ep[0]}+{ep[1]}+{ep[2]}", per_epoch, f"{run['seconds'] / 60:.1f} min",
                     "n/a" if miou is None else f"{miou:.4f}", f"{run['params']:,}",
                     f"{run['macs'] / 1e6:.1f} M", f"`{run['arch_path']}`"])
    return _table(["search", "space", "built-in images (train/val)", "epochs (warm-up+stage 1+stage 2)",
                   "batches per epoch and split", "wall time", "supernet val mIoU", "found net params (11 classes)",
                   "MACs", "arch (under the results folder)"], rows)


def render_search_cost(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    body = r["markdown"].strip()
    if body.startswith("# "):  # the script's title becomes a sentence under this page's heading
        first, _, rest = body.partition("\n")
        body = f"Measured by {r['command']}: {first[2:]}.\n{rest}"
    return body


def render_latency(r: Dict[str, Any]) -> str:
    rows = [[row["name"], f"{row['params'] / 1e6:.3f} M", _g(row["macs"]),
             f"{row['median_ms']:.1f} ({row['q1_ms']:.0f}..{row['q3_ms']:.0f})", f"{row['ratio']:.2f}x",
             f"{row['round_ratio']:.2f}x"] for row in r["rows"]]
    h, w = r["size"]
    return (f"{h}x{w} input, {r['classes']} classes, {r['device']}, {r['threads'] or 'default'} thread(s), "
            f"{r['rounds']} interleaved rounds after {r['warmup']} warm-up rounds.\n\n"
            + _table(["network", "params", "MACs", "latency ms, median (IQR)", "median / LR-ASPP median",
                      "median of per-round ratios"], rows))


def render_quality(r: Dict[str, Any]) -> str:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in r["rows"]:
        groups.setdefault(row["name"], []).append(row)
    rows = []
    for name, runs in groups.items():
        vals = [x["val_miou"] for x in runs if x["val_miou"] is not None]
        losses = [x["val_loss"] for x in runs if x.get("val_loss") is not None]
        accs = [x["pixel_accuracy"] for x in runs if x.get("pixel_accuracy") is not None]
        rows.append([name, f"{runs[0]['params']:,}", f"{runs[0]['macs'] / 1e6:.1f} M", _mean_spread(vals),
                     ", ".join(f"{x['val_miou']:.4f}" for x in runs if x["val_miou"] is not None),
                     f"{statistics.mean(losses):.3f}" if losses else "n/a",
                     f"{statistics.mean(accs):.4f}" if accs else "n/a",
                     f"{statistics.mean(x['seconds'] for x in runs) / 60:.1f} min"])
    h, w = r["image_size"]
    return (f"Built-in data, {r['num_train']} train / {r['num_val']} val images at {h}x{w}, {r['epochs']} epochs, "
            f"{r['optimizer']} lr {r['lr']}, batch {r['batch_size']}, {r['threads']} thread(s) per run; "
            f"final-epoch val mIoU (11 classes).\n\n"
            + _table(["network", "params", "MACs", "val mIoU mean ± sd", "per seed", "val loss (mean)",
                      "pixel accuracy (mean)", "train time per run"], rows))


def render_demo(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    rc = r.get("returncode")
    if r.get("ok"):
        state = "finished"
    elif r.get("why"):
        state = f"not finished: {r['why']}"
    elif rc is not None and rc < 0:
        last = next((line.split("\r")[-1].strip() for line in reversed(r.get("tail", [])) if "it/s" in line
                     or "s/it" in line), "")
        last = last[: last.rfind("]") + 1] if "]" in last else last  # a progress bar, without what followed
        state = f"not finished: stopped by signal {-rc} from outside" + (f"; last progress `{last[:90]}`" if last
                                                                           else "")
    else:
        state = f"FAILED (exit status {rc})"
    return _table(["command", "wall time", "result"], [[f"`{r['command']}`", f"{r['seconds'] / 60:.1f} min", state]])


def render_gpu(r: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return f"Not measured: {r.get('why')}."
    parts = [f"On {r['gpu']}:", render_latency(r["latency"]), render_search_cost(r["search_cost"]),
             "Cityscapes space, 512x1024 crops:", render_search_cost(r["cityscapes_cost"])]
    p = r.get("projection")
    if p:
        w, s1, w2, s2 = r["search_epochs"]
        parts.append(f"Projected full Cityscapes search (2975 images, batch {r['batch_size']}, {p['steps_per_epoch']} "
                     f"steps per epoch, {w}+{s1} warm-up and stage-1 epochs at the stage-1 step time, {w2}+{s2} "
                     f"stage-2 epochs at the stage-2 step time): **{p['hours']:.1f} GPU hours** (data loading "
                     "not included).")
    return "\n\n".join(parts)


RENDERERS = {"search": render_search, "search_cost": render_search_cost, "latency": render_latency,
             "quality": render_quality, "demo": render_demo, "gpu": render_gpu}
TITLES = {"search": "The search behind \"the found network\"", "search_cost": "Search cost",
          "latency": "The found network against torchvision peers (CPU)",
          "quality": "Quality with an equal training budget", "demo": "The demo's wall time",
          "gpu": "GPU"}


def render_section(section: str, result: Dict[str, Any], results: Optional[Dict[str, Any]] = None) -> str:
    """One section as markdown (a heading, what was run, the table)."""
    text = RENDERERS[section](result)
    took = f", {result['section_seconds'] / 60:.1f} min" if result.get("section_seconds") else ""
    stamp = f"_Run {result.get('finished', '?')}{' (quick mode)' if result.get('quick') else ''}{took}._"
    return f"## {TITLES[section]}\n\n{stamp}\n\n{text}\n"


def goals(results: Dict[str, Any]) -> List[List[str]]:
    """The goals of issue 6, each with the measured value and whether it is met."""
    rows: List[List[str]] = []
    cost = results.get("search_cost", {})
    ratios = cost.get("ratios", {}) if cost.get("measured") else {}
    rsp = {k: v for k, v in ratios.items() if "depth 2 / depth 0" in k and "saved" not in k}
    worst = max(rsp.values()) if rsp else None
    rows.append(["RSP depth 2 / depth 0 supernet step time and peak memory <= 0.55x",
                 ", ".join(f"{k.split(',')[0]} {v:.2f}x" for k, v in rsp.items()) or "n/a",
                 _met(worst is not None and worst <= GOAL_RSP_COST, worst is not None)])
    mean = next((v for k, v in ratios.items() if k.startswith("step time, TwoStageDarts mean")), None)
    if mean is not None:
        rows.append(["TwoStageDarts mean step time <= 1.10x stock DARTS (issue 3)", f"{mean:.2f}x",
                     _met(mean <= 1.10, True)])
    lat = results.get("latency")
    found = [row for row in lat["rows"] if row["name"].startswith("found")] if lat else []
    for row in found:
        rows.append([f"{row['name']}: <= 0.87 M parameters", f"{row['params'] / 1e6:.3f} M",
                     _met(row["params"] <= GOAL_PARAMS, True)])
        rows.append([f"{row['name']}: latency <= 0.5x LR-ASPP", f"{row['round_ratio']:.2f}x",
                     _met(row["round_ratio"] <= GOAL_LATENCY_RATIO, True)])
    if not found:
        rows.append(["found net <= 0.87 M parameters and <= 0.5x LR-ASPP latency", "n/a", "not measured"])
    floor = next((row for row in lat["rows"] if row["name"] == "cityscapes space, lightest"), None) if lat else None
    if floor:
        rows.append(["cityscapes space (not searched): can any architecture be <= 0.87 M parameters?",
                     f"its lightest is {floor['params'] / 1e6:.2f} M, {floor['round_ratio']:.2f}x LR-ASPP latency",
                     _met(floor["params"] <= GOAL_PARAMS, True) + (" (not reachable as configured)"
                                                                   if floor["params"] > GOAL_PARAMS else "")])
    q = results.get("quality")
    searched = [x["val_miou"] for x in q["rows"] if x["kind"] == "searched" and x["val_miou"] is not None] if q else []
    random = [x["val_miou"] for x in q["rows"] if x["kind"] == "random" and x["val_miou"] is not None] if q else []
    if searched and random:
        s, b = statistics.mean(searched), max(random)
        status = _met(s >= b + GOAL_MIOU_MARGIN, True)
        if max(searched + random) < 0.1:  # nothing beat the all-background level: no ranking possible
            status = "**inconclusive** (no network learned past all-background at this budget)"
        rows.append(["searched >= best random + 1 mIoU point (mean over seeds vs best random)",
                     f"{s:.4f} vs {b:.4f} ({(s - b) * 100:+.1f} points)", status])
    else:
        rows.append(["searched >= best random + 1 mIoU point", "n/a", "not measured"])
    return rows


def _met(ok: bool, measured: bool) -> str:
    return ("**met**" if ok else "**not met**") if measured else "not measured"


def render_page(results: Dict[str, Any], machine: Dict[str, Any], cfg: BenchmarkConfig) -> str:
    """The whole ``BENCHMARKS.md``: machine, date, goals, then every stored section."""
    v = machine["versions"]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks", "",
        f"Written by `nni-rspnet benchmark` on {date}. Regenerate with `nni-rspnet benchmark` (all sections) or "
        "`nni-rspnet benchmark --only latency,quality` (the others keep their stored numbers, "
        f"from `{os.path.relpath(results_path(cfg), os.getcwd())}`).", "",
        "## Machine", "",
        _table(["", ""], [["CPU", f"{machine['cpu']}, {machine['cores']} cores"],
                          ["memory", f"{machine['memory_gib']} GiB"], ["GPU", machine["gpu"] or "none"],
                          ["OS", machine["os"]],
                          ["versions", ", ".join(f"{k} {val}" for k, val in v.items())],
                          ["load average when written", str(machine["load_average"])]]), "",
        "The machine is shared: while these numbers were taken, other jobs ran on the same two cores, so "
        "absolute timings drift (single timings by about 25 %). Latencies are therefore timed interleaved "
        "(every network once per round, many rounds, in one process) and compared as ratios of medians.", "",
        "## Goals", "", _table(["goal", "measured", "status"], goals(results)), "",
    ]
    for section in SECTIONS:
        if section in results:
            lines.append(render_section(section, results[section], results))
            note = NOTES[section](results[section], results)
            if note:
                lines += [note, ""]
        else:
            lines += [f"## {TITLES[section]}", "", "Not run yet.", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- notes under each section: what was run and how to read it, from the stored numbers -------------------

def _note_search(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    run = r.get("runs", {}).get("tiny")
    if not run:
        return ""
    from .space.model import SpaceConfig

    sc = SpaceConfig.from_yaml(os.path.join(ROOT, run["config"]))
    return (f"What was searched: the {sc.name} space (`{run['config']}`: {sc.layers} layers over resolutions "
            f"{', '.join('1/%d' % x for x in sc.resolutions)}, channels {sc.channels}, {sc.cell_nodes}-node cell, "
            f"RSP depth {sc.rsp_depth}) "
            f"on the built-in digits, both stages of `TwoStageDarts` through `run_search`, "
            f"{run['limit_batches'] or 'all'} batches of {run['batch_size']} per epoch and split, on this CPU in "
            f"{run['seconds'] / 60:.1f} min. This is the network the other sections call \"found\". The Cityscapes "
            "space (`search_spaces/cityscapes.yaml`) was not searched: its supernet (8 layers, 4 resolutions, up to 256 "
            "channels) does not fit a shared 2-core CPU in this session, and its lightest architecture is already "
            "several times the parameter goal (next sections), so a proxy search of it could not show the goal met.")


def _note_search_cost(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return ""
    ratios = r.get("ratios", {})
    why = ""
    step = ratios.get("step time, RSP depth 2 / depth 0 (stage 1)")
    saved = ratios.get("saved activations, RSP depth 2 / depth 0 (stage 1)")
    if step is not None and saved is not None and step > GOAL_RSP_COST:
        why = (f" RSP at depth 2 keeps {saved:.2f}x of the activations saved for backward but {step:.2f}x of the "
               "step time. A likely reading (not profiled): the stem, path resamplers, RSP transitions and head are "
               "not split by RSP, and on a CPU at these small sizes the depth-2 supernet's many narrower ops cost "
               "per-op overhead rather than arithmetic, so halving the cell's channels does not halve the step.")
    return ("Step = one first-order DARTS iteration (an architecture step on a validation batch and a weight step "
            "on a training batch); each configuration runs in its own subprocess so its peak memory is its own, "
            "configurations are interleaved over rounds and medians compared. Peak memory on CPU is the rise of the "
            "process' peak RSS after the supernet was built, so it includes allocator slack; \"saved for backward\" "
            "(bytes of tensors autograd keeps) is exact and deterministic." + why)


def _note_latency(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    rows = {row["name"]: row for row in r["rows"]}
    parts = [f"All networks are built with {r['classes']} output classes and no auxiliary heads, in eval mode under "
             "`torch.inference_mode()`, on one process; every round times each network once in turn. The last "
             "column (median over rounds of each round's ratio to LR-ASPP) is the number to trust on this shared "
             "machine; the IQR shows how much single timings drifted."]
    found = rows.get("found (tiny)")
    floor = rows.get("cityscapes space, lightest")
    if found:
        parts.append(f"\"found (tiny)\" is the searched architecture of the tiny space (the demo's space: "
                     f"channels 16/32/48, 1/4 to 1/16) with a {r['classes']}-class head: {found['params'] / 1e6:.3f} M "
                     "parameters. It meets the size goal because the tiny space is small, not because the search "
                     "steered it there; it was searched on 64x128 digits, not on Cityscapes, and its quality on "
                     "Cityscapes is unknown.")
    lraspp = rows.get(PEER_NAMES["lraspp"])
    if found and lraspp:
        mac_ratio = found["macs"] / lraspp["macs"]
        parts.append(f"\"found (tiny)\" does {mac_ratio:.2f}x LR-ASPP's MACs but takes {found['round_ratio']:.2f}x its "
                     "time: MACs do not predict CPU latency here. A likely cause (not profiled): the tiny space "
                     "runs its cells on 1/4-resolution maps (128x256 at this input) whose 16 channels RSP splits "
                     "into cells of 8 and 4 channels, where many small depthwise, pooling, split/concat and resampling ops are bound by "
                     "memory traffic and per-op overhead rather than arithmetic. The search's latency penalty "
                     "(`search.target_latency_ms` with a table from `nni-rspnet latency-table`) measures latency "
                     "directly and is the tool for this goal; it was not used in this run.")
    if floor:
        parts.append(f"The Cityscapes space as configured cannot meet the 0.87 M goal: its lightest architecture "
                     f"(every op `skip_connect`) has {floor['params'] / 1e6:.2f} M parameters, in the stem, RSP "
                     "transitions, path resamplers and head, which no cell or path choice removes. Meeting the goal "
                     "there needs narrower channels in `cityscapes.yaml` (parameters scale with the square of the "
                     "width), not a different search.")
    return "\n\n".join(parts)


def _note_quality(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    parts = ["Every network is trained by the product's own `train_network` with the same data, epochs, optimiser, "
             "schedule and batch size; the mIoU is the final epoch's on the built-in validation split. "
             "\"± sd\" is the sample standard deviation over training seeds (weights and data order); random "
             "architectures are `random_arch(space, seed)` for seeds 0.., one training seed each. The search chose "
             "its paths on the same built-in validation split (generated from the same seed), which favours the "
             "searched architecture slightly."]
    search = results.get("search", {}).get("runs", {}).get("tiny")
    mious = [x["val_miou"] for x in r["rows"] if x.get("val_miou") is not None]
    if mious and max(mious) < 0.1:
        parts.append(f"At this budget ({r['epochs']} epochs of {r['num_train']} images, what fitted next to the "
                     "other sections on the shared CPU) no network got past the all-background level (about 0.08 "
                     "mIoU: background is about 87 % of the pixels): the mIoU columns cannot rank these networks "
                     "and the +1 point goal is untested, not failed. Validation loss still differs between networks "
                     "and is the only (weak) signal here"
                     + ("; pixel accuracy is the same for all, the share of background pixels."
                        if len({round(x.get("pixel_accuracy") or 0, 4) for x in r["rows"]}) == 1 else ".")
                     + (" For scale: `benchmarks/train_builtin.py` (a random tiny architecture, 2000 images, this "
                        "recipe: SGD lr 0.05 from `tiny.yaml`) reached only 0.096 mIoU after 6 epochs (15 min) on "
                        "this machine." if r.get("optimizer") == "sgd" else ""))
    # 11 classes, background ~ 87 % of pixels: predicting background everywhere scores about 0.08 mIoU
    if search and search.get("val_miou_supernet") is not None and search["val_miou_supernet"] < 0.1:
        parts.append(f"The search behind \"searched\" ended with a supernet validation mIoU of "
                     f"{search['val_miou_supernet']:.4f} after {sum(search['epochs'])} short epochs: the "
                     "all-background level. The supernet had not yet learned to segment digits, so its "
                     "architecture choices carry little signal and \"searched\" is close to one more random draw. "
                     "A longer search (the demo's, or `nni-rspnet search` with all batches) is the fair test of "
                     "the +1 point goal; it did not fit this session's shared CPU.")
    if not r.get("complete", True):
        parts.append(f"**Incomplete:** {len(r['rows'])} of {r.get('planned', '?')} planned runs had finished when this "
                     "page was written.")
    return "\n\n".join(parts)


def _note_demo(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if not r.get("measured"):
        return ""
    verdict = "met" if r.get("ok") and r["seconds"] <= 600 else "not met"
    text = f"The goal is at most 10 minutes on 2 CPU cores: {verdict}."
    if r.get("load_average"):
        text += (f" Load average when it ended: {r['load_average']} (other jobs on the same 2 cores make it "
                 "slower than on an idle machine).")
    sm = r.get("summary") or {}
    if sm.get("miou") is not None:
        h, w = sm.get("input_size", ["?", "?"])
        text += (f" Its summary: val mIoU {sm['miou']:.3f} after retraining, {sm.get('params', 0):,} parameters, "
                 f"{sm.get('macs', 0) / 1e6:.1f} M MACs at {h}x{w}; search {sm.get('seconds', {}).get('search', 0):.0f} s, "
                 f"retraining {sm.get('seconds', {}).get('train', 0):.0f} s.")
    return text


def _note_gpu(r: Dict[str, Any], results: Dict[str, Any]) -> str:
    if r.get("measured"):
        return ""
    return ("No GPU was available to this session, so the 1024x2048 latency table, the GPU supernet step time and "
            "the projected full Cityscapes search time are not given. `nni-rspnet benchmark --only gpu` fills "
            "this section on a machine with CUDA.")


NOTES: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], str]] = {
    "search": _note_search, "search_cost": _note_search_cost, "latency": _note_latency, "quality": _note_quality,
    "demo": _note_demo, "gpu": _note_gpu}
