"""The nnictl side: the trial that experiments run, tuner search spaces, experiment reports and
experiment control (launch, REST client, stop).

The top of the library's layers: it may import ``space``, ``seg`` and ``search``.
"""
from .._compat import patch_torchvision

patch_torchvision()  # a trial imports Lightning and nni.retiarii, which import torchvision (cheap, idempotent)
