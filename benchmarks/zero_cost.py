"""Zero-cost proxies as judges of architectures, against the quality protocol's stored trainings.

Every architecture the quality section has trained (``benchmarks.quality``: searched and random
networks), pooled over one or more of its output folders whose trainings are the same (data, space and
training sections equal; the search section may differ), is scored at initialisation by cost measures
and by four zero-cost proxies from the literature, and each score is ranked against the
architecture's mean val mIoU over its training runs (Kendall tau):

- ``naswot``: log-determinant of the kernel of the ReLUs' binary codes over a batch (Mellor et al.,
  "Neural Architecture Search without Training", 2021);
- ``snip``: sum of ``|w * dL/dw|`` for one batch's cross-entropy (Lee et al., 2019; Abdelfattah et
  al., "Zero-Cost Proxies for Lightweight NAS", 2021);
- ``grad_norm``: sum of the parameters' gradient norms for the same loss;
- ``synflow``: log of the sum of ``|w * dR/dw|`` for ``R`` the output sum of the network with absolute
  weights on an all-ones input, BatchNorm in eval mode, float64 (Tanaka et al., 2020).

Each proxy is the mean over ``--init-seeds`` initialisations. It costs seconds per architecture, no
training: the question is whether any of them could replace the supernet as stage 3's judge within a
search's cost band (``search.rerank_by``), where the supernet's own ranking is close to chance.

    python -m benchmarks.zero_cost --runs runs/gdas runs/quick --out runs/zero_cost.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from nni_rspnet.config import RunConfig
from nni_rspnet.fileio import atomic_write_text, read_json
from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.search.rank_check import rank_correlation
from nni_rspnet.seg.data import build_datasets
from nni_rspnet.space.arch import build_network

from .quality import _stored_sections

SAME = ("space", "data", "train")  # what pooled folders must share: the trainings are then comparable
PROXIES = ("naswot", "snip", "grad_norm", "synflow")
MEASURES = ("params", "macs", "macs_per_param") + PROXIES


def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Log-determinant of ``K = C C^T + (1 - C)(1 - C)^T`` for ``C`` the images' ReLU on/off codes."""
    codes: List[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: codes.append((o.detach() > 0).flatten(1).float()))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    if not codes:
        raise ValueError("naswot needs a network with nn.ReLU modules")
    c = torch.cat(codes, 1).double()
    return float(torch.slogdet(c @ c.t() + (1 - c) @ (1 - c).t())[1])


def _grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    net.zero_grad()
    F.cross_entropy(net(x), y, ignore_index=255).backward()
    return [(p.detach(), p.grad) for p in net.parameters() if p.grad is not None]


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sum((p * g).abs().sum() for p, g in _grads(net, x, y)))


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sum(g.norm() for _, g in _grads(net, x, y)))


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Changes ``net`` (float64, absolute weights, eval mode): score a copy or a throw-away network."""
    net.double().eval()
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    net.zero_grad()
    net(torch.ones_like(x, dtype=torch.float64)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters() if p.grad is not None)
    return float(torch.log(torch.tensor(total, dtype=torch.float64))) if total > 0 else float("-inf")


FUNCS: Dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "naswot": naswot, "snip": snip, "grad_norm": grad_norm, "synflow": synflow}


def pool(results_paths: Sequence[str], task: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The task's config sections and its trained architectures: ``{"arch", "runs": {seed: val_miou}}``
    per distinct architecture, over every ``results.json`` given.

    Raises:
        ValueError: a folder whose data, space or training differ from the first's (naming both), or no
            stored training of ``task``.
    """
    sections: Dict[str, Any] = {}
    archs: Dict[str, Dict[str, Any]] = {}
    for path in results_paths:
        tasks = ((read_json(path).get("quality") or {}).get("tasks") or {})
        state = tasks.get(task)
        if not state:
            continue
        stored = _stored_sections(state.get("fingerprint"))
        if stored is None:
            raise ValueError(f"{path}: task {task!r} has no readable config fingerprint")
        if not sections:
            sections, first = stored, path
            data = stored.get("data") or {}
            if str(data.get("dataset", "")).startswith("folder:<out>"):  # the generated shapes, in that folder
                root = os.path.dirname(os.path.abspath(path))
                sections = dict(stored, data=dict(data, dataset=data["dataset"].replace("<out>", root, 1)))
            portable = stored
        elif any(stored.get(k) != portable.get(k) for k in SAME):
            diff = [k for k in SAME if stored.get(k) != portable.get(k)]
            raise ValueError(f"{path}: task {task!r} was trained with other {', '.join(diff)} sections than "
                             f"{first}: its runs cannot be pooled with them")
        named = {f"searched seed{s}": rec["arch"] for s, rec in (state.get("searches") or {}).items()}
        named.update({r["name"]: r["arch"] for r in state.get("random") or []})
        for rec in (state.get("runs") or {}).values():
            arch = named.get(rec.get("name")) if isinstance(rec, dict) else None
            if arch is None or rec.get("val_miou") is None:
                continue
            entry = archs.setdefault(json.dumps(arch, sort_keys=True), {"arch": arch, "runs": {}})
            entry["runs"][rec["seed"]] = rec["val_miou"]
    if not archs:
        raise ValueError(f"no stored training of task {task!r} in {', '.join(results_paths)}")
    return sections, list(archs.values())


