"""nni-rspnet: NAS of light-weight semantic-segmentation networks (RSPNet) as an NNI plugin.

The public face is lazy (PEP 562): ``nni_rspnet.RSPNetSpace`` imports ``nni_rspnet.space.model`` on
first use, so ``import nni_rspnet`` (and the ``nni-rspnet`` command's ``--help``) does not load torch,
Lightning or NNI. Importing the package makes torchvision importable on CPU-only torch whoever imports
it next (see ``_compat.py``).

Layers, each importing only from those before it: ``errors``, ``fileio``, ``schema``, ``measure``; then
``space`` (the search space and architectures); ``seg`` (data, training, evaluation, deployment);
``search`` (the two-stage strategy and its driver); ``config`` (``RunConfig``); ``nnictl`` (trials,
reports, experiments); then ``demo`` and ``cli``. ``docs/ARCHITECTURE.md`` shows the data flow.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

from ._compat import install_import_hook, quiet_known_warnings
from .runtime import sleeping_idle_threads

quiet_known_warnings()
install_import_hook()
sleeping_idle_threads()

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: Dict[str, str] = {
    "SpaceConfig": "space.model", "RSPNet": "space.model", "RSPNetSpace": "space.model",
    "load_arch": "space.arch", "save_arch": "space.arch", "validate": "space.arch", "build_network": "space.arch",
    "random_arch": "space.arch", "describe": "space.arch", "space_spec": "space.arch",
    "DataConfig": "seg.data", "build_datasets": "seg.data",
    "TrainConfig": "seg.train", "SegmentationModule": "seg.train", "train_network": "seg.train",
    "evaluate_network": "seg.evaluate",
    "export_onnx": "seg.deploy", "export_torchscript": "seg.deploy", "load_model": "seg.deploy",
    "SearchConfig": "search.settings", "TwoStageDarts": "search.strategy", "run_search": "search.driver",
    "RunConfig": "config", "run_trial": "nnictl.trial", "run_demo": "demo",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
