"""Section ``latency``: the found networks against torchvision's LR-ASPP- and DeepLabV3-MobileNetV3-Large
(no weights): parameters, MACs and latency, timed interleaved over many rounds; medians and ratios."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.models import segmentation

from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.space.arch import build_network, random_arch, space_spec
from nni_rspnet.space.model import SpaceConfig

from .common import BenchmarkConfig, found_arch
from .render import PEER_NAMES


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
    if name == "lraspp":
        model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    elif name == "deeplabv3":
        model = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                          num_classes=num_classes, aux_loss=False)
    else:
        raise ValueError(f"unknown peer {name!r}; expected 'lraspp' or 'deeplabv3'")
    return DictOutput(model)


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
    return {label: (("skip_connect" if "skip_connect" in c.names else c.names[0]) if c.is_op
                    else list(range(c.n_chosen))) for label, c in space_spec(config).items()}


def _latency_models(cfg: BenchmarkConfig, num_classes: int) -> Tuple[Dict[str, nn.Module], Dict[str, str]]:
    """The networks of the latency table (name -> network, name -> what it is)."""
    models: Dict[str, nn.Module] = {}
    notes: Dict[str, str] = {}
    classes = [f"space.num_classes={num_classes}", "space.aux_heads=false"]
    arch = found_arch(cfg, "tiny")
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


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    return latency_table(cfg, cfg.latency_size, "cpu", cfg.latency_threads, log)
