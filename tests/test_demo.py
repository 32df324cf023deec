import json
import os

import pytest

from nni_rspnet.cli import main


@pytest.mark.slow
def test_demo_fast_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["miou"] <= 1.0
    assert summary["params"] > 1000 and summary["macs"] > 0 and summary["latency_ms"] > 0
    assert summary["onnx_max_abs_diff"] < 1e-4
    for name, path in summary["files"].items():
        assert os.path.exists(path), name
    for png in ("data_preview.png", "architecture.png", "train/curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "[6/6]" in printed and "| mIoU (val, retrained) |" in printed and "model.onnx" in printed


def test_epochs_for_budget_fits_whole_epochs_within_bounds():
    from nni_rspnet.demo import epochs_for_budget

    assert epochs_for_budget(300.0, 30.0, 8, 15) == 10
    assert epochs_for_budget(299.9, 30.0, 8, 15) == 9
    assert epochs_for_budget(10_000.0, 30.0, 8, 15) == 15   # never more than the config's epochs
    assert epochs_for_budget(-5.0, 30.0, 8, 15) == 8        # a slow search still leaves a network that learns
    assert epochs_for_budget(100.0, 30.0, 8, 4) == 4        # the config's epochs win where the bounds cross
    with pytest.raises(ValueError, match="epoch_seconds"):
        epochs_for_budget(100.0, 0.0, 8, 15)


def _small_net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))


def test_measure_train_step_leaves_the_network_and_the_random_state_alone():
    import torch
    from nni_rspnet.demo import measure_train_step

    net = _small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seconds = measure_train_step(net, 2, (8, 12), 3, 4, steps=2)
    assert seconds > 0
    assert torch.equal(torch.rand(3), expected)  # the global generator did not move
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN statistics untouched


def test_plan_retraining_is_written_and_a_resumed_demo_keeps_it(tmp_path):
    from nni_rspnet.demo import plan_retraining
    from nni_rspnet.errors import ConfigError

    path = str(tmp_path / "train_plan.json")
    common = dict(steps_per_epoch=10, max_epochs=15, batch_size=2, size=(8, 12), in_channels=3, num_classes=4)
    first = plan_retraining(path, _small_net(), seconds_left=1e6, **common)
    assert first["epochs"] == 15 and first["epoch_seconds"] > first["step_seconds"] * 10
    assert json.loads(open(path).read())["epochs"] == 15
    # A resumed demo has less time left on its own clock, but trains the epochs its first run planned.
    again = plan_retraining(path, _small_net(), seconds_left=0.0, resume=True, **common)
    assert again["epochs"] == 15
    # Without resume the plan is made again for the time left.
    assert plan_retraining(path, _small_net(), seconds_left=0.0, min_epochs=3, **common)["epochs"] == 3
    with open(path, "w") as f:
        json.dump({"epochs": "many"}, f)
    with pytest.raises(ConfigError, match="train_plan.json.*epochs"):
        plan_retraining(path, _small_net(), seconds_left=0.0, resume=True, **common)
