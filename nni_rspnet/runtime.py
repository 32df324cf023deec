"""Process-wide settings of a run: torch's CPU threads, and whether progress can be drawn as bars.

``set_threads`` is the one place ``--threads`` takes effect (``cli.main`` and the nnictl trial call it):
by default torch keeps its own choice, one thread per physical core. ``interactive`` tells whether
stderr is a terminal: progress is drawn as redrawn bars there, and as plain periodic lines in logs
(``seg.progress``).
"""
from __future__ import annotations

import sys
from typing import Optional, TextIO


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
