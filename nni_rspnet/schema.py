"""The config file format, and typed dataclasses built from plain mappings.

A config file is a YAML mapping of sections (``space``, ``search``, ``train``, ``data``); each section
is a flat mapping that fills one dataclass of the layer that owns it (``SpaceConfig``,
``SearchConfig``, ``TrainConfig``, ``DataConfig``; ``config.RunConfig`` holds all four). A setting is
addressed as ``SECTION.KEY`` everywhere: in ``--set SECTION.KEY=VALUE`` overrides and in the keys of a
tuner's sample, and ``split_key`` is the one parser of that form.

``from_mapping`` builds a dataclass from a mapping: an unknown key, a value of the wrong type, or a
value the dataclass' own ``validate()`` rejects is a ``ConfigError`` that names where it came from.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from typing import Any, ClassVar, Dict, Iterable, Mapping, Optional, Tuple, Type, TypeVar

from .errors import ConfigError
from .fileio import parse_yaml, read_yaml, short
from .resources import resolve

T = TypeVar("T")
S = TypeVar("S", bound="Section")
SECTIONS = ("space", "search", "train", "data")
DEFAULT_CONFIG = "tiny"  # what --config and the Python entry points read by default: a shipped config


def check_type(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the type hint ``tp`` (ints are accepted as floats, bools are not ints)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {short(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {short(value)}")
        inner = args[0] if args else Any
        return [check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {short(value)}")
        return dict(value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp)
    if expected is None:
        return value
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[tp]
    if not ok(value):
        raise ConfigError(f"{where}: expected {expected}, got {short(value)}")
    if tp is float and not math.isfinite(value):  # NaN passes every `x <= 0` check: refuse it here
        raise ConfigError(f"{where}: expected a finite number, got {value}")
    return float(value) if tp is float else value


def from_mapping(cls: Type[T], data: Mapping[str, Any], where: str) -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys and wrong types are ``ConfigError``s.

    The section dataclasses validate themselves when they are constructed (``__post_init__``); the
    ``ValueError`` that names a bad value becomes a ``ConfigError`` prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(map(str, data)) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key {short(unknown[0], 60)}; expected one of {sorted(fields)}")
    kwargs = {k: check_type(v, hints[k], f"{where}: {k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{where}: {short_message(str(err))}") from None


def short_message(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut at ``limit`` characters (a message that quotes a huge value stays short)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Section:
    """Base of the section dataclasses (``SpaceConfig``, ``SearchConfig``, ``TrainConfig``, ``DataConfig``).

    A section is valid by construction (``__post_init__`` runs ``validate``, which raises a
    ``ValueError`` naming the first bad value), so whoever receives one need not check it again. It
    reads itself from one section of a config file or from a mapping, and writes itself as a dict.
    """

    SECTION: ClassVar[str] = ""  # its name in a config file
    # Sane upper bounds, checked before ``validate`` and before anything is allocated: key -> the
    # largest value (for a list, the largest element). A value past them is a typo or an attack.
    MAXIMA: ClassVar[Dict[str, float]] = {}

    def __post_init__(self) -> None:
        self.check_maxima()
        self.validate()

    def check_maxima(self) -> None:
        """Raises ``ValueError`` naming the first value above its bound in ``MAXIMA``."""
        for key, most in self.MAXIMA.items():
            value = getattr(self, key)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v > most:
                    raise ValueError(f"{key} must be at most {most:g}, got {short(value, 60)}")

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad value (the subclasses say what is bad)."""

    @classmethod
    def from_yaml(cls: Type[S], path: str | os.PathLike, overrides: Optional[Iterable[str]] = None) -> S:
        """Loads this section of a config file; ``overrides`` are ``SECTION.KEY=VALUE`` strings."""
        return load_section(cls, path, cls.SECTION, overrides)

    @classmethod
    def from_dict(cls: Type[S], data: Mapping[str, Any], where: Optional[str] = None) -> S:
        return from_mapping(cls, data, where or f"{cls.SECTION} config")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --- SECTION.KEY -------------------------------------------------------------------------------------

def split_key(key: str, where: str, form: str = "SECTION.KEY", example: str = "search.arc_lr") -> Tuple[str, str]:
    """``'search.arc_lr'`` -> ``('search', 'arc_lr')``: the one parser of a setting's address.

    Raises:
        ConfigError: ``where`` (which names the key), the expected form and an example.
    """
    section, dot, name = str(key).strip().partition(".")
    if not dot or not name or section not in SECTIONS:
        raise ConfigError(f"{where}: expected {form} with SECTION one of {list(SECTIONS)}, for example {example}")
    return section, name


def parse_overrides(items: Optional[Iterable[str]]) -> Dict[str, Dict[str, Any]]:
    """``['space.layers=3', 'search.epochs=2']`` -> ``{'space': {'layers': 3}, 'search': {'epochs': 2}}``.

    Values are parsed as YAML (``3`` is an int, ``[4, 8]`` a list, ``true`` a bool, ``1e6`` a float),
    safely and bounded (``fileio.parse_yaml``).

    Raises:
        ConfigError: naming the override: not ``SECTION.KEY=VALUE``, or a value that is not YAML.
    """
    out: Dict[str, Dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        if not sep:
            key = ""  # no value: reported with the form below
        where = f"override {short(str(item), 80)}"
        section, name = split_key(key, where, "SECTION.KEY=VALUE", "space.layers=3")
        out.setdefault(section, {})[name] = parse_yaml(raw, where)
    return out


# --- config files -----------------------------------------------------------------------------------

def read_sections(path: str | os.PathLike, overrides: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Reads a config file into ``{section: mapping}`` (every section, empty where the file has none)
    and applies ``SECTION.KEY=VALUE`` overrides. ``path`` is a file or the name of a shipped config
    (``tiny``; see ``resources.resolve``)."""
    path = resolve(path, "config")
    data = read_yaml(path, "config file", expected=f"a mapping of sections {list(SECTIONS)}")
    unknown = sorted(set(map(str, data)) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section {short(unknown[0], 60)}; expected some of {list(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(data.get(name) or {}, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping of KEY: VALUE lines, got "
                              f"{type(data[name]).__name__} {short(data[name], 60)}")
    sections = {name: dict(data.get(name) or {}) for name in SECTIONS}
    for section, values in parse_overrides(overrides).items():
        sections[section].update(values)
    return sections


def load_section(cls: Type[T], path: str | os.PathLike, section: str, overrides: Optional[Iterable[str]] = None) -> T:
    """Builds dataclass ``cls`` from one section of the config file at ``path`` (with overrides)."""
    return from_mapping(cls, read_sections(path, overrides)[section], f"{os.fspath(path)} [{section}]")
