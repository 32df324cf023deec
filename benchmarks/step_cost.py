"""Cost of one retraining step on this CPU, by optimiser implementation.

``python -m benchmarks.step_cost`` trains random networks of the tiny space (batch 16 at 48x96, the demo's
retraining step: forward, cross-entropy, backward, AdamW) with AdamW's three implementations: the
per-tensor Python loop (PyTorch's CPU default), ``foreach`` (multi-tensor kernels, the GPU default) and
``fused``. The variants of one network alternate in rounds, so a change of the machine's speed hits them
alike; the table reports medians and ratios to the loop. It prints a table and writes
``benchmarks/step_cost.md``. Not a test: a measurement of this machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import atomic_write_text
from nni_rspnet.measure import time_interleaved
from nni_rspnet.space.arch import build_network, random_arch

from .common import ROOT

VARIANTS = {"loop (CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_times(seed: int, rounds: int = 5, steps: int = 5, batch: int = 16,
               size: Sequence[int] = (48, 96)) -> Dict[str, float]:
    """Median seconds per training step of random architecture ``seed`` for each AdamW variant, plus the
    median time of the optimiser step alone (``opt <variant>``); the variants alternate in rounds
    (``measure.time_interleaved``, after one untimed round) on torch's current threads."""
    cfg = RunConfig.load("tiny")
    arch = random_arch(cfg.space, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *size, generator=gen)
    y = torch.randint(0, cfg.space.num_classes, (batch, *size), generator=gen)
    opt_seconds: Dict[str, List[float]] = {name: [] for name in VARIANTS}

    def runner(name: str, kwargs: Dict[str, bool]) -> Callable[[], None]:
        torch.manual_seed(seed)
        net = build_network(cfg.space, arch).train()
        opt = torch.optim.AdamW(net.parameters(), 1e-3, **kwargs)

        def run() -> None:
            spent = 0.0
            for _ in range(steps):
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t = time.perf_counter()
                opt.step()
                spent += time.perf_counter() - t
            opt_seconds[name].append(spent / steps)
        return run

    times = time_interleaved({name: runner(name, kw) for name, kw in VARIANTS.items()}, rounds, warmup=1,
                             threads=None)
    out = {name: statistics.median(ms) / 1e3 / steps for name, ms in times.items()}
    out.update({f"opt {name}": statistics.median(v[1:]) for name, v in opt_seconds.items()})  # [0]: warm-up
    return out


def render(rows: Dict[int, Dict[str, float]], threads: int) -> str:
    lines = [f"# Retraining step cost by AdamW implementation ({threads} threads, batch 16, 48x96)", "",
             "Written by `python -m benchmarks.step_cost`; medians of alternating rounds.", "",
             "| network | " + " | ".join(f"{v}: step ms (ratio)" for v in VARIANTS) + " | optimiser step ms: "
             + " / ".join(VARIANTS) + " |",
             "| --- | " + " | ".join("---" for _ in VARIANTS) + " | --- |"]
    base_name = next(iter(VARIANTS))
    for seed, t in rows.items():
        base = t[base_name]
        cells = [f"{t[v] * 1e3:.1f} ({t[v] / base:.2f}x)" for v in VARIANTS]
        opt = " / ".join(f"{t['opt ' + v] * 1e3:.1f}" for v in VARIANTS)
        lines.append(f"| random architecture {seed} | " + " | ".join(cells) + f" | {opt} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=3, help="random architectures (seeds 0..N-1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "step_cost.md"))
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    rows = {seed: step_times(seed, rounds=args.rounds) for seed in range(args.archs)}
    text = render(rows, threads)
    print(text)
    atomic_write_text(args.out, text)
    return text


if __name__ == "__main__":
    main()
