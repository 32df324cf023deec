"""What a network costs: parameters, multiply-accumulates (MACs) and latency.

MACs are torch's own count (``FlopCounterMode``, convolutions and matrix products, divided by two);
``ptflops`` with ``backend="aten"`` agrees with it exactly. Latency is the median of timed runs in eval
mode without gradients, on one CPU thread by default (see ``measure_latency``).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError


CLOCKS = ("wall", "cpu")


def count_params(module: nn.Module, exclude: Sequence[str] = ("aux_heads",)) -> int:
    """Trainable and frozen parameters of ``module``, leaving out submodules named in ``exclude``.

    Auxiliary heads are excluded by default: they are dropped when the network is deployed.
    """
    total = 0
    for name, p in module.named_parameters():
        if not any(part in exclude for part in name.split(".")):
            total += p.numel()
    return total


@torch.no_grad()
def count_macs(module: nn.Module, input_size: Sequence[int], in_channels: int = 3,
               device: torch.device | str = "cpu") -> int:
    """MACs of one forward pass on a ``(1, in_channels, H, W)`` input (torch's FlopCounterMode / 2).

    Convolutions and matrix products only, as torch counts them; the module is put in eval mode for
    the count and restored afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        x = torch.zeros(1, in_channels, int(input_size[0]), int(input_size[1]), device=device)
        with FlopCounterMode(display=False) as counter:
            module(x)
        return counter.get_total_flops() // 2
    finally:
        module.train(was_training)


def call_macs(module: nn.Module, args: Tuple[Any, ...]) -> float:
    """MACs of one call ``module(*args)`` without gradients (the module's mode is left as it is)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops() / 2


@torch.no_grad()
def measure_latency(module: nn.Module, inputs: Union[torch.Tensor, Tuple[Any, ...]], repeats: int = 5,
                    warmup: int = 1, threads: Optional[int] = 1, runtime: str = "eager", clock: str = "wall") -> float:
    """Median time of ``module(*inputs)`` in milliseconds (eval mode, no grad).

    Args:
        threads: CPU threads during the measurement (``None``: torch's current setting, or
            onnxruntime's default). One thread by default: with several, timings depend on what else
            runs on the cores (threads spin while they wait for a busy core), which a lookup table must
            not. GPU timings synchronise the device.
        runtime: ``eager``, ``torchscript`` (frozen) or ``onnxruntime`` (see ``runtimes.prepare``).
        clock: ``wall`` (elapsed time) or ``cpu`` (the calling thread's CPU time: with one thread, what
            the run takes when it has a core to itself, whatever else runs on the machine; onnxruntime
            with one intra-op thread runs in the calling thread too). See ``CLOCKS``.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError(f"the cpu clock times one thread; got threads={threads}")
    now = time.thread_time if clock == "cpu" else time.perf_counter
    from .runtimes import prepare  # runtimes imports onnx lazily; kept out of this module's import

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    tensors = [a for a in args if torch.is_tensor(a)]
    cuda = bool(tensors) and tensors[0].is_cuda
    was_training, old_threads = module.training, torch.get_num_threads()
    module.eval()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        run = prepare(module, args, runtime, threads)
        for _ in range(warmup):
            run()
        times = []
        for _ in range(max(repeats, 1)):
            if cuda:
                torch.cuda.synchronize()
            start = now()
            run()
            if cuda:
                torch.cuda.synchronize()
            times.append((now() - start) * 1e3)
        return statistics.median(times)
    finally:
        module.train(was_training)
        torch.set_num_threads(old_threads)


def time_interleaved(runs: Mapping[Any, Callable[[], Any]], rounds: int, warmup: int = 1, threads: Optional[int] = 1,
                     clock: str = "wall", log: Optional[Callable[[int], None]] = None) -> Dict[Any, List[float]]:
    """Times every callable once per round, in turn, over ``rounds`` rounds after ``warmup`` untimed
    ones; returns key -> milliseconds per round.

    Interleaving makes a shared machine's load drift hit every callable alike, so medians and their
    ratios hold up where single timings drift by a quarter. ``clock="cpu"`` (one thread only) times the
    calling thread's CPU time (see ``measure_latency``). ``log(round)`` is called after every timed round.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {list(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError(f"the cpu clock times one thread; got threads={threads}")
    now = time.thread_time if clock == "cpu" else time.perf_counter
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    times: Dict[Any, List[float]] = {key: [] for key in runs}
    try:
        for r in range(warmup + max(rounds, 1)):
            for key, run in runs.items():
                start = now()
                run()
                if r >= warmup:
                    times[key].append((now() - start) * 1e3)
            if log is not None and r >= warmup:
                log(r - warmup + 1)
    finally:
        torch.set_num_threads(old_threads)
    return times


def measure_cost(net: nn.Module, input_size: Sequence[int], in_channels: int = 3, device: str = "cpu",
                 repeats: int = 10, threads: Optional[int] = 1, runtime: str = "eager",
                 clock: str = "wall") -> Dict[str, float]:
    """Parameters, MACs and median latency (ms, see ``measure_latency``) of a whole network at
    ``(1, in_channels, H, W)``."""
    net = net.to(device)
    x = torch.zeros(1, in_channels, int(input_size[0]), int(input_size[1]), device=device)
    return {"params": float(count_params(net)), "macs": float(count_macs(net, input_size, in_channels, device)),
            "latency_ms": measure_latency(net, x, repeats, threads=threads, runtime=runtime, clock=clock)}


def check_device(device: Union[str, torch.device], flag: str = "--device") -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it; else one ``ConfigError`` naming it.

    ``cuda`` on a machine without a usable GPU (or a CPU-only torch) would otherwise fail deep inside
    Lightning or torch, after the data was built.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"{flag} {str(device)[:40]!r}: not a device ({str(err).splitlines()[0][:120]}); "
                          f"expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                              f"use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{flag} {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"{flag} {device}: unsupported device type {dev.type!r}; expected cpu or cuda")
    return dev
