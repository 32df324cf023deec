"""Shared fixtures: tiny spaces that build in milliseconds and run on a CPU."""
from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")

import nni_rspnet  # noqa: E402,F401  (patches torchvision before anything imports it)
from nni_rspnet.space.model import SpaceConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE_YAMLS = sorted(os.path.join(ROOT, "search_spaces", f) for f in os.listdir(os.path.join(ROOT, "search_spaces"))
                     if f.endswith(".yaml"))


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch on one thread (restored afterwards): the networks here are tiny, and on a
    busy machine threads spinning for cores that other processes hold make tests many times slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_cfg() -> SpaceConfig:
    """A very small space: 3 layers over 1/4 and 1/8, 2-node cells, 3 ops, skip paths on."""
    return SpaceConfig(name="test", num_classes=5, stem_channels=8, resolutions=[4, 8], channels=[8, 16],
                       layers=3, paths_per_node=2, skip_paths=True, cell_nodes=3,
                       ops=["skip_connect", "sep_conv_3x3", "zoomed_conv"], rsp_depth=1, head_channels=8)
