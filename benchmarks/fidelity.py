"""Section ``fidelity``: how well the cost table predicts the latency of the networks it builds.

For each space (the tiny space at the built-in data's size, the light Cityscapes space at
``fidelity_light_size``), a cost table is measured as a search measures it (eager PyTorch, one thread, the
thread's CPU time, calibrated on ``random_arch`` seeds 0, 1, 2); then ``fidelity_archs`` other random
architectures (seeds 100, 101, ...: none of them calibrated the table) are built and timed whole, interleaved,
with the same runtime, threads and clock. Predicted (``CostTable.derived``) against measured: Spearman rank
correlation and the median relative error ``|predicted - measured| / measured``; a scatter plot.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import torch
from matplotlib.figure import Figure

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import save_figure
from nni_rspnet.measure import time_interleaved
from nni_rspnet.runtimes import prepare
from nni_rspnet.search.cost_table import build_cost_table
from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.space.model import SpaceConfig

from .common import BenchmarkConfig

SEED0 = 100  # random architectures of the comparison: seeds 100, 101, ... (the table calibrates on 0, 1, 2)


def ranks(values: Sequence[float]) -> List[float]:
    """Ranks 1..n, ties given their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties: mean ranks); NaN when a side
    is constant or there are fewer than 2 values."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return math.nan if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def median_relative_error(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Median over pairs of ``|predicted - measured| / measured``."""
    if len(predicted) != len(measured) or not measured:
        raise ValueError(f"median_relative_error: {len(predicted)} and {len(measured)} values")
    return statistics.median(abs(p - m) / m for p, m in zip(predicted, measured))


def measure_space(space: SpaceConfig, size: Sequence[int], n: int, rounds: int,
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Cost table and ``n`` whole random networks of ``space`` at ``size`` (eager, one thread, CPU clock)."""
    h, w = int(size[0]), int(size[1])
    started = time.time()
    table = build_cost_table(space, (h, w), "cpu", latency=True, repeats=rounds, threads=1, runtime="eager",
                             log=lambda s: log(f"[fidelity] {s}"))
    table_s = time.time() - started
    archs = [random_arch(space, SEED0 + i) for i in range(n)]
    x = torch.zeros(1, space.in_channels, h, w)
    runs = {i: prepare(build_network(space, a), (x,), "eager", 1) for i, a in enumerate(archs)}
    log(f"[fidelity] {space.name}: {n} random networks at {h}x{w}, {rounds} interleaved rounds")
    times = time_interleaved(runs, rounds, 1, 1, "cpu")
    measured = [statistics.median(times[i]) for i in range(n)]
    predicted = [table.derived(a, "latency_ms") for a in archs]
    params = [table.derived(a, "params") for a in archs]
    return {"space": space.name, "size": [h, w], "n": n, "rounds": rounds, "seeds": [SEED0 + i for i in range(n)],
            "predicted_ms": predicted, "measured_ms": measured, "params": params,
            "fixed_ms": table.fixed["latency_ms"], "spearman": spearman(predicted, measured),
            "median_rel_error": median_relative_error(predicted, measured),
            "max_rel_error": max(abs(p - m) / m for p, m in zip(predicted, measured)),
            "table_seconds": round(table_s, 1), "seconds": round(time.time() - started, 1)}


def plot_path(cfg: BenchmarkConfig) -> str:
    """The section's picture, in ``docs/`` beside the page."""
    return os.path.join(os.path.dirname(os.path.abspath(cfg.markdown)), "docs", "cost_fidelity.png")


def plot_fidelity(spaces: Dict[str, Dict[str, Any]], path: str) -> None:
    """Predicted against measured latency, one panel per space, with the diagonal."""
    fig = Figure(figsize=(4.2 * max(1, len(spaces)), 4.0))
    axes = fig.subplots(1, max(1, len(spaces)), squeeze=False)[0]
    for ax, (name, sp) in zip(axes, spaces.items()):
        ax.scatter(sp["measured_ms"], sp["predicted_ms"], s=24, zorder=3)
        lo = min(sp["measured_ms"] + sp["predicted_ms"]) * 0.9
        hi = max(sp["measured_ms"] + sp["predicted_ms"]) * 1.1
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, alpha=0.6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency (ms, 1 thread, CPU time)")
        ax.set_ylabel("predicted by the cost table (ms)")
        h, w = sp["size"]
        ax.set_title(f"{name}, {h}x{w}, {sp['n']} random networks\nSpearman {sp['spearman']:.2f}, median relative "
                     f"error {sp['median_rel_error']:.1%}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Both spaces (the tiny one at its data size, the light one at ``fidelity_light_size``); the plot beside
    the page (``docs/cost_fidelity.png``)."""
    spaces = {}
    tiny_size = cfg.image_size if cfg.quick else RunConfig.load(cfg.tiny_config).data.image_size
    for path, size in ((cfg.tiny_config, tiny_size), (cfg.light_config, cfg.fidelity_light_size)):
        space = SpaceConfig.from_yaml(path)
        spaces[space.name] = measure_space(space, size, cfg.fidelity_archs, cfg.fidelity_rounds, log)
        sp = spaces[space.name]
        log(f"[fidelity] {space.name}: Spearman {sp['spearman']:.3f}, median relative error "
            f"{sp['median_rel_error']:.1%}")
    plot = plot_path(cfg)
    plot_fidelity(spaces, plot)
    return {"spaces": spaces, "plot": os.path.relpath(plot, os.path.dirname(os.path.abspath(cfg.markdown))),
            "runtime": "eager", "threads": 1, "clock": "cpu", "load_average": list(os.getloadavg())}
