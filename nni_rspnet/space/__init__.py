"""The search space: ops, choices, the cell and RSP block, the macro trellis, the model classes, the
architecture as data (validate, load, save, build, sample), decoding and drawing.

The bottom of the package's layers: it imports nothing from ``seg``, ``search`` or ``nnictl``.
"""
from .._compat import patch_torchvision

patch_torchvision()  # nni.retiarii imports Lightning, hence torchvision: patch it first (cheap, idempotent)
