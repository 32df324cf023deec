"""The two-stage DARTS variant: cell search, then path search with path attention.

``TwoStageDarts`` is an NNI strategy; run it as
``RetiariiExperiment(space, evaluator, [], TwoStageDarts(...)).run(config)`` with
``config.execution_engine = 'oneshot'``. It runs, in the current process:

1. **warm-up** (weights only) and **stage 1**: the cell's ``LayerChoice``/``InputChoice`` labels
   (``cell/...``) are relaxed as in DARTS; every macro path choice is held "all on" (the uniform
   average of its paths), so the cell is judged in every context;
2. the cell is frozen to its stage-1 decision;
3. **stage 2**: a fresh supernet, started from the stage-1 weights, in which the cell labels are frozen
   and every path choice is a ``PathAttention`` module (``path_attention.py``).

Each stage alternates first-order updates (Liu et al., 2019): an architecture step on a validation
batch, then a weight step on a training batch; the two splits are the evaluator's train and val
loaders and must be disjoint. ``RSPDartsModule`` fixes four defects of NNI 2.10.1's stock
``DartsLightningModule``: the architecture parameters leak into the weight optimiser (they get trained
on the training split), ``arc_learning_rate`` is ignored, (Gumbel-)DARTS temperature annealing never
reaches the modules, and no validation runs during the search. It adds warm-up epochs, temperature
annealing, gradient clipping, an optional resource penalty (``penalty.ResourcePenalty``) and a validation
loop whose metrics (``val_miou`` from the evaluator) are logged every epoch.

References: DARTS (Liu et al., 2019); FasterSeg (Chen et al., 2020) for the resource-aware loss;
RSPNet for the two-stage cell / path search with path attention.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from nni.nas.evaluator.pytorch.lightning import Lightning
from nni.nas.execution.common import Model
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedInput, DifferentiableMixedLayer
from nni.nas.strategy.base import BaseStrategy

from ..seg.guard import check_finite, fit, rng_state, set_rng_state
from .arch_batches import SkippableSampler, skippable_loader
from .path_attention import PathAttention
from .settings import SearchConfig
from .supermodules import FrozenChoice, CellMixedOp, SampledInputs, TemperedSoftmax, make_freeze_hook

_log = logging.getLogger(__name__)

CELL_PREFIX = "cell/"
MACRO_PREFIX = "macro/"

EpochHook = Callable[[Dict[str, Any]], None]
_SEARCH = SearchConfig()  # the one source of the strategy's defaults


# --- the one-stage search module -------------------------------------------------------------------

class RSPDartsModule(DartsLightningModule):
    """First-order DARTS with path attention, warm-up, annealing, clipping, validation and a cost penalty.

    Args:
        inner_module: the evaluator's Lightning module (with the space set as its ``model``).
        mutation_hooks: extra hooks, tried before the defaults.
        arc_learning_rate: learning rate of the architecture optimiser (Adam), honoured.
        arc_weight_decay: its weight decay.
        gradient_clip_val: clip the weight gradients to this norm (``None``: no clipping).
        warmup_epochs: first epochs of this stage that update weights only.
        partial_channels, warmup_sampling, path_sampling, stage1_weight_sampling, stage1_arch_sampling: as
            in ``SearchConfig``.
        tau_init, tau_min: softmax temperature, annealed geometrically from ``tau_init`` at the first
            search epoch to ``tau_min`` at the last.
        total_epochs: epochs of this stage (for the schedule); ``None`` takes the trainer's.
        epoch_offset: epochs of this stage already done (when resuming a killed search).
        frozen: label -> value of choices held fixed (exported as such).
        all_on: label prefixes of input choices held at the uniform average of their inputs (not exported).
        penalty: a ``penalty.ResourcePenalty`` added to the architecture loss, or ``None``.
        restore: state from ``state_for_checkpoint()`` to put back when training starts (resume).

    The architecture optimiser, clipping and temperatures have no defaults here: ``TwoStageDarts``
    passes them, from ``SearchConfig``.
    """

    def __init__(self, inner_module: pl.LightningModule, mutation_hooks: Optional[list] = None, *,
                 arc_learning_rate: float, arc_weight_decay: float, gradient_clip_val: Optional[float],
                 tau_init: float, tau_min: float, partial_channels: int, warmup_sampling: bool,
                 path_sampling: str, stage1_weight_sampling: bool, stage1_arch_sampling: bool,
                 warmup_epochs: int = 0,
                 total_epochs: Optional[int] = None,
                 epoch_offset: int = 0, frozen: Optional[Mapping[str, Any]] = None,
                 all_on: Sequence[str] = (), penalty: Any = None, restore: Optional[Dict[str, Any]] = None):
        if tau_init <= 0 or tau_min <= 0:
            raise ValueError(f"temperatures must be > 0, got tau_init={tau_init}, tau_min={tau_min}")
        if partial_channels < 1:
            raise ValueError(f"partial_channels must be >= 1, got {partial_channels}")
        # Set before super().__init__: it runs the mutation hooks, which read these.
        self.frozen = dict(frozen or {})
        self.all_on = tuple(all_on)
        self.partial_channels = partial_channels
        self.warmup_sampling = warmup_sampling
        self.path_sampling = path_sampling
        self.stage1_weight_sampling = stage1_weight_sampling
        self.stage1_arch_sampling = stage1_arch_sampling
        # Not registered as a child (Module.__init__ has not run yet); the mixed layers register it.
        object.__setattr__(self, "softmax", TemperedSoftmax())
        super().__init__(inner_module, mutation_hooks, arc_learning_rate=arc_learning_rate,
                         gradient_clip_val=gradient_clip_val)
        self.arc_weight_decay = arc_weight_decay
        self.warmup_epochs = warmup_epochs
        self.tau_init = tau_init
        self.tau_min = tau_min
        self.total_epochs = total_epochs
        self.epoch_offset = epoch_offset
        self.penalty = penalty
        self.restore = restore
        self.tau = tau_init
        self.validation_batches = 0
        # Set by TwoStageDarts: the sampler of the architecture batches, skipped while no step uses them.
        self.arch_sampler: Optional[SkippableSampler] = None
        # Set by TwoStageDarts: the sampler of the validation batches, cut to the first ``val_images`` items in
        # every epoch but the stage's last (0: never cut).
        self.val_sampler: Optional[SkippableSampler] = None
        self.val_images = 0

    # NNI hooks -------------------------------------------------------------------------------------

    def default_mutation_hooks(self):
        hooks = [make_freeze_hook(self.frozen, self.all_on)] if (self.frozen or self.all_on) else []
        return hooks + [CellMixedOp.mutate, PathAttention.mutate] + super().default_mutation_hooks()

    def mutate_kwargs(self):
        return {**super().mutate_kwargs(), "softmax": self.softmax, "partial_channels": self.partial_channels}

    # parameters and optimisers ---------------------------------------------------------------------

    def arch_parameters(self) -> List[nn.Parameter]:
        """The architecture parameters, each once (choices sharing a label share one tensor)."""
        seen: Dict[int, nn.Parameter] = {}
        for m in self.nas_modules:
            for p in m.parameters(arch=True):
                seen.setdefault(id(p), p)
        return list(seen.values())

    def configure_architecture_optimizers(self):
        params = self.arch_parameters()
        if not params:
            return None  # a stage with everything frozen trains weights only
        # Stock NNI hard-codes lr=3e-4 here; this honours arc_learning_rate (betas as in DARTS).
        return torch.optim.Adam(params, self.arc_learning_rate, betas=(0.5, 0.999),
                                weight_decay=self.arc_weight_decay)

    def configure_optimizers(self):
        if self.total_epochs is not None and not getattr(self.model, "total_steps", 1):
            # The weight schedule spans the whole stage, not the epochs this trainer has left, so a
            # resumed stage continues the same schedule (its position comes back with the checkpoint).
            per_epoch = self.trainer.estimated_stepping_batches / max(self.trainer.max_epochs or 1, 1)
            self.model.total_steps = max(1, int(round(per_epoch * self.total_epochs)))
        conf = super().configure_optimizers()
        # Stock NNI hands the evaluator's optimiser every parameter, alphas included, so they get
        # trained on the *training* split too; strip them from every weight optimiser.
        arch_ids = {id(p) for p in self.arch_parameters()}
        items = conf[0] if isinstance(conf, tuple) else conf
        items = items if isinstance(items, (list, tuple)) else [items]
        for item in items:
            opt = item["optimizer"] if isinstance(item, dict) else item
            if not getattr(opt, "is_arch_optimizer", False):
                for group in opt.param_groups:
                    group["params"] = [p for p in group["params"] if id(p) not in arch_ids]
        return conf

    # schedule ----------------------------------------------------------------------------------------

    @property
    def stage_epoch(self) -> int:
        """Epoch within this stage, counting the epochs done before a resume."""
        return self.epoch_offset + self.current_epoch

    @property
    def searching(self) -> bool:
        return self.stage_epoch >= self.warmup_epochs

    def temperature(self, epoch: int) -> float:
        """Geometric annealing from ``tau_init`` (first search epoch) to ``tau_min`` (last epoch)."""
        total = self.total_epochs if self.total_epochs is not None else (self.trainer.max_epochs or 1)
        span = max(total - self.warmup_epochs - 1, 1)
        t = min(max(epoch - self.warmup_epochs, 0) / span, 1.0)
        return self.tau_init * (self.tau_min / self.tau_init) ** t

    def set_temperature(self, tau: float) -> None:
        self.tau = tau
        self.softmax.tau = tau
        for m in self.nas_modules:
            if isinstance(m, PathAttention):
                m.tau = tau

    # cost ----------------------------------------------------------------------------------------------

    def choice_probs(self) -> Dict[str, torch.Tensor]:
        """Label -> differentiable probabilities over its candidates (one entry per label).

        Frozen choices give a one-hot (op) or uniform-over-chosen (inputs) vector; "all on"
        choices are left out, so cost tables take the uniform prior for them.
        """
        probs: Dict[str, torch.Tensor] = {}
        for m in self.nas_modules:
            label = getattr(m, "label", None)
            if label is None or label in probs:
                continue
            if isinstance(m, PathAttention):
                probs[label] = m.static_probs()
            elif isinstance(m, (DifferentiableMixedLayer, DifferentiableMixedInput)):
                probs[label] = torch.softmax(m._arch_alpha, -1)
            elif isinstance(m, FrozenChoice) and m.value is not None:
                probs[label] = m.value  # the cost table turns a frozen value into its indicator
        return probs

    # training -----------------------------------------------------------------------------------------

    def on_train_start(self):
        if self.restore:
            for opt, state in zip(self.trainer.optimizers, self.restore.get("optimizers", [])):
                opt.load_state_dict(state)
            for config, state in zip(self.trainer.lr_scheduler_configs, self.restore.get("schedulers", [])):
                config.scheduler.load_state_dict(state)
            if self.penalty is not None and self.restore.get("penalty"):
                self.penalty.load_state_dict(self.restore["penalty"])
            self.restore_rng()
            self.restore = None
        return super().on_train_start()

    def restore_rng(self) -> None:
        """Puts back the random state of the checkpoint being resumed (before the first batch is drawn)."""
        rng = (self.restore or {}).get("rng")
        if isinstance(rng, dict):
            set_rng_state(rng)
        elif rng is not None:  # checkpoints of older versions kept torch's state alone
            torch.set_rng_state(rng)

    def on_train_epoch_start(self):
        self.set_temperature(self.temperature(self.stage_epoch))
        if self.arch_sampler is not None:
            self.arch_sampler.skip = not self.arch_steps
        sample = self.warmup_sampling and not self.searching
        for m in self.nas_modules:
            if isinstance(m, CellMixedOp):
                m.sample = sample
        for m in self.sampled_paths():
            m.sample = self.paths_sampled
        return self.model.on_train_epoch_start()

    @property
    def arch_steps(self) -> bool:
        """Whether this epoch's steps take architecture steps (searching, with something to search)."""
        return self.searching and bool(self.arch_parameters())

    @property
    def paths_sampled(self) -> bool:
        """Whether this epoch's steps fuse sampled paths (``path_sampling``: ``warmup`` or ``stage1``)."""
        return self.path_sampling == "stage1" or (self.path_sampling == "warmup" and not self.searching)

    def sampled_paths(self) -> List[SampledInputs]:
        """The macro path fusions held "all on" in this stage (stage 1), which the warm-up may sample."""
        return [m.get_submodule(m._inner_name) for m in self.nas_modules
                if isinstance(m, FrozenChoice) and isinstance(m.get_submodule(m._inner_name), SampledInputs)]

    def training_step(self, batch, batch_idx):
        arc_optim = self.architecture_optimizers()
        if self.searching and arc_optim is not None:
            if batch["val"] is None:
                raise RuntimeError("an architecture step got no batch: its loader was told to skip this epoch")
            arc_optim.zero_grad()
            with self._weights_frozen(), self._cells_set("gumbel", self.stage1_arch_sampling):
                out = self.model.training_step(batch["val"], 2 * batch_idx)
                loss = out["loss"] if isinstance(out, dict) else out
                if self.penalty is not None:
                    probs = self.choice_probs()
                    loss = loss + self.penalty.loss(probs)
                    self.penalty.adapt(probs)
                check_finite(loss, "the architecture loss")
                self.manual_backward(loss)
            arc_optim.step()
        with self._cells_set("sample", self.searching and self.stage1_weight_sampling):
            out = self.model.training_step(batch["train"], 2 * batch_idx + 1)
            loss = out["loss"] if isinstance(out, dict) else out
            self.advance_optimization(loss, batch_idx, self.gradient_clip_val)
        self.advance_lr_schedulers(batch_idx)
        return out

    @contextlib.contextmanager
    def _cells_set(self, mode: str, on: bool):
        """While ``on``, every relaxed cell edge runs one candidate per forward: drawn uniformly with ``mode``
        ``sample`` (the weight step of ``stage1_weight_sampling``: one sub-network, as in the warm-up), or from
        the Gumbel-softmax of its architecture parameters with ``gumbel`` (the architecture step of
        ``stage1_arch_sampling``)."""
        ops = [m for m in self.nas_modules if isinstance(m, CellMixedOp) and not getattr(m, mode)] if on else []
        for m in ops:
            setattr(m, mode, True)
        try:
            yield
        finally:
            for m in ops:
                setattr(m, mode, False)

    @contextlib.contextmanager
    def _weights_frozen(self):
        """The architecture step needs gradients for the architecture parameters only: with the weights
        marked as not requiring them, autograd neither computes the weights' gradients (about half of a
        convolution's backward) nor keeps the convolutions' inputs for them. Stock NNI computes both and
        throws them away (the weight step zeroes them). Not under several processes, whose gradient
        reducer expects every weight's gradient."""
        if getattr(self._trainer, "world_size", 1) > 1:
            yield
            return
        arch = {id(p) for p in self.arch_parameters()}
        weights = [p for p in self.parameters() if p.requires_grad and id(p) not in arch]
        for p in weights:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in weights:
                p.requires_grad_(True)

    def on_train_epoch_end(self):
        metrics = {"tau": self.tau}
        if self.penalty is not None:
            with torch.no_grad():
                metrics.update(self.penalty.summary(self.choice_probs()))
        self.log_dict(metrics)
        return self.model.on_train_epoch_end()

    # validation (missing from the stock module) -------------------------------------------------------

    @property
    def last_epoch(self) -> bool:
        """Whether this is the stage's last epoch (whose validation is the stage's result)."""
        total = self.total_epochs if self.total_epochs is not None else (self.trainer.max_epochs or 1)
        return self.stage_epoch >= total - 1

    def on_validation_epoch_start(self):
        for m in self.nas_modules:
            if isinstance(m, PathAttention):
                m.reset_attention()
        self.validation_batches = 0
        if self.val_sampler is not None:
            # Only the last epoch's validation decides anything (stage 2's path attention is averaged over
            # it); the others are progress reports, which a part of the split gives at a fraction of the cost.
            self.val_sampler.limit = None if self.last_epoch or not self.val_images else self.val_images
        if self.warmup_sampling and not self.searching:
            self._validate_one_path()
        elif self.paths_sampled:
            self._pick_paths(torch.Generator().manual_seed(1000 + self.stage_epoch))
        if self.searching and self.stage1_weight_sampling:
            self._validate_argmax_cell()
        return self.model.on_validation_epoch_start()

    def _validate_argmax_cell(self) -> None:
        """With sampled weight steps the cell search validates the sub-network it would export, each edge's
        argmax op, not the relaxed mixture of every op, which the weights never run in training: a truer
        score, at the cost of one network instead of every candidate (the stage's last validation covers the
        whole architecture split)."""
        for m in self.nas_modules:
            if isinstance(m, CellMixedOp):
                m.chosen = int(m._arch_alpha.argmax())

    def _pick_paths(self, generator: torch.Generator) -> None:
        """Pins every sampled path fusion to a draw of ``generator`` (validation of a sampled stage)."""
        for m in self.sampled_paths():
            m.chosen = sorted(torch.randperm(m.n, generator=generator)[: m.k].tolist())

    def _validate_one_path(self) -> None:
        """During a sampled warm-up the supernet is validated as what it trains: one sub-network, the same
        op for every edge that shares a label, drawn afresh each epoch (seeded by the epoch, so the
        search's own random stream is untouched)."""
        generator = torch.Generator().manual_seed(1000 + self.stage_epoch)
        picks: Dict[str, int] = {}
        for m in self.nas_modules:
            if isinstance(m, CellMixedOp):
                if m.label not in picks:
                    picks[m.label] = int(torch.randint(len(m.op_names), (), generator=generator))
                m.chosen = picks[m.label]
        if self.paths_sampled:
            self._pick_paths(generator)

    def validation_step(self, batch, batch_idx):
        if batch is None:  # past this epoch's ``val_images``
            return None
        self.validation_batches += 1
        return self.model.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self):
        for m in self.nas_modules:
            if isinstance(m, CellMixedOp):
                m.chosen = None
        for m in self.sampled_paths():
            m.chosen = list(range(m.n))
        return self.model.on_validation_epoch_end()

    # state -----------------------------------------------------------------------------------------------

    def state_for_checkpoint(self) -> Dict[str, Any]:
        """Weights, architecture parameters, optimiser, schedule and penalty states, every RNG and the
        temperature: enough to resume exactly."""
        return {
            "model": {k: v.detach().clone() for k, v in self.state_dict().items()},  # a snapshot, not views
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in self.trainer.optimizers],
            "schedulers": [copy.deepcopy(c.scheduler.state_dict()) for c in self.trainer.lr_scheduler_configs],
            "penalty": self.penalty.state_dict() if self.penalty is not None else None,
            "rng": rng_state(),
            "tau": self.tau,
        }


