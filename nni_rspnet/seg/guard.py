"""Run guards shared by training and the search: nothing silent, and a resume that continues exactly.

- ``check_finite``: the one finite-loss guard. A NaN or infinite loss (or weight) stops the run with a
  ``DivergedError`` before anything non-finite is stepped into the weights or written as a result.
- ``fit``: ``trainer.fit`` under the one interrupt policy. Lightning 1.9 swallows a ``KeyboardInterrupt``
  and returns as if training had finished; here it becomes ``Interrupted``, so a caller never mistakes
  Ctrl-C for success (the CLI prints how to ``--resume`` and exits with 130; no result is written).
  ``stopped`` words the message: what stopped the run and which checkpoint was kept.
- ``rng_state`` / ``set_rng_state``: every random generator a run draws from (torch, CUDA, numpy, Python),
  saved with each checkpoint as plain tensors and numbers (``weights_only`` loading), so a resumed run
  draws the same data order and augmentation as one never interrupted (``train.ExactResume`` puts it
  into Lightning's checkpoints, ``search.strategy`` into the search's).
- ``run_identity`` / ``check_same_run``: what a checkpoint was written for (space, architecture,
  settings); resuming with anything else is refused with one line naming the first difference.
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DivergedError, Interrupted
from ..fileio import short

# Settings that change how fast a run goes, not what it computes: a resume may change them.
NEUTRAL_SETTINGS = {"threads", "verify", "log_every_n_steps"}


# --- finite values -------------------------------------------------------------------------------------

def check_finite(value: torch.Tensor, what: str) -> torch.Tensor:
    """Returns ``value`` if every element is finite; else raises ``DivergedError`` naming ``what``."""
    if not bool(torch.isfinite(value.detach()).all()):
        shown = f"{value.item():g}" if value.numel() == 1 else "not finite"
        raise DivergedError(f"{what} is {shown}")
    return value


def count_nonfinite(tensors: Iterable[torch.Tensor]) -> int:
    """How many elements of floating-point ``tensors`` are NaN or infinite."""
    return sum(int((~torch.isfinite(t.detach())).sum()) for t in tensors if torch.is_floating_point(t))


def check_finite_weights(module: nn.Module, what: str) -> None:
    """Raises ``DivergedError`` when a parameter or buffer of ``module`` holds a NaN or infinity."""
    tensors = list(module.state_dict().values())
    bad = count_nonfinite(tensors)
    if bad:
        total = sum(t.numel() for t in tensors if torch.is_floating_point(t))
        raise DivergedError(f"{bad:,} of {total:,} weights of {what} are NaN or infinite")


# --- the interrupt policy --------------------------------------------------------------------------------

def fit(trainer: Any, module: Any, *args: Any, **kwargs: Any) -> None:
    """``trainer.fit(module, ...)`` (a Lightning ``Trainer``) that never ends in silent success.

    Raises:
        Interrupted: Ctrl-C stopped the fit (Lightning 1.9 catches it and returns normally).
        DivergedError: from ``check_finite`` inside a step (Lightning re-raises it).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Detected KeyboardInterrupt.*")
        trainer.fit(module, *args, **kwargs)
    if trainer.interrupted:
        raise Interrupted("")


def stopped(err: BaseException, checkpoint: Optional[str], position: Optional[str], resume: bool = True) -> str:
    """The one-line account of a stopped run: why, what was kept, how to go on.

    Args:
        err: the ``Interrupted`` or ``DivergedError`` that stopped it.
        checkpoint: the last good checkpoint kept on disk, or ``None`` when no epoch had finished.
        position: where that checkpoint stands (``"epoch 2 of 5"``).
        resume: suggest ``--resume`` (an interrupt) rather than new settings (a divergence).
    """
    reason = str(err).strip()
    if isinstance(err, KeyboardInterrupt):
        head = "interrupted (Ctrl-C)" + (f": {reason}" if reason else "")
    else:
        head = reason
    if checkpoint is None:
        kept = "no epoch had finished, so there is no checkpoint to resume from"
    elif resume:
        kept = f"the last good checkpoint is {checkpoint} ({position}); run the same command with --resume to continue"
    else:
        kept = f"the last good checkpoint is {checkpoint} ({position})"
    return f"{head}; {kept}; no result was written"


# --- random state ------------------------------------------------------------------------------------------

def rng_state() -> Dict[str, Any]:
    """Every generator a run draws from, as tensors and plain numbers (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Puts back what ``rng_state`` saved (generators it did not save are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the identity of a run ---------------------------------------------------------------------------------

def run_identity(**parts: Any) -> Dict[str, Any]:
    """What a checkpoint is for: the given parts (space, architecture, settings as plain dicts), with the
    settings that do not change the result (``NEUTRAL_SETTINGS``) left out."""
    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if k not in NEUTRAL_SETTINGS}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return {name: clean(value) for name, value in parts.items()}


def _first_difference(saved: Any, current: Any, where: str = "") -> Optional[str]:
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in sorted(set(saved) | set(current), key=str):
            sub = f"{where}.{key}" if where else str(key)
            if key not in saved or key not in current:
                return f"{sub} is {short(saved.get(key, '(unset)'), 50)} in the checkpoint, " \
                       f"{short(current.get(key, '(unset)'), 50)} now"
            found = _first_difference(saved[key], current[key], sub)
            if found:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)) and len(saved) == len(current):
        return next((d for d in (_first_difference(a, b, where) for a, b in zip(saved, current)) if d), None)
    if saved != current:
        return f"{where} is {short(saved, 50)} in the checkpoint, {short(current, 50)} now"
    return None


def check_same_run(saved: Optional[Mapping[str, Any]], current: Mapping[str, Any], checkpoint: str) -> None:
    """Refuses to resume ``checkpoint`` (written for ``saved``) as a run of ``current``.

    Raises:
        ConfigError: naming the checkpoint and the first difference (``arch.cell/node0/op0 is
            'conv_3x3' in the checkpoint, 'skip_connect' now``).
    """
    if not isinstance(saved, Mapping):
        raise ConfigError(f"{checkpoint}: the checkpoint does not record which run wrote it, so --resume cannot "
                          f"check it; use another --out or drop --resume")
    found = _first_difference(dict(saved), dict(current))
    if found:
        part = found.split(".", 1)[0]
        what = "architecture" if part == "arch" else "space" if part == "space" else "config"
        raise ConfigError(f"{checkpoint}: --resume with a different {what} ({found}); resume with the same "
                          f"settings, or use another --out or drop --resume")
