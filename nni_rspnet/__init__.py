"""nni-rspnet: NAS of light-weight semantic-segmentation networks (RSPNet) as an NNI plugin."""
from ._compat import patch_torchvision, quiet_known_warnings

quiet_known_warnings()
patch_torchvision()  # before Lightning, torchmetrics or nni.retiarii import torchvision

from .space.arch import build_network, describe, load_arch, random_arch, save_arch, validate  # noqa: E402
from .space.model import RSPNet, RSPNetSpace, SpaceConfig  # noqa: E402
from .search.strategy import TwoStageDarts  # noqa: E402
from .seg.data import DataConfig, build_datasets  # noqa: E402
from .search.driver import run_search  # noqa: E402
from .search.settings import SearchConfig  # noqa: E402
from .seg.train import SegmentationModule, TrainConfig, train_network  # noqa: E402
from .seg.deploy import export_onnx, export_torchscript, load_model  # noqa: E402
from .config import RunConfig  # noqa: E402

__all__ = ["SpaceConfig", "RSPNet", "RSPNetSpace", "load_arch", "save_arch", "validate", "build_network",
           "random_arch", "describe", "TwoStageDarts", "DataConfig", "build_datasets", "SearchConfig", "run_search",
           "SegmentationModule", "TrainConfig", "train_network", "export_onnx", "export_torchscript", "load_model",
           "RunConfig"]
__version__ = "0.1.0"
