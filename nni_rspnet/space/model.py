"""The RSPNet search space: one ``SpaceConfig``, one model class for supernet and final network.

``RSPNetSpace(config)`` is the NNI model space (``@model_wrapper``): a trellis of RSP blocks whose
cells share one genotype (labels ``cell/...``) and whose nodes choose their incoming paths (labels
``macro/...``). Under ``nni.retiarii.fixed_arch(arch)`` the same code builds the final network with no
choice modules left; ``build_network`` (in ``space/arch.py``) does that on the plain ``RSPNet`` class.

Reference: "NAS-based Recursive Stage Partial Network for Light-Weight Semantic Segmentation" (RSPNet).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Mapping, Union

from nni.retiarii import model_wrapper

from ..errors import ConfigError

from ..schema import Section
from .cell import RSP_FORMS
from .macro import HEADS, RESAMPLERS, RESOLUTIONS, STEM_LAYERS, Trellis, trellis_nodes
from .ops import OPS

MAX_SUPERNET_PARAMS = 1e9  # an upper estimate past this (4 GB of float32 weights) is refused before building


@dataclass
class SpaceConfig(Section):
    """The search space, as in ``search_spaces/*.yaml`` (section ``space``).

    Attributes:
        name: a name for reports.
        num_classes: classes the head predicts.
        in_channels: image channels.
        stem_channels: width inside the stem.
        resolutions: downsampling factors of the trellis rows, a prefix of [4, 8, 16, 32].
        channels: width at each resolution (each divisible by ``2 ** rsp_depth``).
        layers: trellis layers ``L`` (at least ``len(resolutions) - 1`` so every row is reached).
        paths_per_node: ``k``, incoming paths each node keeps.
        skip_paths: also offer paths from layer ``l - 2`` at the same resolution.
        cell_nodes: nodes ``B`` of the cell.
        ops: candidate ops of the cell (names in ``nni_rspnet.space.ops.OPS``).
        rsp_depth: recursion depth of the RSP block; 0 is the plain full-width cell.
        rsp_form: ``single`` (one cell per node, on the innermost C/2^r channels) or ``nested`` (a cell
            at every level: C/2, C/4, ...); see ``space.cell.RSPBlock``.
        head_channels: width of the segmentation head.
        aux_heads: auxiliary heads on the coarser last-layer rows (used in training only).
        stem_layers: 3 (conv stride 2, conv at 1/2, conv stride 2), 2 (no conv at 1/2, which at
            512 x 1024 is the dearest layer of a light network) or 4 (a stride-1 conv at full resolution
            first, then the three of 3).
        resampler: the downsampling paths: ``conv`` (3 x 3 stride 2) or ``sep`` (depthwise 3 x 3 stride
            2, then 1 x 1: about a ninth of the weights).
        head: each head branch's 3 x 3 block: ``conv`` or ``sep`` (depthwise-separable).
    """

    SECTION: ClassVar[str] = "space"
    MAXIMA: ClassVar[dict] = {"num_classes": 255, "in_channels": 64, "stem_channels": 2048, "channels": 2048,
                              "layers": 64, "paths_per_node": 8, "cell_nodes": 12, "rsp_depth": 8,
                              "head_channels": 2048}

    name: str = "custom"
    num_classes: int = 11
    in_channels: int = 3
    stem_channels: int = 16
    resolutions: List[int] = field(default_factory=lambda: [4, 8, 16])
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    layers: int = 4
    paths_per_node: int = 2
    skip_paths: bool = False
    cell_nodes: int = 4
    ops: List[str] = field(default_factory=lambda: list(OPS))
    rsp_depth: int = 2
    rsp_form: str = "nested"
    head_channels: int = 32
    aux_heads: bool = False
    stem_layers: int = 3
    resampler: str = "conv"
    head: str = "conv"

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value."""
        positive = ("num_classes", "in_channels", "stem_channels", "layers", "paths_per_node", "cell_nodes",
                    "head_channels")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        n = len(self.resolutions)
        if n == 0 or list(self.resolutions) != list(RESOLUTIONS[:n]):
            raise ValueError(f"resolutions must be a prefix of {list(RESOLUTIONS)}, got {self.resolutions}")
        if len(self.channels) != n:
            raise ValueError(f"channels must give one width per resolution ({n}), got {self.channels}")
        if self.rsp_depth < 0:
            raise ValueError(f"rsp_depth must be >= 0, got {self.rsp_depth}")
        for c in self.channels:
            if c < 1 or c % (2 ** self.rsp_depth):
                raise ValueError(f"channels: {c} is not a positive multiple of 2 ** rsp_depth = {2 ** self.rsp_depth}")
        if self.stem_layers not in STEM_LAYERS:
            raise ValueError(f"stem_layers must be one of {list(STEM_LAYERS)}, got {self.stem_layers}")
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {list(RESAMPLERS)}, got {self.resampler!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {self.head!r}")
        if self.rsp_form not in RSP_FORMS:
            raise ValueError(f"rsp_form must be one of {list(RSP_FORMS)}, got {self.rsp_form!r}")
        if self.layers < n - 1:
            raise ValueError(f"layers must be >= len(resolutions) - 1 = {n - 1} to reach 1/{self.resolutions[-1]}, "
                             f"got {self.layers}")
        if not self.ops:
            raise ValueError("ops must name at least one op")
        for op in self.ops:
            if op not in OPS:
                raise ValueError(f"ops: unknown op {op!r}; expected some of {sorted(OPS)}")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops: duplicate names in {self.ops}")
        most = max(len(node.candidates) for node in trellis_nodes(self.layers, n, self.skip_paths))
        if self.paths_per_node > most:
            # k = min(k, candidates) at every node would silently drop every path label: nothing searched.
            raise ValueError(f"paths_per_node={self.paths_per_node} is more than the incoming paths of any node "
                             f"(at most {most} with skip_paths={str(self.skip_paths).lower()}), so no path would be "
                             f"searched; use 1 .. {max(most - 1, 1)} ({most} keeps every path)")
        estimate = self.estimated_supernet_params()
        if estimate > MAX_SUPERNET_PARAMS:
            raise ValueError(f"the supernet would hold about {estimate:.2g} parameters (layers={self.layers}, "
                             f"channels={self.channels}, cell_nodes={self.cell_nodes}, {len(self.ops)} ops), more "
                             f"than the limit of {MAX_SUPERNET_PARAMS:.0e}; use fewer layers, channels, nodes or ops")

    def estimated_supernet_params(self) -> float:
        """An upper estimate of the supernet's parameter count (every op costed as a 3x3 convolution),
        computed without building anything, so an absurd space is refused before it allocates."""
        edges = self.cell_nodes * (self.cell_nodes + 1) // 2
        widths = [2.0 ** -d for d in range(1, self.rsp_depth + 1)] or [1.0]
        total = 0.0
        for node in trellis_nodes(self.layers, len(self.resolutions), self.skip_paths):
            c = float(self.channels[node.res])
            total += len(node.candidates) * 9 * c * c
            total += sum(edges * len(self.ops) * 9 * (c * w) ** 2 for w in widths)
        return total


def as_space_config(config: Union[SpaceConfig, Mapping[str, Any], str, os.PathLike]) -> SpaceConfig:
    """Accepts a ``SpaceConfig`` (valid since its construction), a mapping of its fields or the path of
    a config file (both validated here, once)."""
    if isinstance(config, SpaceConfig):
        return config
    if isinstance(config, Mapping):
        return SpaceConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return SpaceConfig.from_yaml(config)
    raise ConfigError(f"expected a SpaceConfig, a mapping or a YAML path, got {type(config).__name__}")


class RSPNet(Trellis):
    """The RSPNet network for ``config``: a supernet, or under ``fixed_arch`` a plain network.

    Args:
        config: a ``SpaceConfig``, a mapping of its fields, or the path of a YAML config.
    """

    def __init__(self, config: Union[SpaceConfig, Mapping[str, Any], str, os.PathLike]):
        cfg = as_space_config(config)
        super().__init__(cfg.in_channels, cfg.num_classes, cfg.stem_channels, cfg.resolutions, cfg.channels,
                         cfg.layers, cfg.paths_per_node, cfg.skip_paths, cfg.ops, cfg.cell_nodes, cfg.rsp_depth,
                         cfg.head_channels, cfg.aux_heads, cfg.rsp_form, stem_layers=cfg.stem_layers,
                         resampler=cfg.resampler, head=cfg.head)
        self.config = cfg


@model_wrapper
class RSPNetSpace(RSPNet):
    """The NNI model space of RSPNet (``@model_wrapper``), for ``RetiariiExperiment``.

    Its init arguments are traced, so NNI can rebuild it in another process; pass a mapping
    (``config.to_dict()``) or a YAML path when the space has to travel to multi-trial workers.
    """
