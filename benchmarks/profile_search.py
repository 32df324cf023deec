"""Profile of one supernet step: the top ops by self CPU time, for two search configurations.

``python -m benchmarks.profile_search`` profiles a stage-1 DARTS step (an architecture step on one
batch and a weight step on another) of the tiny space in its former default (RSP nested at depth 2,
nine ops including pooling, every channel through every candidate) and in its current default (RSP
depth 1, seven ops, PC-DARTS K = 2), with ``torch.profiler``, and prints the ops that cost the most
self CPU time in each, with their share of the step. Not a test: a profile of this machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from nni_rspnet.fileio import atomic_write_text
from nni_rspnet.search.strategy import MACRO_PREFIX, RSPDartsModule
from nni_rspnet.seg.train import SegmentationModule
from nni_rspnet.space.model import RSPNetSpace, SpaceConfig

from .common import ROOT

POOLS = ["skip_connect", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
         "avg_pool_3x3", "max_pool_3x3", "zoomed_conv"]
SETUPS = {
    "before (RSP nested depth 2, 9 ops, all channels)": (["space.rsp_depth=2", "space.rsp_form=nested",
                                                           f"space.ops=[{', '.join(POOLS)}]"], 1),
    "after (RSP depth 1, 7 ops, PC-DARTS K=2)": ([], 2),
}


def profile_step(config: str, overrides: Sequence[str], partial_channels: int, input_size: Sequence[int] = (48, 96),
                 batch: int = 16, top: int = 12) -> Dict[str, object]:
    """Profiles one stage-1 step (both passes, forward and backward) and returns the top ops."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    cfg = SpaceConfig.from_yaml(config, list(overrides))
    inner = SegmentationModule(cfg.num_classes, lr=0.01)
    inner.running_mode = "oneshot"
    inner.set_model(RSPNetSpace(cfg))
    module = RSPDartsModule(inner, all_on=(MACRO_PREFIX,), arc_learning_rate=3e-4, arc_weight_decay=1e-3,
                            gradient_clip_val=None, tau_init=1.0, tau_min=1.0, partial_channels=partial_channels,
                            warmup_sampling=False, path_sampling="off", stage1_weight_sampling=False,
                            stage1_arch_sampling=False)
    net = module.model.model
    h, w = input_size
    x = torch.randn(batch, 3, h, w)
    y = torch.randint(0, cfg.num_classes, (batch, h, w))

    def step() -> None:
        for _ in range(2):  # the architecture pass and the weight pass
            F.cross_entropy(net(x), y).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows: List[Dict[str, object]] = []
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        rows.append({"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
                     "share": e.self_cpu_time_total / total})
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    return {"total_ms": total / 1e3, "aten_calls": calls, "top": rows}


def markdown(results: Dict[str, Dict[str, object]]) -> str:
    lines = []
    for name, r in results.items():
        lines += [f"**{name}**: {r['total_ms']:.0f} ms self CPU time per step, {r['aten_calls']} aten calls", "",
                  "| op | calls | self ms | share |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| `{row['op']}` | {row['calls']} | {row['self_ms']:.1f} | {100 * row['share']:.1f} % |"
                  for row in r["top"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_search", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "search_spaces", "tiny.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {name: profile_step(args.config, overrides, pc) for name, (overrides, pc) in SETUPS.items()}
    text = markdown(results)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
