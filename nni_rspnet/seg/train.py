"""Training of a segmentation network with PyTorch Lightning, for NNI's search and for retraining.

``SegmentationModule`` is the one Lightning module used everywhere: NNI's one-shot strategies wrap it
(they call its ``training_step`` themselves), multi-trial NNI runs it as the evaluator's module, and
``train_network`` retrains a fixed network with it (checkpoints every epoch, resume after a kill,
history and curves, DDP on CPU). Evaluation lives in ``evaluate.py``.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional

import nni
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to choose
from nni.retiarii.evaluator.pytorch import LightningModule
from pytorch_lightning.strategies import DDPStrategy
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import DivergedError, Interrupted, ModelFileError
from ..fileio import atomic_write_text, load_torch, make_dirs, save_figure, save_torch, write_json
from ..schema import Section
from .data import DataConfig, Datasets, build_loaders, datasets_for
from .deploy import load_model, save_model
from .guard import check_finite, check_finite_weights, check_same_run, fit, rng_state, run_identity, \
    set_rng_state, stopped
from .metrics import IGNORE_INDEX, SegMetric
from .progress import trainer_callbacks

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig(Section):
    """Training of a fixed network, as in the ``train`` section of ``search_spaces/*.yaml``.

    Attributes:
        epochs: training epochs.
        optimizer: ``sgd`` (with momentum, Nesterov off) or ``adamw``.
        lr, momentum, weight_decay: optimiser settings (``momentum`` is AdamW's beta1).
        poly_power: the learning rate decays as ``(1 - t / T) ** poly_power`` after the warm-up.
        warmup_epochs: linear warm-up from ``lr / 100`` to ``lr`` over this many epochs (may be fractional).
        aux_weight: weight of the auxiliary-head losses (used when the network has aux heads).
        ohem_thresh: online hard example mining: keep pixels whose true-class probability is below this
            (0 = plain cross-entropy).
        ohem_min_kept: OHEM keeps at least this many pixels per batch.
        ema_decay: keep an exponential moving average (Polyak) of the weights with this decay and
            validate/export it (0 = off).
        teacher: path of a ``model.pt`` to distil from (``None`` = no distillation).
        kd_weight: weight of the distillation loss.
        kd_temperature: softmax temperature of the distillation loss.
        amp: mixed precision (float16) when training on a GPU; ignored on CPU.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: number of devices (processes on CPU).
        strategy: Lightning strategy, e.g. ``ddp`` (gloo on CPU) or ``auto``.
        seed: seed of the run.
        grad_clip: gradient norm clipping (0 = off).
        log_every_n_steps: Lightning's logging interval.
        threads: torch CPU threads per process (0 = the process' setting: torch's default, one per core,
            or ``--threads``); 1 avoids oversubscribing cores that other processes (or other DDP processes) use.
    """

    SECTION: ClassVar[str] = "train"
    MAXIMA: ClassVar[dict] = {"epochs": 100_000, "warmup_epochs": 100_000, "devices": 1024, "threads": 1024,
                              "ohem_min_kept": 1e9}

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    aux_weight: float = 0.4
    ohem_thresh: float = 0.0
    ohem_min_kept: int = 10000
    ema_decay: float = 0.0
    teacher: Optional[str] = None
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    amp: bool = True
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"
    seed: int = 0
    grad_clip: float = 0.0
    log_every_n_steps: int = 10
    threads: int = 0

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for key in ("weight_decay", "warmup_epochs", "aux_weight", "kd_weight", "grad_clip", "poly_power"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.ohem_thresh < 1:
            raise ValueError(f"ohem_thresh must be in [0, 1), got {self.ohem_thresh}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise ValueError(f"accelerator must be cpu, gpu or auto, got {self.accelerator!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.devices < 1:
            raise ValueError(f"devices must be >= 1, got {self.devices}")
        if self.teacher is not None and not os.path.isfile(self.teacher):
            raise ValueError(f"teacher: checkpoint {self.teacher!r} not found")



_TRAIN = TrainConfig()  # the one source of the training defaults (SegmentationModule's included)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                      ohem_thresh: float = 0.0, ohem_min_kept: int = 10000) -> torch.Tensor:
    """Pixel cross-entropy over non-ignored pixels, optionally with online hard example mining.

    With OHEM (``ohem_thresh > 0``) only pixels whose true-class probability is below
    ``ohem_thresh`` count, but at least the ``ohem_min_kept`` hardest ones (as in BiSeNet/HRNet), so
    easy background does not swamp the gradient. A batch with no valid pixel gives a zero loss that
    still has a graph.
    """
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten()
    loss = loss[target.flatten() != ignore_index]
    if loss.numel() == 0:
        return logits.sum() * 0.0
    if ohem_thresh > 0:
        hard_loss = -math.log(ohem_thresh)
        ordered, _ = loss.sort(descending=True)
        n_min = min(max(1, ohem_min_kept), ordered.numel())
        if ordered[n_min - 1] > hard_loss:
            loss = ordered[ordered > hard_loss]
        else:
            loss = ordered[:n_min]
    return loss.mean()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise KL(teacher || student) of the softened class distributions, times ``T**2``,
    averaged over non-ignored pixels."""
    valid = (target != ignore_index).unsqueeze(1)
    log_p = F.log_softmax(student / temperature, dim=1)
    log_q = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(1, keepdim=True)
    n = valid.sum().clamp(min=1)
    return (kl * valid).sum() / n * temperature ** 2


def poly_warmup_factor(step: int, total_steps: int, warmup_steps: int, power: float) -> float:
    """LR multiplier: linear warm-up from 0.01 to 1, then ``(1 - progress) ** power`` down to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return 0.01 + 0.99 * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return (1.0 - progress) ** power


@nni.trace
class SegmentationModule(LightningModule):
    """Trains and validates ``self.model`` (set by NNI or ``set_model``) for semantic segmentation.

    All init arguments are plain values, so NNI can serialise the module into trial parameters; their
    defaults are ``TrainConfig``'s.
    ``training_step`` returns the loss and does no manual optimisation, so NNI's one-shot strategies
    can call it on their own. ``self.model`` is the only trained submodule; the EMA copy and the
    teacher (both optional, created in ``setup``) are frozen.

    Args:
        num_classes: classes of the network output.
        ignore_index: target value that has no loss and no metric.
        optimizer: ``sgd`` or ``adamw``.
        lr, momentum, weight_decay: optimiser settings.
        poly_power: poly decay power after the warm-up.
        warmup_epochs: linear warm-up length in epochs.
        aux_weight: weight of auxiliary-head losses (when the model has ``aux_heads``).
        ohem_thresh, ohem_min_kept: OHEM (see ``segmentation_loss``); ``ohem_thresh=0`` is off.
        ema_decay: EMA of the weights for validation and export (0 = off).
        teacher: path of a ``model.pt`` to distil from (``None`` = off).
        kd_weight, kd_temperature: distillation loss weight and temperature.
        total_steps: optimiser steps of the whole run for the schedule; 0 asks the Trainer.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, optimizer: str = _TRAIN.optimizer,
                 lr: float = _TRAIN.lr, momentum: float = _TRAIN.momentum, weight_decay: float = _TRAIN.weight_decay,
                 poly_power: float = _TRAIN.poly_power, warmup_epochs: float = _TRAIN.warmup_epochs,
                 aux_weight: float = _TRAIN.aux_weight, ohem_thresh: float = _TRAIN.ohem_thresh,
                 ohem_min_kept: int = _TRAIN.ohem_min_kept, ema_decay: float = _TRAIN.ema_decay,
                 teacher: Optional[str] = _TRAIN.teacher, kd_weight: float = _TRAIN.kd_weight,
                 kd_temperature: float = _TRAIN.kd_temperature, total_steps: int = 0):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.optimizer_name, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay
        self.poly_power, self.warmup_epochs = poly_power, warmup_epochs
        self.aux_weight, self.ohem_thresh, self.ohem_min_kept = aux_weight, ohem_thresh, ohem_min_kept
        self.ema_decay, self.teacher_path = ema_decay, teacher
        self.kd_weight, self.kd_temperature = kd_weight, kd_temperature
        self.total_steps = total_steps
        self.val_miou = SegMetric(num_classes, ignore_index)
        self.train_loss_mean = torchmetrics.MeanMetric()
        self.ema: Optional[nn.Module] = None
        self.teacher: Optional[nn.Module] = None
        self.last_val_miou: Optional[float] = None

    @classmethod
    def from_config(cls, num_classes: int, cfg: TrainConfig, ignore_index: int = IGNORE_INDEX) -> "SegmentationModule":
        """The module for a ``TrainConfig``."""
        return cls(num_classes, ignore_index, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.poly_power,
                   cfg.warmup_epochs, cfg.aux_weight, cfg.ohem_thresh, cfg.ohem_min_kept, cfg.ema_decay, cfg.teacher,
                   cfg.kd_weight, cfg.kd_temperature)

    # -- lifecycle -----------------------------------------------------------------------------------

    def setup(self, stage: Optional[str] = None) -> None:
        # Created here, not in __init__: NNI sets the model after construction. Lightning restores
        # checkpoints after setup, so the EMA weights come back on resume.
        if self.ema_decay > 0 and self.ema is None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        if self.teacher_path and self.teacher is None:
            self.teacher = load_model(self.teacher_path, device="cpu").to(self.device).eval()
            self.teacher.requires_grad_(False)

    def eval_network(self) -> nn.Module:
        """The weights to validate and export: the EMA copy when enabled, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_network()(x)

    # -- steps ---------------------------------------------------------------------------------------

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits, y, self.ignore_index, self.ohem_thresh, self.ohem_min_kept)

    def training_step(self, batch, batch_idx):
        x, y = batch
        aux: List[torch.Tensor] = []
        if self.aux_weight > 0 and len(getattr(self.model, "aux_heads", ())) > 0:
            logits, aux = self.model.forward_aux(x)
        else:
            logits = self.model(x)
        loss = self._loss(logits, y)
        for a in aux:
            loss = loss + self.aux_weight * self._loss(a, y)
        if self.teacher is not None and self.kd_weight > 0:
            self.teacher.eval()  # Lightning puts every submodule in train mode each epoch
            with torch.no_grad():
                t_logits = self.teacher(x)
            loss = loss + self.kd_weight * distillation_loss(logits, t_logits, y, self.kd_temperature,
                                                             self.ignore_index)
        check_finite(loss, "the training loss")  # the one guard, for retraining and for both search steps
        self.train_loss_mean.update(loss.detach())
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.eval_network()(x)
        loss = self._loss(logits, y)
        self.val_miou.update(logits, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_miou.reset()

    def on_validation_epoch_end(self) -> None:
        miou = self.val_miou.compute()  # synced over DDP processes by torchmetrics
        self.log("val_miou", miou, prog_bar=True)
        if self.trainer.sanity_checking:
            return  # NNI keeps the first final result: never report the untrained sanity check
        self.last_val_miou = float(miou)
        if self.running_mode == "multi" and nni.get_current_parameter() is not None:
            nni.report_intermediate_result({"default": self.last_val_miou, "epoch": int(self.current_epoch)})

    def on_fit_end(self) -> None:
        if (self.running_mode == "multi" and nni.get_current_parameter() is not None
                and self.last_val_miou is not None):
            nni.report_final_result({"default": self.last_val_miou})

    # -- optimisation --------------------------------------------------------------------------------

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        # foreach: multi-tensor kernels instead of a Python loop over the ~350 parameter tensors, the default
        # on GPUs but not on CPUs, where it halved AdamW's step (21-27 against 12-15 ms) and made a training
        # step of the tiny space's networks 0.87-0.97x as long (benchmarks/step_cost.md). ``fused`` was no
        # faster in the whole step.
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                  foreach=True)
        else:
            opt = torch.optim.AdamW(params, lr=self.lr, betas=(self.momentum, 0.999), weight_decay=self.weight_decay,
                                    foreach=True)
        trainer = self._trainer  # None when called outside a Trainer (tests, NNI before attaching)
        total = self.total_steps or self._estimated_steps()
        epochs = max(1, int(getattr(trainer, "max_epochs", 1) or 1))
        warmup = int(round(self.warmup_epochs * total / epochs))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: poly_warmup_factor(step, total, warmup, self.poly_power))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _estimated_steps(self) -> int:
        try:
            steps = int(self._trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - NNI's one-shot loaders may not support the estimate
            steps = 0
        if steps <= 0 or steps == float("inf"):
            steps = 1000
        return steps


# --- checkpoints and history -----------------------------------------------------------------------

class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing to a temporary file renamed into place: a kill during the
    write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        save_torch(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Any] = None) -> Dict[str, Any]:
        """Through ``fileio.load_torch``: ``weights_only=True``, and a bad file is one ``ModelFileError``."""
        return load_training_checkpoint(path)


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """A Lightning checkpoint written by ``train_network`` (``weights_only``); errors name the file."""
    ckpt = load_torch(path, "training checkpoint", ModelFileError)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("epoch"), int) or "state_dict" not in ckpt:
        raise ModelFileError(f"{path}: not a training checkpoint written by nni-rspnet train (no epoch and weights)")
    return ckpt


CHECKPOINT_KEY = "nni_rspnet"  # where ExactResume keeps its state in a Lightning checkpoint


class ExactResume(pl.Callback):
    """Puts into every Lightning checkpoint what Lightning leaves out for an exact resume: the random
    state (put back when the resumed training starts, before the first batch is drawn) and the run's
    identity (checked by the caller before resuming, see ``check_same_run``).

    Args:
        identity: ``run_identity(...)`` of this run.
    """

    def __init__(self, identity: Mapping[str, Any]):
        self.identity = dict(identity)
        self._rng: Optional[Dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {"rng": rng_state(), "identity": self.identity}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        self._rng = (checkpoint.get(CHECKPOINT_KEY) or {}).get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rng is not None:
            set_rng_state(self._rng)
            self._rng = None


class HistoryCallback(pl.Callback):
    """Records one row per epoch (losses, mIoU, lr, time) and writes ``history.json``, ``history.csv``
    and ``curves.png`` in ``out_dir`` (rank 0 only). The rows travel inside the Lightning checkpoint,
    so a resumed run continues the same history."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.rows: List[Dict[str, float]] = []
        self._start = time.time()

    def state_dict(self) -> Dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.time()
        pl_module.train_loss_mean.reset()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": int(trainer.current_epoch), "train_loss": float(pl_module.train_loss_mean.compute()),
               "val_loss": float(metrics.get("val_loss", float("nan"))),
               "val_miou": float(metrics.get("val_miou", float("nan"))),
               "lr": float(trainer.optimizers[0].param_groups[0]["lr"]), "seconds": time.time() - self._start}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_history(self.rows, self.out_dir)


def write_history(rows: List[Dict[str, float]], out_dir: str) -> None:
    """``history.json``, ``history.csv`` and ``curves.png`` (loss and mIoU per epoch), written atomically."""
    write_json(os.path.join(out_dir, "history.json"), rows, indent=1)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(out_dir, "history.csv"), buf.getvalue())
    epochs = [r["epoch"] + 1 for r in rows]
    fig = Figure(figsize=(9, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in rows], "o-", label="val")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [r["val_miou"] for r in rows], "o-", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val mIoU")
    fig.tight_layout()
    save_figure(fig, os.path.join(out_dir, "curves.png"), dpi=90)


# --- the retraining entry point --------------------------------------------------------------------

def train_network(net: nn.Module, data_cfg: DataConfig, train_cfg: TrainConfig, out_dir: str, device: str = "cpu",
                  resume: bool = False, space: Optional[Dict[str, Any]] = None, arch: Optional[Dict[str, Any]] = None,
                  progress: bool = True, max_time_s: Optional[float] = None,
                  datasets: Optional[Datasets] = None, tensorboard_dir: Optional[str] = None) -> Dict[str, Any]:
    """Trains ``net`` on ``data_cfg``'s dataset; writes checkpoints, history and ``model.pt`` to ``out_dir``.

    Every epoch ends with validation and an atomic ``last.ckpt``; the curves go to ``history.csv`` (and
    ``curves.png``) and to TensorBoard; with ``resume`` the run continues
    from ``out_dir/last.ckpt`` (epoch, optimiser, schedule, EMA and history) if it exists. The
    trained weights (EMA weights when enabled) go to ``model.pt`` with the space config, the
    architecture, class names and normalisation, so evaluation and export need nothing else.

    Args:
        net: the network (e.g. from ``space.arch.build_network``).
        data_cfg: the data; its classes must be those the network predicts (``space["num_classes"]``,
            else ``net.config.num_classes`` when the network has a config).
        train_cfg: a ``TrainConfig``.
        out_dir: run folder.
        device: ``cpu`` or ``cuda`` (overrides ``train_cfg.accelerator`` when ``cuda``).
        resume: continue from ``out_dir/last.ckpt`` when it exists.
        space: ``SpaceConfig.to_dict()`` of ``net``, stored in ``model.pt``.
        arch: the architecture dict of ``net``, stored in ``model.pt``.
        progress: show progress (a bar on a terminal, a line per epoch in a log; see ``progress.py``).
        max_time_s: stop after this many seconds (Lightning ``max_time``), e.g. for benchmarks.
        datasets: the datasets of ``data_cfg`` when the caller has built them already; built here otherwise.
        tensorboard_dir: where the TensorBoard curves go, in its ``retrain`` folder (default:
            ``out_dir/tensorboard``; an nnictl trial gives ``NNI_OUTPUT_DIR/tensorboard``, where the web UI's
            TensorBoard button looks).

    Returns:
        ``{"val_miou", "epochs", "seconds", "model_path", "history", "global_zero", "resumed_after_epoch",
        "world_size", "backend"}`` (``resumed_after_epoch``: epochs the resumed checkpoint had finished).
    """
    num_classes = space["num_classes"] if space else getattr(getattr(net, "config", None), "num_classes", None)
    train_set, val_set, classes = datasets_for(data_cfg, num_classes, datasets)
    make_dirs(out_dir)
    last = os.path.join(out_dir, "last.ckpt")
    # A resumed run must be the run the checkpoint was written for, or its result is no run's result.
    identity = run_identity(space=space, arch=arch, train=train_cfg.to_dict(), data=data_cfg.to_dict())
    ckpt_path = last if resume and os.path.exists(last) else None
    resumed_after = None
    if ckpt_path is not None:
        ckpt = load_training_checkpoint(ckpt_path)
        check_same_run((ckpt.get(CHECKPOINT_KEY) or {}).get("identity"), identity, ckpt_path)
        resumed_after = int(ckpt["epoch"]) + 1
        del ckpt
    if train_cfg.threads > 0:
        torch.set_num_threads(train_cfg.threads)
    pl.seed_everything(train_cfg.seed, workers=True)
    train_loader, val_loader = build_loaders(data_cfg, train_set, val_set)
    module = SegmentationModule.from_config(len(classes), train_cfg)
    module.set_model(net)
    accelerator = "gpu" if str(device).startswith("cuda") else train_cfg.accelerator
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    history = HistoryCallback(out_dir)
    exact = ExactResume(identity)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=out_dir, filename="best", monitor="val_miou", mode="max",
                                              save_top_k=1, save_last=True, save_on_train_epoch_end=True)
    strategy: Any = None if train_cfg.strategy == "auto" else train_cfg.strategy  # Lightning 1.9 spells auto None
    if strategy == "ddp" and train_cfg.devices > 1 and not on_gpu:
        strategy = DDPStrategy(process_group_backend="gloo")
    trainer = pl.Trainer(
        max_epochs=train_cfg.epochs, accelerator=accelerator, devices=train_cfg.devices, strategy=strategy,
        precision=16 if (on_gpu and train_cfg.amp) else 32,
        callbacks=[history, exact, checkpoint] + trainer_callbacks(progress),
        plugins=[AtomicCheckpointIO()], default_root_dir=out_dir,
        logger=[pl.loggers.CSVLogger(out_dir, name="logs"),
                pl.loggers.TensorBoardLogger(tensorboard_dir or os.path.join(out_dir, "tensorboard"), name="retrain",
                                             version="", default_hp_metric=False)],
        enable_progress_bar=progress, num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(train_cfg.log_every_n_steps, len(train_loader))),
        gradient_clip_val=train_cfg.grad_clip or None, enable_model_summary=False, deterministic=False,
        max_time={"seconds": int(max_time_s)} if max_time_s else None)
    start = time.time()
    try:
        fit(trainer, module, train_loader, val_loader, ckpt_path=ckpt_path)  # Lightning restores every state
        check_finite_weights(module.eval_network(), "the trained network")
    except (Interrupted, DivergedError) as err:
        done = [r["epoch"] + 1 for r in history.rows]
        kept = last if os.path.isfile(last) and done else None
        position = f"after epoch {done[-1]} of {train_cfg.epochs}" if done else None
        if isinstance(err, Interrupted):
            raise Interrupted(stopped(err, kept, position)) from None
        raise DivergedError(stopped(DivergedError(f"the training diverged: {err} (train.lr={train_cfg.lr:g} may be "
                                                  f"too high)"), kept, position, resume=False)) from None
    seconds = time.time() - start
    if module.last_val_miou is None and history.rows:  # resumed a run that had already finished
        module.last_val_miou = history.rows[-1]["val_miou"]
    result = {"val_miou": module.last_val_miou, "epochs": int(trainer.current_epoch), "seconds": seconds,
              "model_path": os.path.join(out_dir, "model.pt"), "history": history.rows,
              "global_zero": trainer.is_global_zero, "resumed_after_epoch": resumed_after,
              "world_size": trainer.world_size,
              "backend": getattr(trainer.strategy, "process_group_backend", None) if trainer.world_size > 1 else None}
    if trainer.is_global_zero:
        meta = {"classes": classes, "dataset": data_cfg.dataset, "mean": list(data_cfg.mean),
                "std": list(data_cfg.std), "val_miou": module.last_val_miou, "train": train_cfg.to_dict()}
        save_model(module.eval_network(), result["model_path"], space=space, arch=arch, meta=meta)
    return result
