"""Progress: bars only on a terminal; in a log, whole lines and never a carriage-return frame."""
from __future__ import annotations

import io

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader, TensorDataset

from nni_rspnet.runtime import interactive
from nni_rspnet.seg import progress
from nni_rspnet.seg.progress import LineProgress, iterate, trainer_callbacks


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_reads_the_stream():
    assert interactive(_Tty()) and not interactive(io.StringIO())
    closed = io.StringIO()
    closed.close()
    assert not interactive(closed)


def test_iterate_writes_lines_not_frames():
    out = io.StringIO()
    assert list(iterate(range(5), "predict", unit="images", every_s=0.0, stream=out)) == list(range(5))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[:4] == [f"  predict: {i}/5 images, 0 s" for i in range(1, 5)]  # one per item at every_s=0
    assert lines[-1].startswith("  predict: 5 images in ")
    quiet = io.StringIO()
    assert list(iterate(range(3), "x", enabled=False, stream=quiet)) == [0, 1, 2] and quiet.getvalue() == ""
    sparse = io.StringIO()
    list(iterate(range(100), "evaluate", stream=sparse))  # default interval: one closing line only
    assert sparse.getvalue().count("\n") == 1


def test_trainer_callbacks_pick_bars_only_on_a_terminal(monkeypatch):
    assert trainer_callbacks(False) == []
    monkeypatch.setattr(progress, "bars_wanted", lambda: False)
    (cb,) = trainer_callbacks(True, epoch_lines=False)
    assert isinstance(cb, LineProgress) and not cb.epoch_lines
    monkeypatch.setattr(progress, "bars_wanted", lambda: True)
    assert isinstance(trainer_callbacks(True)[0], TQDMProgressBar)


class _Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("epoch_lines", [True, False])
def test_line_progress_in_a_lightning_run(tmp_path, epoch_lines):
    data = TensorDataset(torch.randn(12, 3), torch.randn(12, 1))
    out = io.StringIO()
    bar = LineProgress(every_s=0.0, epoch_lines=epoch_lines, stream=out)
    trainer = pl.Trainer(max_epochs=2, callbacks=[bar], enable_progress_bar=True, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    assert trainer.progress_bar_callback is bar  # Lightning draws with ours, not its tqdm bar
    trainer.fit(_Regression(), DataLoader(data, batch_size=4))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    batches = [line for line in lines if ": batch " in line]
    assert batches[0].startswith("  epoch 1/2: batch 1/3 (33 %), ") and "train_loss " in batches[0]
    assert len(batches) == 6  # every_s=0: one line per batch
    done = [line for line in lines if " done in " in line]
    if epoch_lines:
        assert [line.split(" done")[0] for line in done] == ["  epoch 1/2", "  epoch 2/2"]
        assert "train_loss" in done[-1]
    else:
        assert done == []
