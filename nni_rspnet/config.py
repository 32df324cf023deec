"""``RunConfig``: the one configuration of a run, built once and passed down section by section.

A run reads one YAML file (sections ``space``, ``search``, ``train``, ``data``; see ``schema.py``), applies
the ``--set SECTION.KEY=VALUE`` overrides of the command line, then, in an nnictl trial, the tuner's
sample (``{"search.arc_lr": 0.01, ...}``): later layers win. Each section becomes the dataclass of the
layer that owns it, validated once, and every error names the file and the section::

    cfg = RunConfig.load("search_spaces/tiny.yaml", ["space.layers=3"])
    run_search(cfg.space, cfg.search, cfg.data, "runs/search")

Every default lives in one place: the section dataclasses (``SpaceConfig``, ``SearchConfig``,
``TrainConfig``, ``DataConfig``). The library below takes the sections as explicit arguments and never
imports this module.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from .schema import DEFAULT_CONFIG, SECTIONS, from_mapping, read_sections, split_key
from .search.settings import SearchConfig
from .seg.data import DataConfig
from .seg.train import TrainConfig
from .space.model import SpaceConfig


@dataclass
class RunConfig:
    """The four sections of a run.

    Attributes:
        space: the search space (and the network it builds).
        search: the two-stage search.
        train: retraining of a fixed network.
        data: the dataset, its splits, augmentation and loaders.
    """

    space: SpaceConfig = field(default_factory=SpaceConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @classmethod
    def load(cls, path: Union[str, os.PathLike] = DEFAULT_CONFIG, overrides: Optional[Iterable[str]] = None,
             sample: Optional[Mapping[str, Any]] = None, origin: Optional[str] = None) -> "RunConfig":
        """Reads ``path``, applies ``overrides`` then the tuner's ``sample``, and validates every section.

        Args:
            path: the YAML config file.
            overrides: ``SECTION.KEY=VALUE`` strings (values parsed as YAML).
            sample: tuner parameters ``{"SECTION.KEY": value}`` (architecture labels excluded, see
                ``nnictl.hpo.split_sample``).
            origin: how messages name the file (default: ``path``).

        Raises:
            ConfigError: naming the file, the section and the key.
        """
        sections = read_sections(path, overrides)
        for key, value in (sample or {}).items():
            section, name = split_key(key, f"tuner parameter {key!r}")
            sections[section][name] = value
        suffix = " with the tuner's parameters" if sample else ""
        return cls.from_sections(sections, origin or os.fspath(path), suffix)

    @classmethod
    def from_sections(cls, sections: Mapping[str, Mapping[str, Any]], where: str = "config",
                      suffix: str = "") -> "RunConfig":
        """Builds and validates every section of ``{section: mapping}`` (a missing section takes the
        defaults); errors read ``{where} [{section}]{suffix}: ...``."""
        hints = typing.get_type_hints(cls)
        return cls(**{name: from_mapping(hints[name], sections.get(name) or {}, f"{where} [{name}]{suffix}")
                      for name in SECTIONS})

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{section: mapping}`` with every value, defaults included (what ``from_sections`` reads back)."""
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
