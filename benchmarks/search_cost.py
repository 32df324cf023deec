"""Section ``search_cost``: supernet step time and peak memory of the search.

Two comparisons on the same space (``search_spaces/tiny.yaml`` unless ``--config`` says otherwise):

1. Each cheap form of the search against the full-channel supernet (RSP depth 0: every channel of
   every node through every candidate), in both stages: RSP nested and single at depth 2, RSP depth 1,
   and PC-DARTS' partial channels (K = 2 on RSP depth 1, the default; K = 4 on full channels); goal:
   ratio <= 0.55 for step time and for peak memory.
2. TwoStageDarts (stage 1, stage 2, and their epoch-weighted mean) against NNI 2.10.1's stock DARTS
   (``DartsLightningModule``, every choice relaxed, alphas leaking into the weight optimiser) at the
   default RSP depth; goal: ratio <= 1.10 for step time.

A step is one first-order DARTS iteration: an architecture step on a validation batch and a weight
step on a training batch. A warm-up step (the epochs before stage 1, most of the default search: 18 of
21 in ``tiny.yaml``) is one weight step on a sampled sub-network: one op per cell edge, two paths per
trellis node, PC-DARTS' partial channels as in stage 1; it is compared with the same step of the
full-channel supernet. Each measurement runs in a fresh subprocess (so the peak resident memory
is its own), configurations are interleaved over ``--rounds`` rounds, and medians are compared, as
timings on shared machines drift. On a CPU the step time is the process' CPU time (one thread),
which other processes do not stretch the way they stretch wall time (kept in its own column). Peak
memory is the rise of the process' peak RSS over its RSS after the supernet was built (on CUDA:
``torch.cuda.max_memory_allocated``); the bytes of tensors saved for backward in one step are given
too (deterministic).

``measure`` returns the numbers as data; ``run`` is the section of ``python -m benchmarks``; alone,
``python -m benchmarks.search_cost --rounds 3 --steps 6 --out benchmarks/search_cost.md`` prints and
writes the same tables for any space (``--config``, ``--set``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

from nni_rspnet.fileio import atomic_write_text
from nni_rspnet.search.strategy import CELL_PREFIX, MACRO_PREFIX, RSPDartsModule
from nni_rspnet.seg.train import SegmentationModule
from nni_rspnet.space.arch import random_arch
from nni_rspnet.space.model import RSPNetSpace, SpaceConfig

from .common import ROOT, BenchmarkConfig
from .render import GOAL_RSP_COST, GOAL_STEP_RATIO, search_cost_markdown

# Every configuration: the stage it times, the RSP depth and form, and PC-DARTS' channel fraction K.
# "full" is the full-channel supernet (depth 0, every channel through every candidate): the reference.
CONFIGS = {
    "stage1_full": dict(kind="stage1", rsp_depth=0, rsp_form="nested", pc=1),
    "stage1_nested2": dict(kind="stage1", rsp_depth=2, rsp_form="nested", pc=1),
    "stage1_single2": dict(kind="stage1", rsp_depth=2, rsp_form="single", pc=1),
    "stage1_single1": dict(kind="stage1", rsp_depth=1, rsp_form="single", pc=1),
    "stage1_single1_pc2": dict(kind="stage1", rsp_depth=1, rsp_form="single", pc=2),
    "stage1_full_pc4": dict(kind="stage1", rsp_depth=0, rsp_form="nested", pc=4),
    # tiny.yaml's cell search: sampled weight steps, and (GDAS) sampled architecture steps
    "stage1_single1_pc2_ws": dict(kind="stage1", rsp_depth=1, rsp_form="single", pc=2, weight_sampling=True),
    "stage1_single1_pc2_gdas": dict(kind="stage1", rsp_depth=1, rsp_form="single", pc=2, weight_sampling=True,
                                    arch_sampling=True),
    "stage2_full": dict(kind="stage2", rsp_depth=0, rsp_form="nested", pc=1),
    "stage2_nested2": dict(kind="stage2", rsp_depth=2, rsp_form="nested", pc=1),
    "stage2_single2": dict(kind="stage2", rsp_depth=2, rsp_form="single", pc=1),
    "stage2_single1": dict(kind="stage2", rsp_depth=1, rsp_form="single", pc=1),
    "stock_single1": dict(kind="stock", rsp_depth=1, rsp_form="single", pc=1),
    "warmup_full": dict(kind="warmup", rsp_depth=0, rsp_form="nested", pc=1),
    "warmup_single1_pc2": dict(kind="warmup", rsp_depth=1, rsp_form="single", pc=2),
}
# The default of the product (search_spaces/tiny.yaml): RSP depth 1 and PC-DARTS K = 2 in stage 1 (and in
# the warm-up that precedes it: a weight step on one sub-network, one op per cell edge and two sampled paths per
# trellis node, most of the default search's epochs).
DEFAULT = {1: "stage1_single1_pc2", 2: "stage2_single1"}
FORMS = {"RSP nested, depth 2": ("stage1_nested2", "stage2_nested2"),
         "RSP single, depth 2": ("stage1_single2", "stage2_single2"),
         "RSP depth 1": ("stage1_single1", "stage2_single1"),
         "RSP depth 1 + PC-DARTS K=2 (default)": ("stage1_single1_pc2", "stage2_single1"),
         "full channels + PC-DARTS K=4": ("stage1_full_pc4", "stage2_full")}
# The one-shot module's settings while timing: the same for ours and for stock DARTS (whose
# architecture optimiser is Adam at 3e-4), no clipping, no annealing.
STEP_SETTINGS = dict(arc_learning_rate=3e-4, arc_weight_decay=1e-3, gradient_clip_val=None, tau_init=1.0, tau_min=1.0,
                     warmup_sampling=False, path_sampling="off", stage1_weight_sampling=False,
                     stage1_arch_sampling=False)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Builds one one-shot module and times ``steps`` DARTS steps (run in a subprocess)."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    cfg = SpaceConfig.from_yaml(spec["config"], list(spec["overrides"]) + [f"space.rsp_depth={spec['rsp_depth']}",
                                                                          f"space.rsp_form={spec['rsp_form']}"])
    device = torch.device(spec["device"])
    inner = SegmentationModule(cfg.num_classes, lr=0.01)
    inner.running_mode = "oneshot"
    inner.set_model(RSPNetSpace(cfg))
    if spec["kind"] == "stock":
        module = DartsLightningModule(inner, arc_learning_rate=STEP_SETTINGS["arc_learning_rate"])
    elif spec["kind"] == "stage1":
        settings = dict(STEP_SETTINGS, stage1_weight_sampling=spec.get("weight_sampling", False),
                        stage1_arch_sampling=spec.get("arch_sampling", False))
        module = RSPDartsModule(inner, all_on=(MACRO_PREFIX,), partial_channels=spec["pc"], **settings)
    elif spec["kind"] == "warmup":  # every epoch a warm-up epoch: weight steps on sampled sub-networks only
        settings = dict(STEP_SETTINGS, warmup_sampling=True, path_sampling="stage1")
        module = RSPDartsModule(inner, all_on=(MACRO_PREFIX,), partial_channels=spec["pc"], warmup_epochs=10 ** 6,
                                **settings)
    else:
        cell = {k: v for k, v in random_arch(cfg, 0).items() if k.startswith(CELL_PREFIX)}
        module = RSPDartsModule(inner, frozen=cell, partial_channels=spec["pc"], **STEP_SETTINGS)
    h, w = spec["input_size"]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(spec["batch"], 3, h, w, generator=g),
                torch.randint(0, cfg.num_classes, (spec["batch"], h, w), generator=g)) for _ in range(2)]
    data = torch.utils.data.TensorDataset(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    loader = lambda: torch.utils.data.DataLoader(data, batch_size=spec["batch"], shuffle=False)  # noqa: E731
    wall: List[float] = []
    cpu: List[float] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.start = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall.append(time.perf_counter() - self.start[0])
            cpu.append(time.process_time() - self.start[1])

    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    module.to(device)
    rss0 = _rss_kib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    trainer = pl.Trainer(max_epochs=spec["steps"], accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=1, limit_val_batches=0,
                         callbacks=[Timer()])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.fit(module, {"train": loader(), "val": loader()})
    steps = max(1, len(wall))
    # On a CPU the step time is the process' CPU time: other processes on a shared machine stretch
    # wall time by 2x from one run to the next, CPU time hardly (the wall time is kept as well).
    step_wall = statistics.median(wall[1:] or wall)
    step_cpu = statistics.median(cpu[1:] or cpu)
    result = {"step_s": step_wall if device.type == "cuda" else step_cpu, "wall_s": step_wall,
              "saved_mib": saved[0] / steps / 2 ** 20}
    if device.type == "cuda":
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - mem0) / 2 ** 20
    else:
        result["peak_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return result


def measure(config: str, overrides: Sequence[str] = (), only: Sequence[str] = tuple(CONFIGS),
            input_size: Sequence[int] = (64, 128), batch: int = 8, steps: int = 6, rounds: int = 3, threads: int = 1,
            device: str = "cpu", epochs: Sequence[int] = (3, 3), log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Times every configuration of ``only`` in its own subprocess, interleaved over ``rounds`` rounds.

    Returns:
        ``{"settings": {...}, "runs": {name: medians of step_s, wall_s, peak_mib, saved_mib},
        "ratios": {label: value}, "goals": {label: goal}}``.

    Raises:
        RuntimeError: a worker failed (its stderr's tail is in the message).
    """
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in only}
    for r in range(rounds):
        for name in only:
            spec = dict(CONFIGS[name], config=os.fspath(config), overrides=list(overrides),
                        input_size=list(input_size), batch=batch, steps=steps, threads=threads, device=device)
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            proc = subprocess.run([sys.executable, "-m", "benchmarks.search_cost", "--worker", json.dumps(spec)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                raise RuntimeError(f"search-cost worker {name} failed (status {proc.returncode}): "
                                   f"{proc.stderr.strip()[-2000:]}")
            runs[name].append(json.loads(line[0][len("RESULT "):]))
            log(f"[search_cost] round {r + 1} {name}: {runs[name][-1]}")
    med = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in runs.items()}
    e1, e2 = epochs
    ratios: Dict[str, float] = {}
    goals: Dict[str, float] = {}

    def ratio(a: str, b: str, key: str, label: str, goal: float) -> None:
        if a in med and b in med:
            ratios[label], goals[label] = med[a][key] / med[b][key], goal

    for form, (one, two) in FORMS.items():
        for key, what in (("step_s", "step time"), ("peak_mib", "peak memory"), ("saved_mib", "saved activations")):
            ratio(one, "stage1_full", key, f"{what}, {form} / full channels (stage 1)", GOAL_RSP_COST)
            ratio(two, "stage2_full", key, f"{what}, {form} / full channels (stage 2)", GOAL_RSP_COST)
    for key, what in (("step_s", "step time"), ("peak_mib", "peak memory"), ("saved_mib", "saved activations")):
        ratio("warmup_single1_pc2", "warmup_full", key,
              f"{what}, RSP depth 1 + PC-DARTS K=2 (default) / full channels (warm-up)", GOAL_RSP_COST)
    ratio(DEFAULT[1], "stock_single1", "step_s", "step time, TwoStageDarts stage 1 / stock DARTS", GOAL_STEP_RATIO)
    ratio(DEFAULT[2], "stock_single1", "step_s", "step time, TwoStageDarts stage 2 / stock DARTS", GOAL_STEP_RATIO)
    if all(k in med for k in (*DEFAULT.values(), "stock_single1")):
        label = f"step time, TwoStageDarts mean ({e1}+{e2} epochs) / stock DARTS"
        mean = (e1 * med[DEFAULT[1]]["step_s"] + e2 * med[DEFAULT[2]]["step_s"]) / (e1 + e2)
        ratios[label], goals[label] = mean / med["stock_single1"]["step_s"], GOAL_STEP_RATIO
    space = os.path.relpath(os.fspath(config), ROOT) + "".join(f" {o}" for o in overrides)
    settings = {"space": space, "input_size": list(input_size), "batch": batch, "device": device,
                "threads": threads, "rounds": rounds, "steps": steps}
    return {"settings": settings, "runs": med, "ratios": ratios, "goals": goals}


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print, device: str = "cpu") -> Dict[str, Any]:
    """The section: the tiny space's search cost (``quick``: tiny sizes) on ``device``."""
    sizes = (dict(rounds=1, steps=2, input_size=(32, 64), batch=2) if cfg.quick
             else dict(rounds=cfg.search_cost_rounds, steps=cfg.search_cost_steps))
    try:
        table = measure(cfg.tiny_config, device=device, log=log, **sizes)
    except RuntimeError as err:
        log(f"[search_cost] failed: {err}")
        return {"measured": False, "why": str(err).splitlines()[0]}
    return {"measured": True, "device": device, "table": table}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "search_spaces", "tiny.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="space.KEY=VALUE",
                        help="override the space, e.g. --set space.channels=[64,128,256] (repeatable)")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                        help="measure only these configurations")
    parser.add_argument("--input-size", type=int, nargs=2, default=[64, 128])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="DARTS steps per measurement (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are compared)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, nargs=2, default=[3, 3], metavar=("STAGE1", "STAGE2"),
                        help="epochs of each stage, to weigh TwoStageDarts' mean step time")
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    table = measure(args.config, args.overrides, args.only, args.input_size, args.batch, args.steps, args.rounds,
                    args.threads, args.device, args.epochs)
    text = search_cost_markdown(table, title=True)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
