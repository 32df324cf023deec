"""Section ``latency``: the found light network, the lightest and heaviest networks of the light Cityscapes
space, the tiny space's found network, and torchvision's LR-ASPP- and DeepLabV3-MobileNetV3-Large (no
weights), each in PyTorch eager, TorchScript (frozen) and onnxruntime (and int8 onnxruntime for the
found network and the peers): parameters, MACs and latency, timed interleaved over many rounds in one
process; medians and per-round ratios to LR-ASPP in the same runtime. Two settings: the goal's (2
threads, wall time) and one thread timed by its CPU time (what the run takes with a core to itself,
robust to other jobs on a shared machine). The found network and LR-ASPP are also profiled (top ops).
"""
from __future__ import annotations

import glob
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from nni_rspnet.measure import count_macs, count_params, time_interleaved
from nni_rspnet.runtimes import RUNTIME_NAMES, prepare, quantize_onnx
from nni_rspnet.search.cost_table import build_cost_table
from nni_rspnet.search.references import reference_network
from nni_rspnet.space.arch import build_network, load_arch, space_spec
from nni_rspnet.space.model import SpaceConfig

from .common import ROOT, BenchmarkConfig, found_arch
from .render import PEER_NAMES

RUNTIMES = ("eager", "torchscript", "onnxruntime")
INT8 = "onnxruntime_int8"
ALL_RUNTIMES = RUNTIMES + (INT8,)
RUNTIME_LABELS = dict(RUNTIME_NAMES, **{INT8: "onnxruntime int8"})
LRASPP = PEER_NAMES["lraspp"]


def torchvision_peer(name: str, num_classes: int) -> nn.Module:
    """``lraspp`` or ``deeplabv3``: the MobileNetV3-Large torchvision model with no weights, returning logits
    (the library's reference networks, ``search.references``)."""
    if name not in ("lraspp", "deeplabv3"):
        raise ValueError(f"unknown peer {name!r}; expected 'lraspp' or 'deeplabv3'")
    return reference_network(name, num_classes)


@torch.inference_mode()
def interleaved_latency(models: Dict[str, nn.Module], x: torch.Tensor, rounds: int, warmup: int = 1,
                        threads: Optional[int] = 2, log: Callable[[str], None] = print) -> Dict[str, List[float]]:
    """Times every model once per round, in turn (eager, wall time); name -> milliseconds per round."""
    for m in models.values():
        m.eval()
    runs = {name: (lambda m=m: m(x)) for name, m in models.items()}
    return time_interleaved(runs, rounds, warmup, threads, "wall", log=lambda r: log(f"[latency] round {r}/{rounds}")
                            if r % 5 == 0 else None)


def lightest_arch(config) -> Dict[str, Any]:
    """``skip_connect`` (else the first op) on every edge, the first inputs of every input choice."""
    return {label: (("skip_connect" if "skip_connect" in c.names else c.names[0]) if c.is_op
                    else list(range(c.n_chosen))) for label, c in space_spec(config).items()}


