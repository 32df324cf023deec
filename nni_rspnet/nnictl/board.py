"""What a trial shows outside NNI's table: TensorBoard curves and the found architecture, and a summary
in the trial's log.

The NNI web UI's TensorBoard button starts TensorBoard on ``<trial folder>/tensorboard``
(``NNI_OUTPUT_DIR/tensorboard``). A trial writes there:

- ``search/``: one point per search epoch (validation mIoU, temperature, cost terms);
- ``retrain/``: the retraining curves (Lightning's ``TensorBoardLogger``, see ``seg.train``);
- ``architecture/``: the found architecture as a table (parameters, MACs, latency, mIoU, where the
  files are) under TensorBoard's Text tab and as a picture under its Images tab.

NNI 2.10's trial panel shows the tuner's parameters and the trial's log ("View trial log"); the
summary ``architecture_summary`` makes is printed at the end of that log.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

BOARD = "tensorboard"  # the folder under NNI_OUTPUT_DIR that the web UI's TensorBoard button opens


def board_dir(out: Path, run: str = "") -> Path:
    """``out/tensorboard`` or one run folder in it."""
    return out / BOARD / run if run else out / BOARD


class SearchCurves:
    """Writes one TensorBoard point per search epoch into ``out/tensorboard/search``."""

    def __init__(self, out: Path):
        self.writer = SummaryWriter(os.fspath(board_dir(out, "search")))

    def add(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"search/{key}", float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def architecture_summary(arch: Mapping[str, Any], final: Mapping[str, Any], input_size: Sequence[int], out: Path,
                         described: str) -> str:
    """The found architecture as Markdown: its costs and score, where its files are, and its choices."""
    h, w = input_size
    rows = [("validation mIoU (retrained)", f"{final['default']:.4f}"),
            ("parameters", f"{final['params']:,}"),
            ("MACs", f"{final['macs'] / 1e6:.2f} M at {h}x{w}"),
            ("latency", f"{final['latency_ms']:.2f} ms on this CPU, 1 thread, at {h}x{w}"),
            ("picture", f"file://{(out / 'arch.png').resolve()} (and TensorBoard's Images tab)"),
            ("architecture", f"file://{(out / 'arch.json').resolve()}"),
            ("network", f"file://{(out / 'model_scripted.pt').resolve()} (TorchScript)")]
    table = "| found architecture | |\n| --- | --- |\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    choices = "\n".join("    " + line for line in described.splitlines())  # Markdown code block
    return f"{table}\n{choices}\n\n    {json.dumps(dict(arch), sort_keys=True)}\n"


def write_architecture(out: Path, summary: str, picture: Optional[Path] = None) -> None:
    """The summary under TensorBoard's Text tab and the picture under its Images tab (``architecture`` run)."""
    with SummaryWriter(os.fspath(board_dir(out, "architecture"))) as writer:
        writer.add_text("architecture", summary, 0)
        if picture is not None and picture.is_file():
            with Image.open(picture) as im:
                writer.add_image("architecture", np.asarray(im.convert("RGB")), 0, dataformats="HWC")