# --- the strategy --------------------------------------------------------------------------------------

class _EpochEnd(pl.Callback):
    """Calls the strategy at the end of every training epoch (after validation has run)."""

    def __init__(self, strategy: "TwoStageDarts", stage: int):
        self.strategy = strategy
        self.stage = stage

    def on_train_epoch_end(self, trainer: pl.Trainer, module: RSPDartsModule) -> None:
        self.strategy._epoch_end(self.stage, trainer, module)


class TwoStageDarts(BaseStrategy):
    """Two-stage DARTS variant (RSPNet): warm-up, cell search, cell frozen, path search with path attention.

    Every default is ``SearchConfig``'s; ``TwoStageDarts.from_config(search_cfg)`` takes a whole section.

    Args:
        warmup_epochs: weights-only epochs at the start of stage 1.
        stage1_epochs: cell-search epochs (after the warm-up).
        stage2_epochs: path-search epochs.
        stage2_warmup_epochs: weights-only epochs at the start of stage 2.
        arc_learning_rate: learning rate of the architecture optimiser (honoured, unlike stock NNI).
        arc_weight_decay: its weight decay.
        gradient_clip_val: gradient-norm clipping of the weight step (``None``: off).
        tau_init, tau_min: softmax temperature schedule of each stage (geometric annealing).
        partial_channels: ``K`` of PC-DARTS' partial channel connections in the cell search (1: off).
        warmup_sampling: during the warm-up epochs each cell edge trains one uniformly drawn candidate
            per step (single-path, about the cost of one network) instead of all of them.
        path_sampling, stage1_weight_sampling, stage1_arch_sampling: see ``SearchConfig``.
        val_images: images of the architecture split validated in every epoch but a stage's last (0: all).
        penalty: a ``penalty.ResourcePenalty`` (expected cost vs. a target) or ``None``.
        cell_prefix, macro_prefix: label prefixes that tell the two stages apart.
        epoch_hook: called with a dict (stage, epoch, metrics, ...) after every epoch of either stage;
            the driver checkpoints there and an nnictl trial reports intermediate results.
        resume_state: a checkpoint from ``epoch_hook``'s ``state`` entry, to continue a killed search.

    After ``run``, ``cell_arch`` holds the stage-1 decision, ``arch`` the full architecture (also
    ``export_top_models()[0]``) and ``probs`` the probabilities of both stages.

    Example::

        strategy = TwoStageDarts(warmup_epochs=1, stage1_epochs=3, stage2_epochs=3, arc_learning_rate=3e-3)
        exp = RetiariiExperiment(RSPNetSpace(cfg), Lightning(module, Trainer(...), train_loader, val_loader),
                                 [], strategy)
        config = RetiariiExeConfig()
        config.execution_engine = "oneshot"
        exp.run(config)
        arch = exp.export_top_models()[0]          # flat label -> choice, ready for fixed_arch(arch)

    The evaluator's Trainer is a template: each stage runs on a fresh copy with its own ``max_epochs``.
    """

    def __init__(self, warmup_epochs: int = _SEARCH.warmup_epochs, stage1_epochs: int = _SEARCH.stage1_epochs,
                 stage2_epochs: int = _SEARCH.stage2_epochs, stage2_warmup_epochs: int = _SEARCH.stage2_warmup_epochs,
                 arc_learning_rate: float = _SEARCH.arc_lr, arc_weight_decay: float = _SEARCH.arc_weight_decay,
                 gradient_clip_val: Optional[float] = _SEARCH.grad_clip or None, tau_init: float = _SEARCH.tau_init,
                 tau_min: float = _SEARCH.tau_min, partial_channels: int = _SEARCH.partial_channels,
                 warmup_sampling: bool = _SEARCH.warmup_sampling,
                 stage1_weight_sampling: bool = _SEARCH.stage1_weight_sampling,
                 stage1_arch_sampling: bool = _SEARCH.stage1_arch_sampling,
                 path_sampling: str = _SEARCH.path_sampling, val_images: int = _SEARCH.val_images,
                 penalty: Any = None,
                 cell_prefix: str = CELL_PREFIX, macro_prefix: str = MACRO_PREFIX,
                 epoch_hook: Optional[EpochHook] = None, resume_state: Optional[Dict[str, Any]] = None):
        for key, value in (("warmup_epochs", warmup_epochs), ("stage2_warmup_epochs", stage2_warmup_epochs)):
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        for key, value in (("stage1_epochs", stage1_epochs), ("stage2_epochs", stage2_epochs)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if arc_learning_rate <= 0:
            raise ValueError(f"arc_learning_rate must be > 0, got {arc_learning_rate}")
        self.epochs = {1: warmup_epochs + stage1_epochs, 2: stage2_warmup_epochs + stage2_epochs}
        self.warmup = {1: warmup_epochs, 2: stage2_warmup_epochs}
        self.module_kwargs = dict(arc_learning_rate=arc_learning_rate, arc_weight_decay=arc_weight_decay,
                                  gradient_clip_val=gradient_clip_val, tau_init=tau_init, tau_min=tau_min,
                                  partial_channels=partial_channels, warmup_sampling=warmup_sampling,
                                  path_sampling=path_sampling, stage1_weight_sampling=stage1_weight_sampling,
                                  stage1_arch_sampling=stage1_arch_sampling)
        if val_images < 0:
            raise ValueError(f"val_images must be >= 0, got {val_images}")
        self.val_images = val_images
        self.penalty = penalty
        self.cell_prefix = cell_prefix
        self.macro_prefix = macro_prefix
        self.epoch_hook = epoch_hook
        self.resume_state = resume_state
        self.model: Optional[RSPDartsModule] = None
        self.cell_arch: Optional[Dict[str, Any]] = None
        self.cell_probs: Dict[str, float] = {}
        self.arch: Optional[Dict[str, Any]] = None
        self.probs: Dict[str, float] = {}
        self.history: List[Dict[str, Any]] = []

    @classmethod
    def from_config(cls, cfg: SearchConfig, penalty: Any = None, epoch_hook: Optional[EpochHook] = None,
                    resume_state: Optional[Dict[str, Any]] = None) -> "TwoStageDarts":
        """The strategy for the ``search`` section ``cfg`` (epochs, architecture optimiser, clipping,
        temperatures); the other arguments as in ``__init__``."""
        return cls(warmup_epochs=cfg.warmup_epochs, stage1_epochs=cfg.stage1_epochs, stage2_epochs=cfg.stage2_epochs,
                   stage2_warmup_epochs=cfg.stage2_warmup_epochs, arc_learning_rate=cfg.arc_lr,
                   arc_weight_decay=cfg.arc_weight_decay, gradient_clip_val=cfg.grad_clip or None,
                   tau_init=cfg.tau_init, tau_min=cfg.tau_min, partial_channels=cfg.partial_channels,
                   warmup_sampling=cfg.warmup_sampling, path_sampling=cfg.path_sampling,
                   stage1_weight_sampling=cfg.stage1_weight_sampling, stage1_arch_sampling=cfg.stage1_arch_sampling,
                   val_images=cfg.val_images, penalty=penalty,
                   epoch_hook=epoch_hook, resume_state=resume_state)

    # BaseStrategy --------------------------------------------------------------------------------------

    def run(self, base_model: Model, applied_mutators) -> None:
        """Runs both stages on ``base_model.python_object`` with ``base_model.evaluator``."""
        if applied_mutators:
            raise ValueError("TwoStageDarts is a one-shot strategy: run it with execution_engine='oneshot' "
                             "and no custom mutators")
        evaluator = base_model.evaluator
        if not isinstance(evaluator, Lightning):
            raise TypeError(f"TwoStageDarts needs a Lightning evaluator, got {type(evaluator).__name__}")
        if evaluator.train_dataloaders is None or evaluator.val_dataloaders is None:
            raise TypeError("TwoStageDarts needs both train and val dataloaders in the evaluator (disjoint splits)")
        space: nn.Module = base_model.python_object
        # Pristine copies: stage 2 builds its own supernet (stage 1 mutates the space in place).
        space2 = copy.deepcopy(space)
        inner2 = copy.deepcopy(evaluator.module)
        state = self.resume_state or {}
        self.history = list(state.get("history", []))

        if state.get("stage", 1) == 1:
            done = state.get("epoch", 0) if state else 0
            module1 = self._fit(1, space, evaluator.module, evaluator, frozen={},
                                all_on=(self.macro_prefix,), state=state if state else None, done=done)
            export = module1.export()
            self.cell_arch = {k: v for k, v in export.items() if k.startswith(self.cell_prefix)}
            self.cell_probs = {k: v for k, v in module1.export_probs().items() if k.startswith(self.cell_prefix)}
            weights1 = module1.model.state_dict()
            state = None
        else:
            self.cell_arch = dict(state["cell_arch"])
            self.cell_probs = dict(state.get("cell_probs", {}))
            weights1 = None
        done = state.get("epoch", 0) if state else 0
        module2 = self._fit(2, space2, inner2, evaluator, frozen=self.cell_arch, all_on=(),
                            state=state, done=done, init_weights=weights1)
        self.model = module2
        self.arch = dict(sorted(module2.export().items()))
        self.probs = {**self.cell_probs, **module2.export_probs()}

    def export_top_models(self, top_k: int = 1) -> List[Dict[str, Any]]:
        """``[arch]``: one-shot searches have one answer."""
        if self.arch is None:
            raise RuntimeError("TwoStageDarts has not run yet: nothing to export")
        return [dict(self.arch)]

    # internals -----------------------------------------------------------------------------------------

    def _fit(self, stage: int, space: nn.Module, inner: pl.LightningModule, evaluator,
             frozen: Mapping[str, Any], all_on: Sequence[str], state: Optional[Dict[str, Any]], done: int,
             init_weights: Optional[Dict[str, torch.Tensor]] = None) -> RSPDartsModule:
        inner.running_mode = "oneshot"
        inner.set_model(space)
        if self.penalty is not None and state is None:
            self.penalty.reset()
        module = RSPDartsModule(inner, warmup_epochs=self.warmup[stage], total_epochs=self.epochs[stage],
                                epoch_offset=done, frozen=frozen, all_on=all_on,
                                penalty=self.penalty, restore=state, **self.module_kwargs)
        if init_weights is not None:
            _load_matching(module.model, init_weights)
        if state is not None:
            module.load_state_dict(state["model"])
        remaining = self.epochs[stage] - done
        if remaining > 0:
            trainer = _stage_trainer(evaluator.trainer, remaining, _EpochEnd(self, stage))
            # Two copies of the architecture loader: one for the steps, skipped in the warm-up, and one for
            # validation, cut to ``val_images`` in every epoch but the last.
            arch_loader, module.arch_sampler = skippable_loader(evaluator.val_dataloaders)
            val_loader, module.val_sampler = skippable_loader(evaluator.val_dataloaders)
            module.val_images = self.val_images
            fit(trainer, module, {"train": evaluator.train_dataloaders, "val": arch_loader},
                val_loader)  # Ctrl-C raises Interrupted: never a silently shortened stage
        elif state is not None:  # the stage had ended: export and go on as right after its last epoch
            module.set_temperature(float(state.get("tau", module.temperature(done - 1))))
            module.restore_rng()
            module.restore = None
        return module

    def _epoch_end(self, stage: int, trainer: pl.Trainer, module: RSPDartsModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)}
        metrics["tau"] = module.tau
        if module.penalty is not None:
            with torch.no_grad():
                metrics.update(module.penalty.summary(module.choice_probs()))
        epoch = module.stage_epoch + 1
        record = {"stage": stage, "epoch": epoch, "epochs": self.epochs[stage],
                  "global_epoch": epoch + (self.epochs[1] if stage == 2 else 0),
                  "searching": module.searching, "metrics": metrics}
        self.history.append(record)
        if self.epoch_hook is None:
            return
        state = module.state_for_checkpoint()
        state.update(stage=stage, epoch=epoch, history=list(self.history))
        if stage == 2:
            state.update(cell_arch=self.cell_arch, cell_probs=self.cell_probs)
        self.epoch_hook({**record, "state": state, "arch": module.export(), "probs": module.export_probs()})


def _load_matching(target: nn.Module, weights: Mapping[str, torch.Tensor]) -> int:
    """Copies every tensor of ``weights`` whose name and shape exist in ``target``; returns how many."""
    own = target.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(matched, strict=False)
    _log.debug("stage 2 starts from %d of %d stage-1 tensors", len(matched), len(own))
    return len(matched)


def _stage_trainer(template: pl.Trainer, max_epochs: int, callback: pl.Callback) -> pl.Trainer:
    """A fresh trainer like the evaluator's (a Trainer is single-use), for ``max_epochs`` more epochs."""
    kwargs = dict(getattr(template, "trace_kwargs", {}) or {})
    callbacks = list(kwargs.get("callbacks") or [])
    kwargs.update(max_epochs=max_epochs, max_steps=-1, callbacks=callbacks + [callback], num_sanity_val_steps=0,
                  check_val_every_n_epoch=1)
    return pl.Trainer(*list(getattr(template, "trace_args", []) or []), **kwargs)