def extreme_archs(space: SpaceConfig) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The lightest and heaviest architectures of ``space`` by parameters (exact, pruning included: the
    cost table's coordinate descent over every label)."""
    table = build_cost_table(space, (64, 128), latency=False)
    return table.extreme_arch("params", min), table.extreme_arch("params", max)


def found_light(space_name: str = "cityscapes_light") -> List[Tuple[str, str, Dict[str, Any]]]:
    """The shipped architectures ``search_spaces/found/<space>-*.json``: ``(name, file, arch)``."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "search_spaces", "found", f"{space_name}-*.json"))):
        name = os.path.basename(path)[len(space_name) + 1:-len(".json")]
        found.append((name, os.path.relpath(path, ROOT), load_arch(path)))
    return found


def latency_networks(cfg: BenchmarkConfig, num_classes: int) -> List[Dict[str, Any]]:
    """The networks of the table: ``{"name", "what", "net", "kind"}`` (kind: found, space, peer)."""
    classes = [f"space.num_classes={num_classes}", "space.aux_heads=false"]
    nets: List[Dict[str, Any]] = []
    light = SpaceConfig.from_yaml(cfg.light_config, classes)
    for name, path, arch in found_light(light.name):
        nets.append({"name": f"found ({light.name}, {name})", "kind": "found", "net": build_network(light, arch),
                     "what": f"`{path}`"})
    lo, hi = extreme_archs(light)
    nets.append({"name": f"{light.name} space, lightest", "kind": "space", "net": build_network(light, lo),
                 "what": "fewest parameters of the space"})
    nets.append({"name": f"{light.name} space, heaviest", "kind": "space", "net": build_network(light, hi),
                 "what": "most parameters of the space"})
    tiny = found_arch(cfg, "tiny")
    if tiny is not None:
        nets.append({"name": "found (tiny)", "kind": "found", "what": "tiny space, the search section's arch",
                     "net": build_network(SpaceConfig.from_yaml(cfg.tiny_config, classes), tiny)})
    full = SpaceConfig.from_yaml(cfg.cityscapes_config, classes)
    nets.append({"name": "cityscapes space, lightest", "kind": "space", "what": "every op skip_connect",
                 "net": build_network(full, lightest_arch(full))})
    for peer in ("lraspp", "deeplabv3"):
        nets.append({"name": PEER_NAMES[peer], "kind": "peer", "what": "torchvision, weights=None",
                     "net": torchvision_peer(peer, num_classes)})
    return nets


def _int8_run(net: nn.Module, x: torch.Tensor, threads: Optional[int], folder: str) -> Callable[[], Any]:
    """An int8 onnxruntime session of ``net`` (static quantisation, calibrated on a few random images)."""
    from nni_rspnet.runtimes import export_onnx_graph, ort_session

    fp32 = os.path.join(folder, f"m{id(net)}.onnx")
    int8 = os.path.join(folder, f"m{id(net)}.int8.onnx")
    with torch.no_grad():
        export_onnx_graph(net, (x,), fp32)
    gen = torch.Generator().manual_seed(0)
    quantize_onnx(fp32, int8, [torch.randn(x.shape, generator=gen) for _ in range(4)])
    session = ort_session(int8, threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def measure_table(nets: Sequence[Dict[str, Any]], size: Sequence[int], threads: int, clock: str, rounds: int,
                  warmup: int, runtimes: Sequence[str], log: Callable[[str], None]) -> Dict[str, Any]:
    """Every network in every runtime, timed interleaved; rows with medians and ratios to LR-ASPP."""
    h, w = int(size[0]), int(size[1])
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    runs: Dict[Tuple[str, str], Callable[[], Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for item in nets:
            for runtime in runtimes:
                if runtime == INT8:
                    if item["kind"] == "space":
                        continue  # int8 for the found networks and the peers only
                    runs[(item["name"], runtime)] = _int8_run(item["net"], x, threads, folder)
                else:
                    runs[(item["name"], runtime)] = prepare(item["net"], (x,), runtime, threads, folder)
            log(f"[latency] {item['name']}: prepared in {', '.join(runtimes)}")
        log(f"[latency] {len(runs)} (network, runtime) pairs at {h}x{w}, {threads} thread(s), {clock} clock, "
            f"{rounds} interleaved rounds")
        started = time.time()
        times = time_interleaved(runs, rounds, warmup, threads, clock, log=lambda r: log(
            f"[latency] round {r}/{rounds} ({(time.time() - started) / 60:.1f} min)") if r % 5 == 0 else None)
    rows = []
    for (name, runtime), t in times.items():
        ref = times.get((LRASPP, runtime)) or times[(LRASPP, "eager")]
        ref_eager = times[(LRASPP, "eager")]
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        rows.append({"name": name, "runtime": runtime, "median_ms": statistics.median(t), "q1_ms": q[0], "q3_ms": q[2],
                     "round_ratio": statistics.median(a / b for a, b in zip(t, ref)),
                     "vs_lraspp_eager": statistics.median(a / b for a, b in zip(t, ref_eager))})
    return {"threads": threads, "clock": clock, "rounds": rounds, "warmup": warmup, "rows": rows}


def latency_table(cfg: BenchmarkConfig, size: Sequence[int], device: str = "cpu", threads: Optional[int] = 2,
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Eager PyTorch only, on ``device`` (the GPU section): parameters, MACs and interleaved latency of the
    networks of the table, medians and per-round ratios to LR-ASPP."""
    nets = latency_networks(cfg, cfg.latency_classes)
    h, w = int(size[0]), int(size[1])
    x = torch.randn(1, 3, h, w, device=device)
    cuda = str(device).startswith("cuda")

    def call(m: nn.Module) -> Callable[[], Any]:
        def run_once() -> Any:
            with torch.inference_mode():
                out = m(x)
            if cuda:
                torch.cuda.synchronize()
            return out
        return run_once

    runs = {item["name"]: call(item["net"].to(device).eval()) for item in nets}
    times = time_interleaved(runs, cfg.latency_rounds, cfg.latency_warmup, threads, "wall")
    ref = times[LRASPP]
    rows = []
    for item in nets:
        t = times[item["name"]]
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        rows.append({"name": item["name"], "what": item["what"], "params": count_params(item["net"]),
                     "macs": count_macs(item["net"], (h, w), 3, device), "median_ms": statistics.median(t),
                     "q1_ms": q[0], "q3_ms": q[2], "ratio": statistics.median(t) / statistics.median(ref),
                     "round_ratio": statistics.median(a / b for a, b in zip(t, ref))})
    return {"size": [h, w], "device": device, "threads": threads, "rounds": cfg.latency_rounds,
            "warmup": cfg.latency_warmup, "classes": cfg.latency_classes, "rows": rows}


def profile_top_ops(net: nn.Module, size: Sequence[int], threads: int, top: int = 8) -> List[Dict[str, Any]]:
    """The ops that take most of one eager forward pass (torch profiler, self CPU time), with their share."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 3, int(size[0]), int(size[1]))
    torch.set_num_threads(threads)
    net.eval()
    with torch.inference_mode():
        net(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def profile_onnxruntime_ops(net: nn.Module, size: Sequence[int], threads: int, top: int = 8,
                            runs: int = 3) -> List[Dict[str, Any]]:
    """The op types that take most of an onnxruntime run (its own profiler, after graph optimisation: what
    the session really executes), summed over ``runs`` runs and divided by them, with their share."""
    import json as _json

    import onnxruntime as ort

    from nni_rspnet.runtimes import export_onnx_graph

    x = torch.randn(1, 3, int(size[0]), int(size[1]))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.onnx")
        with torch.no_grad():
            export_onnx_graph(net.eval(), (x,), path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        session.run(None, feed)  # warm-up, not profiled
        session.end_profiling()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "prof")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = _json.load(f)
    per_op: Dict[str, List[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op.setdefault(op, []).append(e["dur"] / 1e3)  # microseconds -> ms
    total = sum(sum(v) for v in per_op.values()) or 1.0
    rows = [{"op": op, "calls": len(v) // (runs + 1), "self_ms": sum(v) / (runs + 1), "share": sum(v) / total}
            for op, v in per_op.items()]
    rows.sort(key=lambda r: -r["self_ms"])
    return rows[:top]


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The latency table in both settings, the networks' parameters and MACs, and two profiles."""
    size = cfg.latency_size
    nets = latency_networks(cfg, cfg.latency_classes)
    info = []
    for item in nets:
        item["net"].eval()
        info.append({"name": item["name"], "what": item["what"], "kind": item["kind"],
                     "params": count_params(item["net"]), "macs": count_macs(item["net"], size, 3)})
    settings = [measure_table(nets, size, cfg.latency_threads, "wall", cfg.latency_rounds, cfg.latency_warmup,
                              ALL_RUNTIMES if cfg.latency_int8 else RUNTIMES, log)]
    if cfg.latency_cpu_clock:
        settings.append(measure_table(nets, size, 1, "cpu", cfg.latency_rounds, cfg.latency_warmup,
                                      ALL_RUNTIMES if cfg.latency_int8 else RUNTIMES, log))
    found = next((item for item in nets if item["kind"] == "found"), None)
    profiles, ort_profiles = {}, {}
    for item in [i for i in nets if i["kind"] == "found" and i["name"] != "found (tiny)"] + [
            next(i for i in nets if i["name"] == LRASPP)]:
        profiles[item["name"]] = profile_top_ops(item["net"], size, cfg.latency_threads)
        ort_profiles[item["name"]] = profile_onnxruntime_ops(item["net"], size, 1)
    return {"size": list(size), "classes": cfg.latency_classes, "networks": info, "settings": settings,
            "profiles": profiles, "profiles_onnxruntime": ort_profiles, "load_average": list(os.getloadavg())}
