"""Process-wide settings of a run: torch's CPU threads, and whether progress can be drawn as bars.

``set_threads`` is the one place ``--threads`` takes effect (``cli.main`` and the nnictl trial call it):
by default torch keeps its own choice, one thread per physical core. ``sleeping_idle_threads`` (run
when the package is imported) lets those threads sleep when other processes keep the cores busy, and
leaves OpenMP's default (spin briefly) on an idle machine, where sleeping threads halve the speed. ``interactive`` tells whether
stderr is a terminal: progress is drawn as redrawn bars there, and as plain periodic lines in logs
(``seg.progress``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO, Tuple


def busy_cores(interval: float = 0.1, stat: str = "/proc/stat") -> Optional[float]:
    """How many cores the machine's processes keep busy right now: the non-idle share of all cores' time
    over ``interval`` seconds (``/proc/stat``), times the number of cores; ``None`` where that file is
    missing or unreadable (not Linux)."""

    def sample() -> Tuple[int, int]:
        with open(stat, encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    if total <= 0:
        return None
    return (1.0 - (idle1 - idle0) / total) * (os.cpu_count() or 1)


def wait_policy(busy: Optional[float]) -> Optional[str]:
    """The OpenMP wait policy for a run that starts while ``busy`` cores are in use by other processes:
    ``"PASSIVE"`` (idle torch threads sleep) when half a core or more is busy, ``None`` (OpenMP's own
    default: spin briefly, then sleep) on an idle machine or when it cannot be told.

    Measured on 2 cores, 2 torch threads, a training epoch of the demo's network (125 steps of 16
    images at 48x96): idle machine, PASSIVE 30 s, OpenMP's default 16.7 s, one thread 20.6 s; busy
    machine (load 7), 15 training steps of a small conv net: spinning threads 24-33 s, one thread 10 s,
    PASSIVE 3-4 s. A sleeping thread wakes up late for every small op, which costs most on an idle
    machine; a spinning thread holds a core that another process wants, which costs most on a busy one.
    """
    return "PASSIVE" if busy is not None and busy >= 0.5 else None


AUTO_WAIT_POLICY = "NNI_RSPNET_AUTO_WAIT_POLICY"  # the OMP_WAIT_POLICY this package chose, not the user


def sleeping_idle_threads() -> None:
    """Sets ``OMP_WAIT_POLICY`` from how busy the machine is when the package is imported (see
    ``wait_policy``), unless the user's environment sets it. OpenMP reads the variable once, when
    torch loads: this runs on ``import nni_rspnet``, which every entry point does first; it costs
    0.1 s (two reads of ``/proc/stat``).

    A policy this package chose is marked (``NNI_RSPNET_AUTO_WAIT_POLICY``), so a child process (the
    benchmark's demo, an nnictl trial) chooses again for the load it starts under instead of inheriting
    its parent's: a benchmark started while the cores were busy otherwise ran the demo with sleeping
    threads on an idle machine, 51 s per warm-up epoch against 20 s."""
    current = os.environ.get("OMP_WAIT_POLICY")
    if current is not None and os.environ.get(AUTO_WAIT_POLICY) != current:
        return  # the user's own setting
    policy = wait_policy(busy_cores())
    if policy:
        os.environ["OMP_WAIT_POLICY"] = os.environ[AUTO_WAIT_POLICY] = policy
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
        os.environ.pop(AUTO_WAIT_POLICY, None)


def set_threads(threads: int) -> None:
    """Sets torch's intra-op CPU threads for the rest of the process; 0 keeps torch's default.

    Raises:
        ValueError: ``threads`` is negative.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0: one per core), got {threads}")
    if threads > 0:
        import torch  # here: `nni-rspnet --help` and `configs` load no torch

        torch.set_num_threads(threads)


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default: stderr) is a terminal, where a redrawn progress bar is readable."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False
