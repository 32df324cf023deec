"""Typed configuration: dataclasses built once from YAML sections and command-line overrides.

A config file is a YAML mapping of sections (``space``, ``search``, ``train``, ``data``); each
section is a flat mapping that fills one dataclass. An unknown section or key, or a value of the wrong
type, is a ``ConfigError`` that names the file and the key.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Dict, Iterable, Mapping, Optional, Type, TypeVar

import yaml

from .errors import ConfigError
from .fileio import read_yaml

T = TypeVar("T")
SECTIONS = ("space", "search", "train", "data")


def _check_type(value: Any, tp: Any, where: str) -> Any:
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
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: Type[T], data: Mapping[str, Any], where: str) -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys and wrong types are ``ConfigError``s.

    After construction the dataclass' own ``validate()`` (if any) runs; its ``ValueError`` becomes a
    ``ConfigError`` prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected one of {sorted(fields)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}: {k}") for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    return obj


def parse_overrides(items: Optional[Iterable[str]]) -> Dict[str, Dict[str, Any]]:
    """``['space.layers=3', 'search.epochs=2']`` -> ``{'space': {'layers': 3}, 'search': {'epochs': 2}}``.

    Values are parsed as YAML (``3`` is an int, ``[4, 8]`` a list, ``true`` a bool).
    """
    out: Dict[str, Dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, for example space.layers=3")
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; expected one of {list(SECTIONS)}")
        out.setdefault(section, {})[name] = yaml.safe_load(raw)
    return out


def read_sections(path: str | os.PathLike, overrides: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Reads a config file into ``{section: mapping}`` and applies ``SECTION.KEY=VALUE`` overrides."""
    path = os.fspath(path)
    data = read_yaml(path, "config file", expected=f"a mapping of sections {list(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}; expected some of {list(SECTIONS)}")
    sections = {name: dict(data.get(name) or {}) for name in SECTIONS}
    for name, values in sections.items():
        if not isinstance(data.get(name) or {}, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping")
    for section, values in parse_overrides(overrides).items():
        sections[section].update(values)
    return sections


def load_section(cls: Type[T], path: str | os.PathLike, section: str, overrides: Optional[Iterable[str]] = None) -> T:
    """Builds dataclass ``cls`` from one section of the config file at ``path``."""
    return from_mapping(cls, read_sections(path, overrides)[section], f"{os.fspath(path)} [{section}]")
