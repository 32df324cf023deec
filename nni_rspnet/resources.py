"""The files that ship with the package, and the one place a config is found by name or by path.

The repository's top-level folders ``search_spaces/`` and ``experiment_configs/`` are installed as the
package data ``nni_rspnet.search_spaces`` and ``nni_rspnet.experiment_configs`` (``pyproject.toml`` maps
them), so an installed package has them wherever the user stands:

- ``search_spaces/*.yaml``: run configs (``--config tiny`` or ``--config cityscapes``);
- ``search_spaces/*.json``: NNI tuner search spaces, named by the experiment configs;
- ``search_spaces/found/*.json``: found architectures, when there are any;
- ``experiment_configs/*.yml``: nnictl experiments (``nni-rspnet experiment create --config macro``).

``resolve(spec, kind)`` turns what a user typed into a file: a path that exists is taken as it is;
otherwise a bare name (``tiny``, ``tiny.yaml``) is looked up among the shipped files of that kind.
Anything else is a ``ConfigError`` that names the spec and lists the shipped names.
"""
from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from .errors import ConfigError

# kind -> (package holding the files, glob inside it, what the files are)
KINDS: Dict[str, Tuple[str, str, str]] = {
    "config": ("nni_rspnet.search_spaces", "*.yaml", "run configs: search space, search, training, data"),
    "tuner": ("nni_rspnet.search_spaces", "*.json", "NNI tuner search spaces"),
    "arch": ("nni_rspnet.search_spaces", "found/*.json", "found architectures"),
    "experiment": ("nni_rspnet.experiment_configs", "*.yml", "nnictl experiment configs"),
}


@dataclass(frozen=True)
class Shipped:
    """One shipped file: its kind, its name (the file name without extension) and its path."""

    kind: str
    name: str
    path: Path

    @property
    def description(self) -> str:
        """The first comment line of the file (YAML), else what files of its kind are."""
        if self.path.suffix in (".yaml", ".yml"):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if line.startswith("#"):
                        return line.lstrip("#").strip()
                    if line.strip():
                        break
        return KINDS[self.kind][2]


def folder(package: str) -> Path:
    """The folder of a data package (in site-packages, or the repository folder of an editable install)."""
    return Path(os.fspath(importlib.resources.files(package)))


def shipped(kind: str) -> List[Shipped]:
    """The shipped files of ``kind`` (``config``, ``tuner``, ``arch``, ``experiment``), sorted by name."""
    package, pattern, _ = KINDS[kind]
    return [Shipped(kind, p.stem, p) for p in sorted(folder(package).glob(pattern)) if p.is_file()]


def all_shipped() -> List[Shipped]:
    """Every shipped file, kind by kind."""
    return [item for kind in KINDS for item in shipped(kind)]


def resolve(spec: "str | os.PathLike", kind: str = "config") -> str:
    """The file ``spec`` stands for: an existing path, else the shipped file of ``kind`` named ``spec``.

    Args:
        spec: a path, or a shipped name with or without its extension (``tiny``, ``tiny.yaml``).
        kind: which shipped files a name may refer to (see ``KINDS``).

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    text = os.fspath(spec)
    if os.path.exists(text):  # a folder or a FIFO too: the reader (fileio.read_bytes) says what it is instead
        return text
    if os.sep not in text and "/" not in text:
        for item in shipped(kind):
            if text in (item.name, item.path.name):
                return os.fspath(item.path)
    names = ", ".join(item.name for item in shipped(kind)) or "none"
    what = {"config": "config file", "experiment": "experiment config", "tuner": "search-space file",
            "arch": "architecture file"}[kind]
    raise ConfigError(f"{text}: {what} not found (neither a file nor a shipped name; shipped: {names}; "
                      f"'nni-rspnet configs' lists them)")
