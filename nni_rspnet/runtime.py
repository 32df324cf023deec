"""Process-wide settings of a run: torch's CPU threads, and whether progress can be drawn as bars.

``set_threads`` is the one place ``--threads`` takes effect (``cli.main`` and the nnictl trial call it):
by default torch keeps its own choice, one thread per physical core. ``sleeping_idle_threads`` (run
when the package is imported) keeps those threads cheap on a machine whose cores other processes use
too. ``interactive`` tells whether
stderr is a terminal: progress is drawn as redrawn bars there, and as plain periodic lines in logs
(``seg.progress``).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, TextIO


def sleeping_idle_threads() -> None:
    """Lets torch's idle OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``), unless the
    environment already says otherwise.

    A spinning thread holds a core while it waits for the others; when other processes want the same
    cores, a step waits for threads that are not running. Measured on 2 shared cores (load 7): 15
    training steps of a small conv net took 24-33 s with 2 spinning threads, 10 s with one thread, 3-4 s
    with 2 sleeping threads. OpenMP reads the variable once, when torch loads: this runs on
    ``import nni_rspnet``, which every entry point does first.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
