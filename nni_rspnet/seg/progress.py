"""Progress that reads well where it lands: redrawn bars on a terminal, plain lines in a log.

A progress bar redraws itself with carriage returns; written to a file (CI logs, nnictl's trial logs,
``nni-rspnet demo > log``) every frame stays, and the log fills with hundreds of kilobytes of bars. So
bars are drawn only when both standard streams are terminals (Lightning draws on stdout, tqdm on
stderr); otherwise progress is a plain line now and then:

- ``trainer_callbacks(enabled)``: for a Lightning ``Trainer``, Lightning's own ``TQDMProgressBar`` on a
  terminal, else ``LineProgress`` (one line every ``every_s`` seconds within an epoch, one per epoch
  with its metrics);
- ``iterate(iterable, desc)``: for plain loops, a tqdm bar on a terminal, else a line every ``every_s``
  seconds and one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, List, Optional, TextIO, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBarBase, TQDMProgressBar
from tqdm import tqdm

from ..runtime import interactive

T = TypeVar("T")
EVERY_S = 30.0  # seconds between two lines within a long epoch or loop


def bars_wanted() -> bool:
    """Whether progress may be drawn as redrawn bars: stdout and stderr are both terminals."""
    return interactive(sys.stdout) and interactive(sys.stderr)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class LineProgress(ProgressBarBase):
    """Lightning progress as whole lines, for logs: nothing is redrawn.

    Args:
        every_s: seconds between two lines within an epoch (a line only when an epoch is that long).
        epoch_lines: also write one line per finished epoch with its metrics (off where the caller
            reports epochs itself, as the search does).
        stream: where the lines go (default: stdout, beside the program's other output).
    """

    def __init__(self, every_s: float = EVERY_S, epoch_lines: bool = True, stream: Optional[TextIO] = None):
        super().__init__()
        self.every_s, self.epoch_lines, self.stream = every_s, epoch_lines, stream
        self._enabled = True
        self._started = self._last = time.monotonic()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, text: str) -> None:
        if self._enabled:
            stream = self.stream or sys.stdout
            stream.write(text + "\n")
            stream.flush()

    def _metrics(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> str:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        return ", ".join(f"{k} {_format(v)}" for k, v in metrics.items())

    def _epoch(self, trainer: "pl.Trainer") -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._started = self._last = time.monotonic()

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        total = self.total_train_batches
        done = self.train_batch_idx
        share = f" ({100 * done / total:.0f} %)" if isinstance(total, int) and total > 0 else ""
        metrics = self._metrics(trainer, pl_module)
        self._write(f"  {self._epoch(trainer)}: batch {done}/{total}{share}, {now - self._started:.0f} s"
                    + (f", {metrics}" if metrics else ""))

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.epoch_lines:
            metrics = self._metrics(trainer, pl_module)
            self._write(f"  {self._epoch(trainer)} done in {time.monotonic() - self._started:.1f} s"
                        + (f": {metrics}" if metrics else ""))


def trainer_callbacks(enabled: bool, epoch_lines: bool = True) -> List[pl.Callback]:
    """The progress callback for a ``Trainer`` built with ``enable_progress_bar=enabled``: Lightning's bar
    on a terminal, ``LineProgress`` otherwise, none when progress is off."""
    if not enabled:
        return []
    return [TQDMProgressBar()] if bars_wanted() else [LineProgress(epoch_lines=epoch_lines)]


def iterate(iterable: Iterable[T], desc: str, total: Optional[int] = None, enabled: bool = True,
            unit: str = "it", every_s: float = EVERY_S, stream: Optional[TextIO] = None) -> Iterator[T]:
    """Loops over ``iterable`` with progress: a tqdm bar on a terminal, else a line every ``every_s``
    seconds and a last one with the count and the time; nothing when ``enabled`` is false."""
    if not enabled:
        yield from iterable
        return
    if bars_wanted():
        yield from tqdm(iterable, desc=desc, total=total, unit=unit)
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    out = stream or sys.stdout
    started = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s and (total is None or done < total):
            last = now
            out.write(f"  {desc}: {done}/{total if total is not None else '?'} {unit}, {now - started:.0f} s\n")
            out.flush()
    out.write(f"  {desc}: {done} {unit} in {time.monotonic() - started:.1f} s\n")
    out.flush()
