"""``SearchConfig``: the ``search`` section of a config file, and the one source of every search default.

The strategy (``strategy.TwoStageDarts``) takes its defaults from here and ``TwoStageDarts.from_config``
builds it from a ``SearchConfig``; the driver (``driver.run_search``) reads the rest (targets, cost
table, batches, threads, seed). Modules below the strategy take every value as an argument.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Union

from ..runtimes import check_runtime
from ..schema import Section
from .targets import LatencyTarget, parse_latency_target


@dataclass
class SearchConfig(Section):
    """The search, as in the ``search`` section of ``search_spaces/*.yaml``.

    Attributes:
        warmup_epochs: weights-only epochs before stage 1.
        stage1_epochs: cell-search epochs.
        stage2_epochs: path-search epochs.
        stage2_warmup_epochs: weights-only epochs at the start of stage 2.
        optimizer: ``adamw`` or ``sgd``, the optimiser of the supernet weights (training split).
        lr, momentum, weight_decay: its settings (``momentum`` is AdamW's beta1).
        partial_channels: ``K`` of PC-DARTS' partial channel connections: during the cell search only
            ``1/K`` of each edge's channels go through the relaxed candidate ops (1: off).
        warmup_sampling: during the warm-up epochs every cell edge trains one candidate drawn
            uniformly per step (single-path, as SPOS): a step costs about one network instead of the
            whole relaxed cell, and every candidate learns to work alone before the architecture moves.
        stage1_weight_sampling: the weight steps of the cell search train one sampled sub-network as the
            warm-up does (one op per cell edge); its architecture steps stay relaxed (the DARTS gradient of
            every candidate). A stage-1 step then costs a relaxed pass with frozen weights plus one
            sub-network, instead of two relaxed passes: 0.59x the stage-1 epoch on the built-in data (75 s
            against 128 s, 2 cores); searched digits networks 0.625 +- 0.012 mean val mIoU against 0.631 +-
            0.007 relaxed (3 searches x 2 seeds, BENCHMARKS.md). Off here; on in ``tiny.yaml``, whose 3+1+1
            search with it trained as good networks as the 18+2+1 relaxed one in a fifth of the time.
        stage1_arch_sampling: the architecture steps of the cell search run one candidate per cell edge,
            drawn from the Gumbel-softmax of its architecture parameters, with the straight-through gradient
            (GDAS, Dong and Yang, 2019), instead of every candidate (DARTS): with sampled weight steps a stage-1
            step takes 0.53x the time (0.260 against 0.490 s wall, 48x96, batch 16, 2 threads) and 0.71x the
            peak memory; searched networks 0.631 +- 0.012 (digits) and 0.583 +- 0.019 (shapes) mean val mIoU
            against 0.633 +- 0.012 and 0.560 +- 0.027 with relaxed architecture steps (3 searches x 2 seeds,
            BENCHMARKS.md, "GDAS architecture steps"). Off here; on in ``tiny.yaml``. With
            ``stage1_weight_sampling`` the cell search's validation scores the argmax sub-network (one op per
            edge) rather than the relaxed mixture that sampled weight steps never train.
        path_sampling: where every trellis node of stage 1 fuses ``paths_per_node`` of its paths, drawn
            uniformly per step, instead of the mean of all of them: ``warmup`` (with ``warmup_sampling``),
            ``stage1`` (the warm-up and the cell search) or ``off``. The shared weights then learn the
            sub-networks the space can export, which is what lets the supernet rank them.
        arc_lr, arc_weight_decay: Adam of the architecture parameters (validation split).
        tau_init, tau_min: softmax temperature, annealed geometrically within each stage.
        grad_clip: gradient-norm clipping of the weight step (0 = off).
        target_latency: latency to aim at, in milliseconds (``12``, ``"12ms"``) or relative to a
            reference network measured on the same machine, runtime, threads and input size when the
            cost table is measured (``"0.5xlraspp"``); see ``targets.parse_latency_target``.
        target_latency_ms: the same in milliseconds only (a number; what the nnictl tuner samples).
        target_params: parameter count to aim at. At most one of the three targets may be set.
        lambda_init, lambda_rate: initial weight of the resource penalty and its adaptation speed.
        latency_input_size: ``[H, W]`` at which costs are measured, the deployment size (default: the
            data's image size).
        latency_device: where latencies are measured (default: the search device).
        latency_runtime: the runtime the network will be deployed with, whose latencies the cost table
            holds: ``eager`` (PyTorch), ``torchscript`` (frozen) or ``onnxruntime``.
        latency_threads: CPU threads while timing (0: the process' setting). One by default: timings
            taken with one thread hold up on a machine that other jobs share.
        latency_repeats: timed runs per candidate (the median is kept).
        lut: a cost table from ``nni-rspnet latency-table`` (default: measured at the start, or the
            ``cost_table.json`` of the output folder when it was measured for the same space and
            settings).
        limit_batches: batches per epoch and split (0 = all), for quick runs.
        val_images: images of the architecture split that score the supernet at the end of every epoch
            but each stage's last (0 = all). Those scores are progress reports; the last epoch's, on the
            whole split, is the stage's result, and stage 2's path attention is averaged over it. On the
            built-in data a warm-up epoch took 13.5 s instead of 16.4 s: 0.7 s validating 256 images, 3.2 s
            validating all 1000 (2 cores).
        arch_fraction: share of the data's *train* split that trains the architecture parameters (and
            gives the supernet's per-epoch validation mIoU); the rest trains the weights. The data's
            val split is never seen by the search, so the found network is evaluated on held-out data.
        threads: CPU threads of the search (0 = the process' setting: torch's default, one per core, or
            ``--threads``); 1 avoids threads spinning for cores that other processes hold.
        seed: seed of weights, architecture parameters and data order.
        rerank_by: stage 3, how the found architecture is chosen among candidates drawn from the learned
            distributions at the argmax's cost (``select.py``): ``none`` (the supernet's argmax, the
            default: ``macs`` measured no better on the quality benchmark), ``macs`` (most
            multiply-accumulates, zero cost) or ``loss`` (a short stand-alone training each).
        rerank_candidates: candidates of stage 3, the argmax included.
        rerank_tolerance: a candidate's cost (the target's metric, else parameters) is within this
            fraction of the argmax's.
        rerank_temperature: draws follow ``p ** (1 / T)``: below 1 nearer the argmax, above 1 wider.
        rerank_epochs: epochs of each candidate's stand-alone training (``rerank_by: loss``).
    """

    SECTION: ClassVar[str] = "search"
    MAXIMA: ClassVar[dict] = {"warmup_epochs": 10_000, "stage1_epochs": 10_000, "stage2_epochs": 10_000,
                              "stage2_warmup_epochs": 10_000, "latency_input_size": 8192, "latency_repeats": 1000,
                              "threads": 1024, "val_images": 10_000_000, "rerank_candidates": 10_000,
                              "rerank_epochs": 10_000}

    warmup_epochs: int = 1
    stage1_epochs: int = 3
    stage2_epochs: int = 3
    stage2_warmup_epochs: int = 0
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    partial_channels: int = 1
    warmup_sampling: bool = True
    stage1_weight_sampling: bool = False
    stage1_arch_sampling: bool = False
    path_sampling: str = "off"
    arc_lr: float = 3e-3
    arc_weight_decay: float = 1e-3
    tau_init: float = 1.0
    tau_min: float = 0.5
    grad_clip: float = 5.0
    target_latency: Optional[Union[float, str]] = None
    target_latency_ms: Optional[float] = None
    target_params: Optional[float] = None
    lambda_init: float = 0.1
    lambda_rate: float = 0.2
    latency_input_size: Optional[List[int]] = None
    latency_device: Optional[str] = None
    latency_runtime: str = "eager"
    latency_threads: int = 1
    latency_repeats: int = 5
    lut: Optional[str] = None
    limit_batches: int = 0
    val_images: int = 256
    arch_fraction: float = 0.5
    threads: int = 0
    seed: int = 0
    rerank_by: str = "none"
    rerank_candidates: int = 16
    rerank_tolerance: float = 0.1
    rerank_temperature: float = 1.0
    rerank_epochs: int = 3

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value."""
        for key in ("warmup_epochs", "stage2_warmup_epochs", "limit_batches", "val_images", "threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        for key in ("stage1_epochs", "stage2_epochs", "latency_repeats", "partial_channels"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.arch_fraction < 1:
            raise ValueError(f"arch_fraction must be in (0, 1), got {self.arch_fraction}")
        for key in ("lr", "arc_lr", "tau_init", "tau_min", "lambda_init"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "arc_weight_decay", "grad_clip", "lambda_rate", "momentum"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("target_latency_ms", "target_params"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{key} must be > 0 (or null for no target), got {value}")
        if self.path_sampling not in ("off", "warmup", "stage1"):
            raise ValueError(f"path_sampling must be 'off', 'warmup' or 'stage1', got {self.path_sampling!r}")
        if self.rerank_by not in ("supernet", "macs", "loss", "none"):
            raise ValueError(f"rerank_by must be 'supernet', 'macs', 'loss' or 'none', got {self.rerank_by!r}")
        for key in ("rerank_candidates", "rerank_epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("rerank_tolerance", "rerank_temperature"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        parse_latency_target(self.target_latency)
        given = [k for k in ("target_latency", "target_latency_ms", "target_params") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of target_latency, target_latency_ms and target_params, got "
                             f"{' and '.join(given)} (set the others to null)")
        check_runtime(self.latency_runtime, "latency_runtime")
        if self.latency_threads < 0:
            raise ValueError(f"latency_threads must be >= 0, got {self.latency_threads}")
        if self.latency_input_size is not None and (len(self.latency_input_size) != 2
                                                    or min(self.latency_input_size) < 1):
            raise ValueError(f"latency_input_size must be [H, W] or null, got {self.latency_input_size}")
        if self.lut is not None and not os.path.isfile(self.lut):
            raise ValueError(f"lut: cost table {self.lut!r} not found")

    @property
    def latency_target(self) -> Optional[LatencyTarget]:
        """The latency target (of ``target_latency`` or ``target_latency_ms``), or ``None``."""
        if self.target_latency_ms is not None:
            return LatencyTarget(ms=float(self.target_latency_ms))
        return parse_latency_target(self.target_latency)

    @property
    def target(self) -> Optional[tuple]:
        """``(metric, value)`` of the resource target, or ``None``; a latency value is a ``LatencyTarget``
        (milliseconds, or relative to a reference network: resolved when the cost table is measured)."""
        if self.latency_target is not None:
            return "latency_ms", self.latency_target
        if self.target_params is not None:
            return "params", float(self.target_params)
        return None
