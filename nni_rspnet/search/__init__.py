"""The two-stage search: supermodules, path attention, the ``TwoStageDarts`` strategy, the cost table
and resource penalty, and the driver (``run_search``: checkpoints, resume, exports).

Imports from ``space`` and ``seg``, never from ``nnictl``.
"""
from .._compat import patch_torchvision

patch_torchvision()  # before nni.retiarii and Lightning import torchvision (cheap, idempotent)
