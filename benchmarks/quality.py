"""Section ``quality``: does the search find better networks than chance, at an equal training budget?

On each task (the built-in digits, and the shapes set of ``shapes.py`` in the ``folder:`` layout), with
the config's own search, data and train sections (``search_spaces/tiny.yaml`` by default: the budgets
are read from it, never set here):

- **searched**: ``run_search`` with ``search.seed`` = 0, 1, 2 (``quality_search_seeds``), each found
  architecture trained with ``quality_train_seeds`` seeds;
- **random**: ``quality_random`` architectures of the same space and of similar cost:
  ``random_arch(space, seed)`` for seeds 0, 1, ... whose parameter count is within
  ``quality_param_tolerance`` of the searched architectures' mean (the first that fit: deterministic),
  each trained with the same seeds;
- **plain CNN** (``baselines.plain_cnn``) and **LR-ASPP-MobileNetV3-Large** (no pretrained weights),
  with the same seeds.

Every network is trained by the product's ``train_network`` with the config's train section (same
epochs and recipe) and scored by its final-epoch mIoU on the task's val split. The section reports
mean ± sd per group and per architecture, parameters and MACs, the searched architectures' mean rank
among the random ones and the goal (searched mean >= best random mean + 0.01 mIoU, and above LR-ASPP
and the plain CNN). Two rank-correlation diagnostics come with it: ``nni-rspnet rank-check`` on the
first search of each task (``quality_rank_archs`` architectures, ``quality_rank_epochs`` epochs each),
and Kendall tau between the first search's supernet scores of the table's own architectures and their
mean trained mIoU (no extra training).

It is resumable: every finished search, training and check is stored in ``results.json`` at once, and a
rerun skips them (a task whose config changed starts over). ``quality_jobs`` > 1 runs that many jobs
at once in worker processes (one torch thread each). Alone::

    python -m benchmarks.quality --dataset both --jobs 2            # the full run (hours on 2 cores)
    python -m benchmarks.quality --dataset builtin --quick          # plumbing check, a few minutes

Outside quick mode the quoted architectures are written to ``search_spaces/found/<space>-<task>-*.json``. An
experiment (``--set`` or ``--config``) writes them to ``OUT/found/`` and its page to ``OUT/BENCHMARKS.md``, so
the page and the architectures it quotes always describe the config as it is.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import save_figure
from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.search.driver import run_search
from nni_rspnet.search.rank_check import (SupernetScorer, rank_correlation, run_rank_check, scoring_batches,
                                          training_agreement)
from nni_rspnet.seg.data import Datasets, build_datasets
from nni_rspnet.seg.train import train_network
from nni_rspnet.space.arch import build_network, random_arch, save_arch

from .baselines import PLAIN_CNN_WIDE, plain_cnn
from .common import QUALITY_GROUPS, ROOT, BenchmarkConfig, load_results, store_result
from .latency import torchvision_peer
from .render import GOAL_MIOU_MARGIN, PEER_NAMES
from .shapes import SHAPE_CLASSES, make_shapes

Log = Callable[[str], None]
TASKS = {"builtin": "digits", "shapes": "shapes"}  # --dataset value -> task name
GROUPS = QUALITY_GROUPS
GROUP_NAMES = {"searched": "searched", "random": "random, similar cost", "plain_cnn": "plain CNN",
               "plain_cnn_wide": "plain CNN, wide",
               "lraspp": PEER_NAMES["lraspp"]}


# --- configuration of a task -------------------------------------------------------------------------

SHAPES_DATA = os.path.join("quality", "shapes_data")  # the generated shapes task, under the output folder


def task_dir(cfg: BenchmarkConfig, task: str) -> str:
    return os.path.join(cfg.out_dir, "quality", task)


def task_config(cfg: BenchmarkConfig, dataset: str) -> RunConfig:
    """The run config of a task: the quality config with the benchmark's overrides, one torch thread
    per run, and for ``shapes`` the generated data set (same sizes and image size as the config's data)."""
    overrides = list(cfg.quality_overrides) + [f"train.threads={cfg.train_threads}",
                                               f"search.threads={cfg.train_threads}"]
    if cfg.quality_epochs:
        overrides.append(f"train.epochs={cfg.quality_epochs}")
    path = cfg.quality_config or cfg.tiny_config
    run = RunConfig.load(path, overrides)
    if dataset == "shapes":
        d = run.data
        meta = make_shapes(os.path.join(cfg.out_dir, SHAPES_DATA), d.num_train, d.num_val, d.image_size,
                           d.seed)
        run = RunConfig.load(path, overrides + [f"data.dataset=folder:{meta['path']}",
                                                f"space.num_classes={len(SHAPE_CLASSES)}"])
    elif dataset != "builtin":
        raise ValueError(f"unknown quality dataset {dataset!r}; expected one of {list(TASKS)}")
    return run


def _portable(sections: Dict[str, Any]) -> Dict[str, Any]:
    """The config sections with the generated shapes data's path written relative to the output folder
    (``folder:<out>/quality/shapes_data``), so a copied or moved output folder keeps its stored runs: the
    data there is regenerated from its seed when absent, and is the same set either way."""
    data = sections.get("data")
    dataset = data.get("dataset") if isinstance(data, dict) else None
    suffix = os.sep + SHAPES_DATA
    if isinstance(dataset, str) and dataset.startswith("folder:") and dataset.rstrip("/\\").endswith(suffix):
        sections = dict(sections, data=dict(data, dataset="folder:<out>" + suffix))
    return sections


def fingerprint(run: RunConfig) -> str:
    """What makes a stored run valid for this task: its whole config (budgets, recipe, data, space), the
    shapes data's location relative to the output folder."""
    return json.dumps(_portable(run.to_dict()), sort_keys=True)


def _stored_sections(stored: Optional[str]) -> Optional[Dict[str, Any]]:
    """The config sections of a stored fingerprint, made portable (older states hold the shapes data's
    absolute path); ``None`` for a missing or unreadable one."""
    try:
        sections = json.loads(stored) if stored else None
    except ValueError:
        return None
    return _portable(sections) if isinstance(sections, dict) else None


def same_fingerprint(stored: Optional[str], run: RunConfig) -> bool:
    """Whether a stored task state was made by this config."""
    return _stored_sections(stored) == _portable(run.to_dict())


# --- the jobs ---------------------------------------------------------------------------------------

@dataclass
class Job:
    """One unit of work: a search, a training, a rank check or the scoring of the table's architectures."""

    task: str
    key: str
    order: Tuple[int, ...]
    spec: Dict[str, Any]


_DATASETS: Dict[str, Datasets] = {}


def _datasets(run: RunConfig) -> Datasets:
    """The task's datasets, built once per process."""
    key = json.dumps([run.data.to_dict(), run.space.num_classes], sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = build_datasets(run.data, run.space.num_classes)
    return _DATASETS[key]


def _network(spec: Dict[str, Any], run: RunConfig) -> torch.nn.Module:
    group = spec["group"]
    if group in ("searched", "random"):
        return build_network(run.space, spec["arch"])
    if group == "plain_cnn":
        return plain_cnn(run.space.num_classes)
    if group == "plain_cnn_wide":
        return plain_cnn(run.space.num_classes, PLAIN_CNN_WIDE)
    return torchvision_peer("lraspp", run.space.num_classes)


def execute(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Runs one job (in this process or a worker) and returns its record (plain data)."""
    torch.set_num_threads(spec["threads"])
    run = RunConfig.from_sections(spec["sections"], f"quality task {spec['task']}")
    start = time.time()
    kind = spec["kind"]
    tag = f"[quality] {spec['task']} {spec['key']}"
    if kind == "search":
        out = spec["dir"]
        resume = os.path.isfile(os.path.join(out, "checkpoint.pt"))
        print(f"{tag}: {'resuming' if resume else 'starting'} the search (seed {run.search.seed})", flush=True)
        result = run_search(run.space, run.search, run.data, out, resume=resume, datasets=_datasets(run))
        net = build_network(run.space, result.arch)
        record = {"arch": result.arch, "val_miou_supernet": result.val_miou, "params": count_params(net),
                  "macs": count_macs(net, run.data.image_size, run.space.in_channels),
                  "seconds": round(time.time() - start, 1), "dir": out}
        print(f"{tag}: found {record['params']:,} parameters, supernet val mIoU {result.val_miou} "
              f"({record['seconds'] / 60:.1f} min)", flush=True)
        return record
    if kind == "train":
        torch.manual_seed(spec["seed"])  # initial weights follow the training seed
        net = _network(spec, run)
        params, macs = count_params(net), count_macs(net, run.data.image_size, run.space.in_channels)
        if os.path.isdir(spec["dir"]):
            shutil.rmtree(spec["dir"])  # an unfinished run: start it again
        print(f"{tag}: training {spec['name']} ({params:,} parameters), seed {spec['seed']}", flush=True)
        arch = spec.get("arch")
        result = train_network(net, run.data, replace(run.train, seed=spec["seed"]), spec["dir"], progress=False,
                               space=run.space.to_dict() if arch else None, arch=arch, datasets=_datasets(run))
        best = max((r["val_miou"] for r in result["history"] if r.get("val_miou") is not None), default=None)
        record = {"group": spec["group"], "name": spec["name"], "seed": spec["seed"], "params": params, "macs": macs,
                  "val_miou": result["val_miou"], "best_val_miou": best, "epochs": result["epochs"],
                  "seconds": round(result["seconds"], 1)}
        print(f"{tag}: val mIoU {result['val_miou']:.4f} ({result['seconds'] / 60:.1f} min)", flush=True)
        return record
    if kind == "rank":
        result = run_rank_check(spec["search_dir"], run.space, run.data, run.train, spec["dir"],
                                n=spec["n"], epochs=spec["epochs"], seed=0, seeds=1,  # the table has the noise
                                log=lambda s: print(f"[quality] {spec['task']} {s}", flush=True))
        return {k: result.get(k) for k in ("kendall_tau", "kendall_p", "kendall_ci", "spearman", "spearman_p", "trained",
                                            "macs_kendall_tau", "macs_kendall_p", "cell_reliance")} | {
            "n": spec["n"], "epochs": spec["epochs"], "dir": spec["dir"], "seconds": round(time.time() - start, 1),
            "archs": [{k: a.get(k) for k in ("name", "searched", "params", "supernet_miou", "trained_miou")}
                      for a in result["archs"]]}
    if kind == "scores":
        scorer = SupernetScorer.from_search(spec["search_dir"], run.space)
        calib, evaluation = scoring_batches(run.data, scorer.search_cfg, run.space.num_classes, spec["calib_batches"])
        scores = {name: scorer.score(arch, calib, evaluation) for name, arch in spec["archs"]}
        print(f"{tag}: supernet scores of {len(scores)} architectures", flush=True)
        return {"scores": scores, "seconds": round(time.time() - start, 1)}
    raise ValueError(f"unknown job kind {kind!r}")


def similar_cost_archs(run: RunConfig, target: float, count: int, tolerance: float, exclude: Sequence[Dict[str, Any]],
                       max_draws: int = 5000) -> List[Dict[str, Any]]:
    """The first ``count`` of ``random_arch(space, 0)``, ``random_arch(space, 1)``, ... whose parameter count
    is within ``tolerance`` (a fraction) of ``target``, none equal to an architecture of ``exclude``."""
    seen = {json.dumps(a, sort_keys=True) for a in exclude}
    out: List[Dict[str, Any]] = []
    if count <= 0:
        return out
    for seed in range(max_draws):
        arch = random_arch(run.space, seed)
        key = json.dumps(arch, sort_keys=True)
        if key in seen:
            continue
        params = count_params(build_network(run.space, arch))
        if abs(params - target) <= tolerance * target:
            seen.add(key)
            out.append({"seed": seed, "name": f"random {seed}", "params": params, "arch": arch})
            if len(out) == count:
                return out
    raise RuntimeError(f"only {len(out)} of {max_draws} random architectures of space {run.space.name!r} have "
                       f"{target:,.0f} parameters ± {tolerance:.0%}; widen quality_param_tolerance")


def plan(cfg: BenchmarkConfig, state: Dict[str, Any], run: RunConfig, task_index: int) -> List[Job]:
    """Every job of a task that can start now and has not finished (a pure function of the stored state).

    Order: the searches; then one run of each kind (so a run cut short shows every group); then the
    other first-seed runs; then the further training seeds."""
    task, root = state["task"], task_dir(cfg, state["task"])
    sections = run.to_dict()
    base = {"task": task, "threads": cfg.train_threads}
    jobs: List[Job] = []

    def add(key: str, order: Tuple[int, ...], **spec: Any) -> None:
        if spec.get("kind") == "train" and spec.get("group") not in cfg.quality_groups:
            return
        if key not in state["runs"]:
            job_sections = spec.pop("sections", sections)
            jobs.append(Job(task, key, order + (task_index,), dict(base, key=key, sections=job_sections, **spec)))


    searches = state["searches"]
    seed0 = json.loads(json.dumps(sections))
    seed0["search"]["seed"] = 0
    for s in range(cfg.quality_search_seeds):
        if str(s) not in searches:
            sec = json.loads(json.dumps(sections))
            sec["search"]["seed"] = s
            add(f"search seed{s}", (0, s), kind="search", sections=sec, dir=os.path.join(root, f"search_seed{s}"))
    for t in range(cfg.quality_train_seeds):
        # (phase, place): the first run of each group at phase 1, the other first-seed runs at 2, seed t at 2 + t
        def order(first: bool, place: int) -> Tuple[int, int]:
            return (2 + t if t else (1 if first else 2), place)

        for s in range(cfg.quality_search_seeds):
            if str(s) in searches:
                add(f"searched seed{s} train{t}", order(s == 0, 10 + s), kind="train", group="searched",
                    name=f"searched seed{s}", seed=t, arch=searches[str(s)]["arch"],
                    dir=os.path.join(root, "runs", f"searched_seed{s}_train{t}"))
        for i, r in enumerate(state.get("random") or []):
            add(f"{r['name']} train{t}", order(i == 0, 20 + i), kind="train", group="random", name=r["name"], seed=t,
                arch=r["arch"], dir=os.path.join(root, "runs", f"random_{r['seed']}_train{t}"))
        for i, group in enumerate(("plain_cnn", "lraspp", "plain_cnn_wide")):
            add(f"{group} train{t}", order(True, 30 + i), kind="train", group=group, name=GROUP_NAMES[group], seed=t,
                dir=os.path.join(root, "runs", f"{group}_train{t}"))
    first = os.path.join(root, "search_seed0")
    if "0" in searches and cfg.quality_rank_archs >= 2:
        add("rank check", (1, 40), kind="rank", sections=seed0, search_dir=first, n=cfg.quality_rank_archs,
            epochs=cfg.quality_rank_epochs, dir=os.path.join(root, "rank_check"))
    if "0" in searches and state.get("random"):  # every search has finished and random ones were drawn
        archs = [(f"searched seed{s}", searches[str(s)]["arch"]) for s in sorted(searches, key=int)]
        archs += [(r["name"], r["arch"]) for r in state["random"]]
        add("scores", (1, 41), kind="scores", sections=seed0, search_dir=first, archs=archs,
            calib_batches=cfg.quality_calib_batches)
    return jobs


# --- bookkeeping ------------------------------------------------------------------------------------

def reusable_runs(old: Optional[Dict[str, Any]], run: RunConfig) -> Dict[str, Dict[str, Any]]:
    """The jobs of a stored task state that a changed config would repeat exactly, by job key.

    With the data unchanged:
    - the reference networks (plain CNNs, LR-ASPP) when the training section and the classes and input
      channels are unchanged: they read nothing else of the space, so a changed space keeps them;
    - the random architectures (a pure function of the space and its seed) when the space and the
      training section are unchanged;
    - the searches and the supernet's scores of the table's architectures when the space and the search
      section are unchanged (a search never reads the training section).

    A searched network's training never is: either its architecture or its recipe changed."""
    before = _stored_sections((old or {}).get("fingerprint"))
    if before is None:
        return {}
    now = _portable(run.to_dict())
    same = {k: before.get(k) == now.get(k) for k in ("space", "data", "train", "search")}
    if not same["data"]:
        return {}
    io = ("num_classes", "in_channels")
    same_io = all((before.get("space") or {}).get(k) == now["space"].get(k) for k in io)
    kept: Dict[str, Dict[str, Any]] = {}
    runs = old.get("runs") or {}
    if same["train"] and same_io:
        kept.update({key: rec for key, rec in runs.items() if isinstance(rec, dict) and rec.get("group") in GROUPS
                     and rec.get("group") not in ("searched", "random")})
    if not same["space"]:
        return kept
    if same["train"]:
        kept.update({key: rec for key, rec in runs.items() if isinstance(rec, dict) and rec.get("group") == "random"})
    if same["search"]:
        kept.update({f"search seed{s}": rec for s, rec in (old.get("searches") or {}).items() if isinstance(rec, dict)})
        if isinstance(runs.get("scores"), dict):
            kept["scores"] = runs["scores"]
    return kept


def clear_task_dir(path: str, keep: Sequence[str] = ()) -> None:
    """Removes a task's folder, except the entries named in ``keep`` (kept searches' folders)."""
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in os.listdir(path) if os.path.isdir(path) else []:
        entry = os.path.join(path, name)
        if name in keep:
            continue
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry)
        else:
            os.remove(entry)


def new_state(task: str, dataset: str, run: RunConfig) -> Dict[str, Any]:
    return {"task": task, "dataset": dataset, "data": run.data.dataset, "fingerprint": fingerprint(run),
            "searches": {}, "random": None, "runs": {}}


def record(cfg: BenchmarkConfig, state: Dict[str, Any], run: RunConfig, job: Job, result: Dict[str, Any],
           log: Log) -> None:
    """Puts a finished job into the task state; once every search has finished, picks the random
    architectures; outside quick mode writes the quoted architectures to ``quality_found_dir``."""
    if job.spec["kind"] == "search":
        seed = job.key.split("seed")[-1]
        state["searches"][seed] = result
        if cfg.quality_found_dir:
            name = f"{run.space.name}-{state['task']}-seed{seed}.json"
            save_arch(result["arch"], os.path.join(cfg.quality_found_dir, name), run.space)
    else:
        state["runs"][job.key] = result
    draw_random(cfg, state, run, log)


def draw_random(cfg: BenchmarkConfig, state: Dict[str, Any], run: RunConfig, log: Log) -> None:
    """Once every search has finished, picks the random architectures of similar cost, and again when a
    continued run selects the random group that an earlier run (``--groups searched``) left empty. The
    draw is deterministic, so drawing more keeps the ones already trained."""
    count = cfg.quality_random if "random" in cfg.quality_groups else 0
    drawn = state["random"]
    if len(state["searches"]) < cfg.quality_search_seeds or (drawn is not None and len(drawn) >= count):
        return
    target = statistics.mean(s["params"] for s in state["searches"].values())
    state["random"] = similar_cost_archs(run, target, count, cfg.quality_param_tolerance,
                                         [s["arch"] for s in state["searches"].values()])
    log(f"[quality] {state['task']}: random architectures of {target:,.0f} parameters ± "
        f"{cfg.quality_param_tolerance:.0%}: seeds {[r['seed'] for r in state['random']]}")
    if cfg.quality_found_dir:
        for r in state["random"]:
            name = f"{run.space.name}-{state['task']}-random{r['seed']}.json"
            save_arch(r["arch"], os.path.join(cfg.quality_found_dir, name), run.space)


def _mean_sd(values: Sequence[float]) -> Dict[str, Any]:
    return {"mean": statistics.mean(values) if values else None,
            "sd": statistics.stdev(values) if len(values) > 1 else None, "n": len(values), "values": list(values)}


PERMUTATIONS = 100_000  # search_vs_random: exact up to this many splits, a Monte Carlo sample of this many beyond


def _mean_gap(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def search_vs_random(searched: Sequence[float], random: Sequence[float]) -> Optional[Dict[str, Any]]:
    """Does the search beat chance? The searched architectures' mean mIoU against the random ones', by a
    one-sided permutation test over the architecture means (each the mean of its trainings).

    Under the null hypothesis the search draws from the same distribution as the random draws, so every
    split of the ``n`` means into ``k`` "searched" and ``n - k`` "random" is as likely; ``p`` is the share of
    splits whose mean difference is at least the observed one. It asks what the issue's margin over the
    *best* random architecture cannot: the best of 5 noisy means sits above the random mean by selection
    alone, so that margin is missed by most good searches (BENCHMARKS, quality). ``min_p`` (``1 / C(n, k)``)
    is the smallest p the design can give: 1/56 for 3 searched and 5 random architectures. The test is
    exact up to ``PERMUTATIONS`` splits (scipy's ``permutation_test`` enumerates them), a Monte Carlo
    sample beyond. ``None`` without at least one of each and three in all."""
    if not searched or not random or len(searched) + len(random) < 3:
        return None
    values, k = list(searched) + list(random), len(searched)
    design = {"n_searched": k, "n_random": len(random), "min_p": 1 / math.comb(len(values), k)}
    if k == 1 or len(random) == 1:  # scipy needs two per group; one architecture against n: n splits to count
        gaps = [float(_mean_gap(np.array([values[i]]), np.delete(values, i))) for i in range(len(values))]
        if len(random) == 1:  # the lone random architecture is the split's "random" side
            gaps = [-g for g in gaps]
        observed = gaps[0] if k == 1 else gaps[-1]
        return dict(design, gain=observed + 0.0, p=sum(g >= observed - 1e-12 for g in gaps) / len(gaps))
    res = stats.permutation_test((list(searched), list(random)), _mean_gap, permutation_type="independent",
                                 alternative="greater", vectorized=True, n_resamples=PERMUTATIONS, random_state=0)
    return dict(design, gain=float(res.statistic), p=float(res.pvalue))


def summarize(state: Dict[str, Any]) -> Dict[str, Any]:
    """Per group and per architecture statistics, the searched architectures' rank among the random
    ones, the goal and the table's rank correlation, from the finished runs of a task."""
    rows = [r for r in state["runs"].values() if r.get("group") in GROUPS and r.get("val_miou") is not None]
    groups = {g: _mean_sd([r["val_miou"] for r in rows if r["group"] == g]) for g in GROUPS}
    archs: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        a = archs.setdefault(r["name"], {"name": r["name"], "group": r["group"], "params": r["params"],
                                         "macs": r["macs"], "runs": []})
        a["runs"].append(r["val_miou"])
    for a in archs.values():
        a.update(_mean_sd(a.pop("runs")))
    random_means = [a["mean"] for a in archs.values() if a["group"] == "random"]
    searched = [a for a in archs.values() if a["group"] == "searched"]
    for a in searched:
        a["rank_among_random"] = 1 + sum(m > a["mean"] for m in random_means) if random_means else None
    best = max((a for a in archs.values() if a["group"] == "random"), key=lambda a: a["mean"], default=None)
    s, l = groups["searched"]["mean"], groups["lraspp"]["mean"]
    plains = [groups[g]["mean"] for g in ("plain_cnn", "plain_cnn_wide") if groups[g]["mean"] is not None]
    p = max(plains) if plains else None
    goal = None
    if s is not None and best is not None:
        goal = {"searched": s, "best_random": best["mean"], "best_random_name": best["name"], "plain_cnn": p,
                "lraspp": l, "margin": s - best["mean"],
                "beats_random": s >= best["mean"] + GOAL_MIOU_MARGIN,
                "beats_peers": p is not None and l is not None and s > p and s > l}
        goal["met"] = goal["beats_random"] and goal["beats_peers"]
    scores = (state["runs"].get("scores") or {}).get("scores")
    table_tau = None
    if scores:
        names = [n for n in scores if n in archs]
        table_tau = dict(rank_correlation([scores[n] for n in names], [archs[n]["mean"] for n in names]),
                         n=len(names), scores={n: scores[n] for n in names})
    # Stage 3's zero-cost criterion (search.rerank_by: macs) against the same means.
    pool = [a for a in archs.values() if a["group"] in ("searched", "random")]
    table_macs_tau = (dict(rank_correlation([float(a["macs"]) for a in pool], [a["mean"] for a in pool]), n=len(pool))
                      if len(pool) >= 2 and random_means else None)
    # How far two trainings of the same architectures agree: the ceiling of every rank correlation above, and why
    # a margin over the best of the random ones is hard to show where it is low.
    noise = training_agreement([a["values"] for a in pool]) if pool else None
    mean_rank = ([a["rank_among_random"] for a in searched if a["rank_among_random"] is not None])
    versus = search_vs_random([a["mean"] for a in searched], random_means)
    return {"groups": groups, "archs": sorted(archs.values(), key=lambda a: (GROUPS.index(a["group"]), a["name"])),
            "searched_mean_rank": statistics.mean(mean_rank) if mean_rank else None, "goal": goal,
            "rank_check": state["runs"].get("rank check"), "table_tau": table_tau,
            "table_macs_tau": table_macs_tau, "training_noise": noise, "search_vs_random": versus}


def section_result(cfg: BenchmarkConfig, states: Dict[str, Dict[str, Any]], runs: Dict[str, RunConfig],
                   complete: bool) -> Dict[str, Any]:
    tasks = {}
    for task, state in states.items():
        run = runs[task]
        tasks[task] = dict(state, summary=summarize(state),
                           settings={"config": os.path.relpath(cfg.quality_config or cfg.tiny_config, ROOT),
                                     "overrides": list(cfg.quality_overrides),
                                     "data": run.data.dataset, "num_classes": run.space.num_classes,
                                     "num_train": run.data.num_train, "num_val": run.data.num_val,
                                     "image_size": list(run.data.image_size), "train": run.train.to_dict(),
                                     "batch_size": run.data.batch_size,
                                     "search_epochs": [run.search.warmup_epochs, run.search.stage1_epochs,
                                                       run.search.stage2_epochs],
                                     "search_limit_batches": run.search.limit_batches})
    return {"tasks": tasks, "complete": complete, "plot": os.path.relpath(plot_path(cfg), _page_dir(cfg)),
            "design": {"search_seeds": cfg.quality_search_seeds, "train_seeds": cfg.quality_train_seeds,
                       "random": cfg.quality_random, "groups": list(cfg.quality_groups),
                       "param_tolerance": cfg.quality_param_tolerance,
                       "rank_archs": cfg.quality_rank_archs, "rank_epochs": cfg.quality_rank_epochs,
                       "threads": cfg.train_threads, "jobs": cfg.quality_jobs}}


def _page_dir(cfg: BenchmarkConfig) -> str:
    return os.path.dirname(os.path.abspath(cfg.markdown))


def plot_path(cfg: BenchmarkConfig) -> str:
    """The section's picture, in ``docs/`` beside the page."""
    return os.path.join(_page_dir(cfg), "docs", "quality.png")


def plot_quality(result: Dict[str, Any], path: str) -> None:
    """mIoU per group and task, one point per training run (searched runs coloured by search seed)."""
    tasks = [t for t in result["tasks"].values() if t["runs"]]
    fig = Figure(figsize=(4.6 * max(1, len(tasks)), 3.8))
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        rows = [r for k, r in task["runs"].items() if r.get("group") in GROUPS and r.get("val_miou") is not None]
        for x, group in enumerate(GROUPS):
            pts = [r for r in rows if r["group"] == group]
            names = sorted({r["name"] for r in pts})
            for r in pts:
                dx = 0.5 * ((names.index(r["name"]) + 0.5) / max(1, len(names)) - 0.5) + 0.04 * (r["seed"] - 0.5)
                colour = f"C{1 + names.index(r['name'])}" if group == "searched" else "C0"
                ax.scatter(x + dx, r["val_miou"], s=22, color=colour, alpha=0.85, zorder=3)
            if pts:
                m = statistics.mean(r["val_miou"] for r in pts)
                ax.hlines(m, x - 0.35, x + 0.35, color="k", lw=1.5, zorder=4)
        ax.set_xticks(range(len(GROUPS)), [GROUP_NAMES[g].replace("-MobileNetV3-Large", "") .replace(", ", "\n")
                                           for g in GROUPS], fontsize=8)
        ax.set_ylabel("val mIoU (final epoch)")
        epochs = task["settings"]["train"]["epochs"]
        ax.set_title(f"{task['task']} ({epochs} epoch{'' if epochs == 1 else 's'} per run)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# --- the section ------------------------------------------------------------------------------------

def run(cfg: BenchmarkConfig, log: Log = print) -> Dict[str, Any]:
    """Runs (or continues) every job of the selected tasks; stores the section after each one."""
    stored = (load_results(cfg).get("quality") or {}).get("tasks") or {}
    states: Dict[str, Dict[str, Any]] = {}
    runs: Dict[str, RunConfig] = {}
    for dataset in cfg.quality_datasets:
        task = TASKS[dataset]
        run_cfg = task_config(cfg, dataset)
        runs[task] = run_cfg
        old = stored.get(task)
        if old and same_fingerprint(old.get("fingerprint"), run_cfg):
            states[task] = {k: v for k, v in old.items() if k not in ("summary", "settings")}
            draw_random(cfg, states[task], run_cfg, log)
            log(f"[quality] {task}: continuing ({len(old['searches'])} searches and {len(old['runs'])} runs stored)")
        else:
            reuse = reusable_runs(old, run_cfg)
            searches = [os.path.basename(rec["dir"]) for key, rec in reuse.items()
                        if key.startswith("search ") and rec.get("dir")]
            if old or os.path.isdir(task_dir(cfg, task)):
                log(f"[quality] {task}: the config changed since the stored runs: starting over")
                clear_task_dir(task_dir(cfg, task), keep=searches)
            states[task] = new_state(task, dataset, run_cfg)
            states[task]["reuse"] = reuse
            if reuse:
                log(f"[quality] {task}: {len(reuse)} stored jobs would repeat exactly (same network, data and "
                    f"recipe, or the same search): they are kept")
    keep = {t: s for t, s in stored.items() if t not in states}  # other tasks' stored results stay on the page

    def save(complete: bool) -> Dict[str, Any]:
        result = section_result(cfg, states, runs, complete)
        result["tasks"] = {**{t: s for t, s in keep.items()}, **result["tasks"]}
        store_result(cfg, "quality", result)
        return result

    jobs_done = 0
    executor = (ProcessPoolExecutor(cfg.quality_jobs, mp_context=get_context("spawn"))
                if cfg.quality_jobs > 1 else None)
    running: Dict[Tuple[str, str], Tuple[Job, Future]] = {}
    failure: Optional[BaseException] = None
    try:
        while True:
            ready = [] if failure else sorted(
                (j for i, t in enumerate(states) for j in plan(cfg, states[t], runs[t], i)
                 if (j.task, j.key) not in running), key=lambda j: j.order)
            if not ready and not running:
                break
            kept = [j for j in ready if j.key in states[j.task].get("reuse", {})]
            if kept:
                for job in kept:
                    record(cfg, states[job.task], runs[job.task], job, states[job.task]["reuse"].pop(job.key), log)
                save(False)
                continue
            if executor is None:
                job = ready[0]
                record(cfg, states[job.task], runs[job.task], job, execute(job.spec), log)
                jobs_done += 1
                save(False)
                continue
            while ready and len(running) < cfg.quality_jobs:
                job = ready.pop(0)
                running[(job.task, job.key)] = (job, executor.submit(execute, job.spec))
            finished, _ = wait([f for _, f in running.values()], return_when=FIRST_COMPLETED)
            for key, (job, future) in list(running.items()):
                if future not in finished:
                    continue
                del running[key]
                try:
                    result = future.result()
                except BaseException as err:  # noqa: BLE001 - stop submitting, let the running jobs finish
                    log(f"[quality] {job.task} {job.key} failed: {type(err).__name__}: {err}")
                    failure = failure or err
                    continue
                record(cfg, states[job.task], runs[job.task], job, result, log)
                jobs_done += 1
                save(False)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    if failure is not None:
        raise failure
    result = save(True)
    plot_quality(result, plot_path(cfg))
    log(f"[quality] {jobs_done} jobs run; picture written to {plot_path(cfg)}")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["builtin", "shapes", "both"], default="both", help="the task(s)")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (the plumbing, in minutes)")
    p.add_argument("--jobs", type=int, default=1, help="jobs at once, each in its own process with one thread")
    p.add_argument("--config", default=None, help="the searched config (default: search_spaces/tiny.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a setting of every run of the section (repeatable)")
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS),
                   help="the groups whose networks are trained (default: all); e.g. --groups searched to compare "
                        "the searches of two configs under the same protocol")
    p.add_argument("--rank-archs", type=int, default=None,
                   help="architectures of the rank check on the first search (0: none; default 8)")
    p.add_argument("--out", default="runs/benchmark", help="folder of results.json and the runs")
    p.add_argument("--markdown", default=None,
                   help="the page to rewrite with the stored results (default: BENCHMARKS.md; with --set or "
                        "--config, OUT/BENCHMARKS.md)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .__main__ import run_benchmark  # the page is written by the one entry point

    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        print(f"python -m benchmarks.quality: error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    # The page and search_spaces/found/ quote the config as it is; an experiment (--set, --config) writes its
    # page and its architectures under --out instead, so it never overwrites them.
    experiment = bool(args.overrides or args.config)
    markdown = args.markdown or (os.path.join(args.out, "BENCHMARKS.md") if experiment else "BENCHMARKS.md")
    cfg = BenchmarkConfig(out_dir=args.out, markdown=markdown)
    if experiment:
        cfg = replace(cfg, quality_found_dir=os.path.join(args.out, "found"))
    if args.quick:
        cfg = cfg.quick_version()
    datasets = ("builtin", "shapes") if args.dataset == "both" else (args.dataset,)
    if args.rank_archs is not None:
        cfg = replace(cfg, quality_rank_archs=args.rank_archs)
    cfg = replace(cfg, quality_datasets=datasets, quality_jobs=args.jobs, quality_groups=tuple(args.groups),
                  quality_overrides=list(cfg.quality_overrides) + list(args.overrides),
                  quality_config=args.config or cfg.quality_config)
    run_benchmark(cfg, ["quality"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
