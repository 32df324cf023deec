"""Section ``demo``: the wall time of ``nni-rspnet demo`` (``--fast`` in quick mode), run as a user runs it,
in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict

from nni_rspnet.errors import UserError
from nni_rspnet.fileio import read_json

from .common import ROOT, BenchmarkConfig


def run(cfg: BenchmarkConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    out = os.path.join(cfg.out_dir, "demo")
    cmd = [sys.executable, "-m", "nni_rspnet.cli", "demo", "--out", out] + (["--fast"] if cfg.quick else [])
    log(f"[demo] {' '.join(cmd[1:])}")
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.demo_timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"measured": True, "ok": False, "seconds": cfg.demo_timeout_s, "command": " ".join(cmd[1:]),
                "why": f"timed out after {cfg.demo_timeout_s:.0f} s"}
    seconds = time.time() - start
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    summary = None
    if proc.returncode == 0:
        try:
            summary = read_json(os.path.join(out, "summary.json"), "demo summary")
        except UserError:  # a demo that exits 0 without its summary: the row says finished, without numbers
            summary = None
    return {"measured": True, "ok": proc.returncode == 0, "returncode": proc.returncode,
            "seconds": round(seconds, 1), "command": "nni-rspnet " + " ".join(cmd[3:]), "tail": tail,
            "load_average": [round(x, 2) for x in os.getloadavg()], "summary": summary}
