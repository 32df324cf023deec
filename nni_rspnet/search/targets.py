"""A latency target, in milliseconds or relative to a reference network: the one parser of its forms.

``search.target_latency`` (and ``--set search.target_latency=...``) accepts:

- a number or ``"<number>ms"``: milliseconds on the search's latency device and runtime, at
  ``search.latency_input_size``: ``12``, ``12.5``, ``"12.5ms"``, ``"12.5 ms"``;
- ``"<factor>x<reference>"``: a multiple of a reference network's latency measured on the same machine,
  the same runtime, threads and input size, when the cost table is measured: ``"0.5xlraspp"``,
  ``"0.5x lraspp"``, ``"1.2xdeeplabv3"`` (``references.REFERENCES`` lists the names).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import ConfigError
from .references import REFERENCES

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_MS = re.compile(rf"^\s*({_NUMBER})\s*(?:ms)?\s*$")
_RELATIVE = re.compile(rf"^\s*({_NUMBER})\s*[x\*]\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


@dataclass(frozen=True)
class LatencyTarget:
    """``ms`` milliseconds, or ``factor`` times the latency of the reference network ``reference``."""

    ms: Optional[float] = None
    factor: Optional[float] = None
    reference: Optional[str] = None

    @property
    def relative(self) -> bool:
        return self.reference is not None

    def resolve(self, reference_ms: Callable[[str], float]) -> float:
        """The target in milliseconds; ``reference_ms(name)`` measures (or looks up) a reference network."""
        if self.reference is None:
            return float(self.ms)
        return float(self.factor) * float(reference_ms(self.reference))

    def __str__(self) -> str:
        return f"{self.factor:g}x{self.reference}" if self.relative else f"{self.ms:g}ms"


def parse_latency_target(value: Any, where: str = "search.target_latency") -> Optional[LatencyTarget]:
    """The target that ``value`` spells (``None`` for ``None``), or a one-line ``ConfigError`` that names
    ``where``, the value and the accepted forms."""
    if value is None:
        return None
    forms = (f"expected milliseconds (12, '12ms') or a multiple of a reference network measured on this machine "
             f"('0.5xlraspp'; references: {', '.join(sorted(REFERENCES))})")
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not a latency; {forms}")
    if isinstance(value, (int, float)):
        ms: Optional[float] = float(value)
        target = LatencyTarget(ms=ms)
    elif isinstance(value, str):
        plain, relative = _MS.match(value), _RELATIVE.match(value)
        if plain:
            target = LatencyTarget(ms=float(plain.group(1)))
        elif relative:
            name = relative.group(2).lower()
            if name not in REFERENCES:
                raise ConfigError(f"{where}: unknown reference network {relative.group(2)!r} in {value!r}; "
                                  f"expected one of {sorted(REFERENCES)}")
            target = LatencyTarget(factor=float(relative.group(1)), reference=name)
        else:
            raise ConfigError(f"{where}: cannot read {value!r}; {forms}")
    else:
        raise ConfigError(f"{where}: {value!r} is not a latency; {forms}")
    amount = target.ms if target.ms is not None else target.factor
    if not (math.isfinite(amount) and amount > 0):
        raise ConfigError(f"{where}: {value!r} must be a positive, finite latency")
    return target
