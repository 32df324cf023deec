"""The Python-API examples run: one-shot ``TwoStageDarts`` and a multi-trial stock NNI strategy."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnictl_helpers import kill_experiments
from nni_rspnet.space.arch import build_network, load_arch
from nni_rspnet.space.model import SpaceConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SPACE_SETS = ["space.resolutions=[4,8]", "space.channels=[8,16]", "space.layers=2", "space.cell_nodes=2",
              "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]", "space.stem_channels=8", "space.head_channels=8"]
DATA_SETS = ["data.batch_size=8", "data.val_batch_size=8"]




def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_stage_darts_example(tmp_path, capsys):
    example = _load_example("two_stage_darts")
    sets = SPACE_SETS + DATA_SETS + ["data.num_train=16", "data.num_val=8", "data.image_size=[32,64]",
                                     "data.crop_size=[32,64]", "search.warmup_epochs=0", "search.stage1_epochs=1",
                                     "search.stage2_epochs=1"]
    assert example.main(["--out", str(tmp_path), *_sets(sets)]) == 0
    cfg = SpaceConfig.from_yaml(ROOT / "search_spaces" / "tiny.yaml", SPACE_SETS)
    arch = load_arch(tmp_path / "arch.json", cfg)
    assert build_network(cfg, arch)(torch.randn(1, 3, 32, 64)).shape == (1, 11, 32, 64)
    out = capsys.readouterr().out
    assert "stage 1 epoch 1/1" in out and "stage 2 epoch 1/1" in out and "TorchScript matches to 0.0e+00" in out
    probs = json.loads((tmp_path / "probs.json").read_text())
    assert any(k.startswith("cell/") for k in probs) and any(k.startswith("macro/") for k in probs)


@pytest.mark.parametrize("strategy", ["evolution"])  # the one with the cycles pitfall
def test_multi_trial_example(tmp_path, strategy):
    """2 trials under NNI's manager; the exported dict rebuilds; nothing left running afterwards."""
    cmd = [sys.executable, str(ROOT / "examples" / "multi_trial.py"), "--strategy", strategy, "--trials", "2",
           "--num-train", "16", "--num-val", "8", "--image-size", "32", "64", "--out", str(tmp_path),
           *_sets(SPACE_SETS + DATA_SETS)]
    try:
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # inherited by every trial
    finally:
        left = kill_experiments(tmp_path / "nni-experiments")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert left == [], f"processes survived exp.stop(): {left}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    cfg = SpaceConfig.from_yaml(ROOT / "search_spaces" / "tiny.yaml", SPACE_SETS)
    arch = load_arch(tmp_path / "arch.json", cfg)
    assert arch == summary["arch"]
    assert build_network(cfg, arch)(torch.randn(1, 3, 32, 64)).shape == (1, 11, 32, 64)
    # Both trials ran to the end with a final mIoU (from training, not from a sanity check).
    from nni_rspnet.nnictl.report import load_trials

    trials = load_trials(tmp_path / "nni-experiments" / summary["experiment_id"])
    assert [t.status for t in trials] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(t.miou is not None and len(t.intermediate) == 1 for t in trials)
    assert all(t.final["default"] == pytest.approx(t.intermediate[-1]) for t in trials)
