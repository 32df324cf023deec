"""Make ``import torchvision`` safe on CPU-only torch before anything imports it.

PyPI ships only a CUDA build of torchvision for Linux. With CPU torch its C++ extension cannot load
and ``import torchvision`` fails with ``operator torchvision::nms does not exist``; worse, Lightning,
torchmetrics and ``nni.retiarii`` import torchvision when they find it, so they fail too. The fix:
load torchvision's ``_C`` library if it loads; otherwise declare the two op schemas its meta
registrations expect. Models, ``transforms.v2`` and ``tv_tensors`` then work; ``ops.nms`` and
``torchvision.io`` stay unavailable (PIL still works). With a matching torch the real library loads
and nothing is declared.
"""
from __future__ import annotations

import importlib.util
import os
import sys

_DONE = False
_LIBRARY = None  # keeps the fragment alive: the declared schemas vanish with it


def patch_torchvision() -> None:
    """Idempotent; a no-op when torchvision is absent or already imported."""
    global _DONE, _LIBRARY
    if _DONE or "torchvision" in sys.modules:
        _DONE = True
        return
    _DONE = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    folder = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(folder)):
        if name.startswith("_C") and name.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(folder, name))
                return
            except (OSError, RuntimeError):
                break
    try:
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY = lib
    except RuntimeError:  # already declared by someone else
        pass


def quiet_known_warnings() -> None:
    """Silences third-party warnings a user can do nothing about (all harmless; see ENVIRONMENT.md):
    NNI's torch-version check of ``torch.nn`` names, ``pkg_resources`` deprecation from Lightning and
    nnictl, ``NLLLoss2d`` deprecation, and NNI's note when a choice module runs outside a strategy."""
    import warnings

    for message in (".*is found to be not a nn.Module.*", ".*pkg_resources.*", ".*NLLLoss2d.*",
                    "You should not run forward of this module directly"):
        warnings.filterwarnings("ignore", message=message)
