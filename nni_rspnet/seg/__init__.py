"""Semantic segmentation around a network: data (config, datasets, built-in generator, transforms,
pictures), metrics, training (Lightning), evaluation and deployment (model.pt, TorchScript, ONNX).

Imports from ``space`` only, never from ``search`` or ``nnictl``.
"""
from .._compat import patch_torchvision

patch_torchvision()  # before torchvision, torchmetrics or Lightning are imported (cheap, idempotent)
