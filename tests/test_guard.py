"""The run guards: a finite loss, the identity of a resumed run, the random state of a checkpoint."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nni_rspnet.errors import ConfigError, DivergedError
from nni_rspnet.seg.guard import check_finite, check_finite_weights, check_same_run, rng_state, run_identity, \
    set_rng_state
from nni_rspnet.seg.train import SegmentationModule


def test_a_non_finite_loss_stops_the_step():
    assert check_finite(torch.tensor(1.5), "loss").item() == 1.5
    with pytest.raises(DivergedError, match="the loss is nan"):
        check_finite(torch.tensor(float("nan")), "the loss")
    module = SegmentationModule(3)
    net = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        net.weight.fill_(float("inf"))
    module.set_model(net)
    batch = (torch.ones(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(DivergedError, match="the training loss is nan"):
        module.training_step(batch, 0)
    with pytest.raises(DivergedError, match="3 of 12 weights of the net are NaN or infinite"):
        net.weight.data[:] = 0.0
        net.bias.data[:] = float("nan")
        check_finite_weights(net, "the net")


def test_resume_identity_names_the_first_difference():
    saved = run_identity(arch={"cell/node0/op0": "conv_3x3"}, train={"lr": 0.1, "threads": 4})
    check_same_run(saved, run_identity(arch={"cell/node0/op0": "conv_3x3"}, train={"lr": 0.1, "threads": 1}), "c")
    with pytest.raises(ConfigError, match=r"c: --resume with a different architecture \(arch\.cell/node0/op0 is "
                                          r"'conv_3x3' in the checkpoint, 'skip_connect' now\)"):
        check_same_run(saved, run_identity(arch={"cell/node0/op0": "skip_connect"}, train={"lr": 0.1}), "c")
    with pytest.raises(ConfigError, match=r"different config \(train\.lr is 0\.1 in the checkpoint, 0\.2 now\)"):
        check_same_run(saved, run_identity(arch={"cell/node0/op0": "conv_3x3"}, train={"lr": 0.2}), "c")
    with pytest.raises(ConfigError, match="does not record which run wrote it"):
        check_same_run(None, saved, "c")


def test_rng_state_round_trip_covers_torch_numpy_and_python(tmp_path):
    from nni_rspnet.fileio import load_torch, save_torch

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_torch(rng_state(), tmp_path / "rng.pt")  # plain data: loads with weights_only
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    set_rng_state(load_torch(tmp_path / "rng.pt"))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
