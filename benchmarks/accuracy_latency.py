"""Accuracy against latency at one equal budget (issue 11, point 5): the tiny space on the built-in digits.

- one cost table of the tiny space at the data's size (eager PyTorch, one thread, CPU clock), shared by
  every search (``search.lut``);
- an unconstrained search and searches with latency targets at fractions ``--fractions`` of the way from
  the cost table's cheapest to its dearest architecture (``search.target_latency_ms``);
- ``--random`` random architectures (``random_arch`` seeds 0, 1, ...);
- every architecture trained with the same recipe (the config's train section, ``--epochs``), one seed;
- every trained network timed whole, interleaved, as the cost table times (same runtime, threads, clock);
- mIoU (final epoch, val split) against measured latency, with the random architectures' front.

Resumable: each finished job is stored in ``OUT/results.json``. Run::

    python -m benchmarks.accuracy_latency --out runs/accuracy_latency --jobs 2 --plot docs/accuracy_latency.png
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Dict, List, Optional, Sequence

import torch
from matplotlib.figure import Figure

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import read_json, save_figure, write_json
from nni_rspnet.measure import time_interleaved
from nni_rspnet.runtimes import prepare
from nni_rspnet.search.cost_table import CostTable, build_cost_table
from nni_rspnet.space.arch import build_network, load_arch, random_arch

from .common import ROOT
from .quality import execute


def pareto_front(points: Sequence[Sequence[float]]) -> List[int]:
    """Indices of the points ``(latency, miou)`` not dominated by another (lower or equal latency and higher
    or equal mIoU, one of them strictly), sorted by latency."""
    front = []
    for i, (li, mi) in enumerate(points):
        if not any((lj <= li and mj >= mi) and (lj < li or mj > mi) for j, (lj, mj) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def beyond_front(point: Sequence[float], front: Sequence[Sequence[float]]) -> bool:
    """Whether ``(latency, miou)`` lies on or beyond the front: no front point is both faster (or as fast) and
    more accurate."""
    lat, miou = point
    return not any(l <= lat and m > miou for l, m in front)


def _store(path: str, results: Dict[str, Any]) -> None:
    write_json(path, results, indent=1, sort_keys=True)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy_latency", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "search_spaces", "tiny.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--out", default="runs/accuracy_latency")
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "accuracy_latency.png"))
    p.add_argument("--fractions", default="0.15,0.4,0.65", help="targets between the cheapest and dearest")
    p.add_argument("--random", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the config's)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds of the trained networks")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    overrides = list(args.overrides) + ["train.threads=1", "search.threads=1"]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    run = RunConfig.load(args.config, overrides)
    size = list(run.data.image_size)
    res_path = os.path.join(args.out, "results.json")
    results: Dict[str, Any] = read_json(res_path) if os.path.isfile(res_path) else {}
    if results.get("config") not in (None, run.to_dict()):
        print("config changed: starting over", flush=True)
        results = {}
    results["config"] = run.to_dict()
    results.setdefault("searches", {})
    results.setdefault("runs", {})

    lut = os.path.join(args.out, "cost_table.json")
    if not os.path.isfile(lut):
        t0 = time.process_time()
        table = build_cost_table(run.space, size, "cpu", latency=True, repeats=7, threads=1, runtime="eager",
                                 log=print)
        table.save(lut)
        print(f"cost table in {time.process_time() - t0:.0f} s CPU", flush=True)
    table = CostTable.load(lut)
    lo = table.derived(table.extreme_arch("latency_ms", min), "latency_ms")
    hi = table.derived(table.extreme_arch("latency_ms", max), "latency_ms")
    fractions = [float(f) for f in args.fractions.split(",")]
    targets = {"unconstrained": None}
    targets.update({f"target {lo + f * (hi - lo):.2f} ms": round(lo + f * (hi - lo), 3) for f in fractions})
    results["table_range_ms"] = [lo, hi]
    print(f"cost table range {lo:.2f} .. {hi:.2f} ms; targets {targets}", flush=True)

    base = run.to_dict()
    randoms = {f"random {s}": random_arch(run.space, s) for s in range(args.random)}

    def search_spec(name: str, target: Optional[float]) -> Dict[str, Any]:
        sec = json.loads(json.dumps(base))
        sec["search"].update(lut=lut, target_latency_ms=target, target_latency=None, latency_input_size=None)
        return {"kind": "search", "task": "acc-lat", "key": name, "threads": 1, "sections": sec,
                "dir": os.path.join(args.out, "search_" + name.replace(" ", "_"))}

    def train_spec(name: str, group: str, arch: Dict[str, Any]) -> Dict[str, Any]:
        return {"kind": "train", "task": "acc-lat", "key": name, "threads": 1, "sections": base, "group": group,
                "name": name, "seed": 0, "arch": arch, "dir": os.path.join(args.out, "train_" + name.replace(" ", "_"))}

    pending = [search_spec(n, t) for n, t in targets.items() if n not in results["searches"]]
    pending += [train_spec(n, "random", a) for n, a in randoms.items() if n not in results["runs"]]
    pending += [train_spec(n, "searched", s["arch"]) for n, s in results["searches"].items()
                if n not in results["runs"]]
    # searches first (their trainings follow them)
    pending.sort(key=lambda s: s["kind"] != "search")
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        running = {}
        while pending or running:
            while pending and len(running) < args.jobs:
                spec = pending.pop(0)
                running[pool.submit(execute, spec)] = spec
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                rec = fut.result()
                if spec["kind"] == "search":
                    rec["target_ms"] = targets[spec["key"]]
                    results["searches"][spec["key"]] = rec
                    pending.insert(0, train_spec(spec["key"], "searched", rec["arch"]))
                else:
                    results["runs"][spec["key"]] = rec
                _store(res_path, results)
                print(f"[acc-lat] {spec['kind']} {spec['key']} done ({(time.time() - started) / 60:.1f} min)",
                      flush=True)

    # every trained network timed whole, interleaved, as the cost table times
    archs = {n: randoms[n] if n in randoms else results["searches"][n]["arch"] for n in results["runs"]}
    x = torch.zeros(1, run.space.in_channels, *size)
    torch.manual_seed(0)
    runs = {n: prepare(build_network(run.space, a), (x,), "eager", 1) for n, a in archs.items()}
    times = time_interleaved(runs, args.rounds, 2, 1, "cpu")
    for n in archs:
        results["runs"][n]["latency_ms"] = statistics.median(times[n])
        results["runs"][n]["predicted_ms"] = table.derived(archs[n], "latency_ms")
    pts = [(r["latency_ms"], r["val_miou"]) for r in results["runs"].values() if r["group"] == "random"]
    front = [pts[i] for i in pareto_front(pts)]
    for n, r in results["runs"].items():
        if r["group"] == "searched":
            r["on_or_beyond_random_front"] = beyond_front((r["latency_ms"], r["val_miou"]), front)
    results["random_front"] = front
    results["timing"] = {"size": size, "runtime": "eager", "threads": 1, "clock": "cpu", "rounds": args.rounds}
    _store(res_path, results)
    plot(results, args.plot)
    for n, r in sorted(results["runs"].items(), key=lambda kv: kv[1]["latency_ms"]):
        tgt = results["searches"].get(n, {}).get("target_ms")
        print(f"{n:28s} {r['group']:9s} params {r['params']:>8,}  latency {r['latency_ms']:6.2f} ms (predicted "
              f"{r['predicted_ms']:6.2f}{'' if tgt is None else f', target {tgt:.2f}'})  val mIoU {r['val_miou']:.4f}"
              + (f"  beyond random front: {r['on_or_beyond_random_front']}" if r["group"] == "searched" else ""))
    print(f"plot written to {args.plot}")
    return 0


def plot(results: Dict[str, Any], path: str) -> None:
    """mIoU against measured latency: random architectures and their front, searched ones by target."""
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.subplots()
    rnd = [r for r in results["runs"].values() if r["group"] == "random"]
    ax.scatter([r["latency_ms"] for r in rnd], [r["val_miou"] for r in rnd], color="0.5", s=30, label="random", zorder=3)
    front = results.get("random_front") or []
    if front:  # the best mIoU reached by a random network at or below each latency
        right = max(r["latency_ms"] for r in results["runs"].values()) * 1.03
        ax.step([p[0] for p in front] + [right], [p[1] for p in front] + [front[-1][1]], where="post", color="0.5",
                lw=1, ls="--", label="random front")
    for i, (n, r) in enumerate(sorted(((n, r) for n, r in results["runs"].items() if r["group"] == "searched"),
                                      key=lambda kv: kv[1]["latency_ms"])):
        marker = "*" if n == "unconstrained" else "o"
        ax.scatter([r["latency_ms"]], [r["val_miou"]], color=f"C{i}", marker=marker, s=90 if marker == "*" else 45,
                   label=f"searched, {n}", zorder=4)
    h, w = results["timing"]["size"]
    ax.set_xlabel(f"measured latency at {h}x{w} (ms, eager, 1 thread, CPU time)")
    ax.set_ylabel("val mIoU (final epoch)")
    c = results["config"]
    ax.set_title(f"tiny space, built-in digits: {c['data']['num_train']} images at {h}x{w}, "
                 f"{c['train']['epochs']} training epochs each, one seed", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
