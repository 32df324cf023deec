"""Make ``import torchvision`` safe on CPU-only torch before anything imports it.

PyPI ships only a CUDA build of torchvision for Linux. With CPU torch its C++ extension cannot load
and ``import torchvision`` fails with ``operator torchvision::nms does not exist``; worse, Lightning,
torchmetrics and ``nni.retiarii`` import torchvision when they find it, so they fail too. The fix:
load torchvision's ``_C`` library if it loads; otherwise declare the two op schemas its meta
registrations expect. Models, ``transforms.v2`` and ``tv_tensors`` then work; ``ops.nms`` and
``torchvision.io`` stay unavailable (PIL still works). With a matching torch the real library loads
and nothing is declared.

The patch needs torch, which takes a second or two to import, so importing the package itself does
not run it (``nni-rspnet --help`` stays fast). Instead:

- each subpackage that imports torchvision, Lightning, torchmetrics or ``nni.retiarii`` (``space``,
  ``seg``, ``search``, ``nnictl``) calls ``patch_torchvision()`` first thing;
- ``import nni_rspnet`` installs ``install_import_hook()``: an import finder that runs the patch the
  moment anything imports torchvision, so ``import nni_rspnet`` followed by ``import nni.retiarii``
  (as the examples do) works too.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from typing import Any, Optional, Sequence

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
    import torch  # here: importing the package must not cost torch's import time (see above)

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


class _PatchBeforeTorchvision:
    """A ``sys.meta_path`` finder that finds nothing: it runs ``patch_torchvision`` when torchvision is
    about to be imported, then leaves the import to the usual finders."""

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None, target: Any = None) -> None:
        if name == "torchvision" and not _DONE:
            patch_torchvision()
        return None


def install_import_hook() -> None:
    """Runs ``patch_torchvision`` whenever torchvision is first imported, by anyone (idempotent, cheap)."""
    if not any(isinstance(f, _PatchBeforeTorchvision) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchBeforeTorchvision())


def quiet_known_warnings() -> None:
    """Silences third-party warnings a user can do nothing about, all harmless: NNI's torch-version
    check of ``torch.nn`` names, the ``pkg_resources`` deprecation from Lightning and nnictl (which need
    setuptools < 82), the ``NLLLoss2d`` deprecation, and NNI's note when a choice module runs outside a
    strategy."""
    for message in (".*is found to be not a nn.Module.*", ".*pkg_resources.*", ".*NLLLoss2d.*",
                    "You should not run forward of this module directly"):
        warnings.filterwarnings("ignore", message=message)