def score(run: RunConfig, arch: Dict[str, Any], x: torch.Tensor, y: torch.Tensor, images: int,
          init_seeds: int) -> Dict[str, float]:
    """Cost measures and the proxies' means over ``init_seeds`` initialisations; the losses' proxies see
    the first ``images`` of the batch, naswot all of it (its kernel wants more images)."""
    net = build_network(run.space, arch)
    params = count_params(net)
    macs = count_macs(net, run.data.image_size, run.space.in_channels)
    row = {"params": float(params), "macs": float(macs), "macs_per_param": macs / params}
    for name, fn in FUNCS.items():
        values = []
        for seed in range(init_seeds):
            torch.manual_seed(seed)
            net = build_network(run.space, arch).train()
            values.append(fn(net, x, y) if name == "naswot" else fn(net, x[:images], y[:images]))
        row[name] = statistics.mean(values)
    return row


def batch(run: RunConfig, images: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``images`` training images (a fixed draw), as the training's transforms give them: the random
    augmentation draws from the global RNGs, seeded here so every run scores the same batch."""
    pl.seed_everything(0)
    train = build_datasets(run.data, run.space.num_classes).train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:images].tolist()
    xs, ys = zip(*(train[i] for i in order))
    return torch.stack(xs), torch.stack(ys).long()


def report(task: str, rows: List[Dict[str, Any]]) -> List[str]:
    means = [statistics.mean(r["runs"].values()) for r in rows]
    lines = [f"### {task}: {len(rows)} architectures, val mIoU {min(means):.4f}-{max(means):.4f} "
             f"(mean over each one's training runs)", "",
             "| measure | Kendall tau | p |", "| --- | --- | --- |"]
    for name in MEASURES:
        corr = rank_correlation([r["scores"][name] for r in rows], means)
        tau, p = corr["kendall_tau"], corr["kendall_p"]
        lines.append(f"| {name} | {'n/a' if tau is None else f'{tau:+.2f}'} | {'n/a' if p is None else f'{p:.3f}'} |")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="output folders of benchmarks.quality")
    ap.add_argument("--tasks", nargs="+", default=["digits", "shapes"])
    ap.add_argument("--images", type=int, default=32, help="images of the scoring batch (naswot: twice as many)")
    ap.add_argument("--init-seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=None, help="markdown file for the tables (default: print only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = [os.path.join(d, "results.json") for d in args.runs]
    lines = [f"Zero-cost proxies against trained val mIoU ({', '.join(args.runs)}; {args.images} images, "
             f"{args.init_seeds} initialisations)", ""]
    for task in args.tasks:
        sections, rows = pool(paths, task)
        run = RunConfig.from_sections(sections, f"task {task}")
        x, y = batch(run, 2 * args.images)
        for r in rows:
            r["scores"] = score(run, r["arch"], x, y, args.images, args.init_seeds)
        lines += report(task, rows)
        print("\n".join(lines[-len(MEASURES) - 5:]), flush=True)
    if args.out:
        atomic_write_text(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
