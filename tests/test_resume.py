"""Exact resume: a run killed with SIGKILL and resumed gives what a run never interrupted gives.

The killed run is a subprocess of the real command line. A small preamble (``KILLER``, test code, not
library code) wraps the function that writes the checkpoint: after the ``N``-th checkpoint has been
written, the process SIGKILLs itself in the next training step, so it dies mid-epoch at a known point
(no race with a poll). The resumed run and the uninterrupted reference run in this process; the
architecture must be byte-identical and probabilities and metrics within 1e-6.

Resume with another architecture or config is refused (checked here too); Ctrl-C is in the catalogue of
bad inputs (``tests/bad_inputs.py``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from nni_rspnet.cli import main
from nni_rspnet.search.driver import load_search_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "search_spaces", "tiny.yaml")
SPACE = ["space.layers=3", "space.resolutions=[4,8]", "space.channels=[8,16]", "space.cell_nodes=2",
         "space.rsp_depth=1", "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]"]
DATA = ["data.num_train=48", "data.num_val=16", "data.image_size=[32,64]", "data.crop_size=[32,64]",
        "data.batch_size=8", "data.val_batch_size=8"]
# Warm-up 1 + cell 2 epochs (stage 1), paths 2 epochs (stage 2); a parameter target, so the penalty's
# lambda has a state to restore too.
SEARCH = ["search.warmup_epochs=1", "search.stage1_epochs=2", "search.stage2_epochs=2", "search.arc_lr=0.1",
          "search.limit_batches=3", "search.threads=1", "search.target_params=20000"]
TRAIN = ["train.epochs=3", "train.threads=1", "train.optimizer=adamw", "train.lr=0.003", "train.warmup_epochs=1"]

# Runs the CLI; after the N-th checkpoint is written, SIGKILLs itself in the next training step.
KILLER = r"""
import os, signal, sys
import nni_rspnet.search.driver as driver, nni_rspnet.seg.train as train
# The state lives on an imported module: NNI copies the traced module class with cloudpickle, which copies
# functions defined here together with their globals, but refers to an imported module by name.
train._kill = {"after": int(sys.argv[1]), "name": sys.argv[2], "saves": 0}
def counting(module):
    save = module.save_torch
    def save_torch(obj, path):
        save(obj, path)
        state = sys.modules["nni_rspnet.seg.train"]._kill
        state["saves"] += os.path.basename(os.fspath(path)) == state["name"]
    module.save_torch = save_torch
counting(driver); counting(train)
# nni.trace wraps the class, and a copy of the module gets a new wrapper: patch the class that defines the step.
owner = next(k for k in train.SegmentationModule.__mro__ if "training_step" in vars(k))
step = owner.training_step
def training_step(self, *args, **kwargs):
    state = sys.modules["nni_rspnet.seg.train"]._kill
    if state["saves"] >= state["after"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
owner.training_step = training_step
from nni_rspnet.cli import main
sys.exit(main(sys.argv[3:]))
"""


def sets(*groups):
    return [arg for group in groups for item in group for arg in ("--set", item)]


def search_args(out):
    return ["search", "--config", TINY, "--out", str(out), *sets(SPACE, DATA, SEARCH)]


def train_args(out, arch):
    return ["train", "--config", TINY, "--arch", str(arch), "--out", str(out), "--no-progress",
            *sets(SPACE, DATA, TRAIN)]


def killed(args, kill_after: int, checkpoint: str):
    """Runs the CLI in a subprocess that SIGKILLs itself after the ``kill_after``-th ``checkpoint`` write."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", KILLER, str(kill_after), checkpoint, *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted search and training."""
    out = tmp_path_factory.mktemp("reference")
    assert main(search_args(out / "search")) == 0
    assert main(train_args(out / "train", out / "search" / "arch.json")) == 0
    return out


def _same_search(ref, out):
    assert (out / "arch.json").read_bytes() == (ref / "arch.json").read_bytes()
    probs, want = (json.loads((d / "probs.json").read_text()) for d in (out, ref))
    assert probs.keys() == want.keys() and all(abs(probs[k] - want[k]) <= 1e-6 for k in want)
    got, expected = (json.loads((d / "result.json").read_text())["val_miou"] for d in (out, ref))
    assert abs(got - expected) <= 1e-6
    history, want_history = (json.loads((d / "history.json").read_text()) for d in (out, ref))
    assert [(r["stage"], r["epoch"]) for r in history] == [(r["stage"], r["epoch"]) for r in want_history]
    for a, b in zip(history, want_history):
        assert abs(a["metrics"]["val_miou"] - b["metrics"]["val_miou"]) <= 1e-6
        assert a["metrics"]["tau"] == b["metrics"]["tau"]
        assert a["metrics"]["lambda"] == pytest.approx(b["metrics"]["lambda"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after,stage", [(2, 1), (3, 1), (4, 2)],
                         ids=["inside-stage-1", "between-stages", "inside-stage-2"])
def test_search_killed_and_resumed_equals_uninterrupted(reference, tmp_path, kill_after, stage):
    out = tmp_path / "search"
    killed(search_args(out), kill_after, "checkpoint.pt")
    state = load_search_checkpoint(str(out / "checkpoint.pt"))
    assert (state["stage"], len(state["history"])) == (stage, kill_after)
    assert not (out / "arch.json").exists() and not (out / "probs.json").exists()
    assert main(search_args(out) + ["--resume"]) == 0
    _same_search(reference / "search", out)


@pytest.mark.slow
def test_training_killed_and_resumed_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "train"
    arch = reference / "search" / "arch.json"
    killed(train_args(out, arch), 1, "last.ckpt")  # dies in the first batch of epoch 2
    assert not (out / "model.pt").exists()
    assert main(train_args(out, arch) + ["--resume"]) == 0
    ref, got = (torch.load(d / "model.pt", weights_only=True) for d in (reference / "train", out))
    assert ref["state_dict"].keys() == got["state_dict"].keys()
    assert all(torch.equal(ref["state_dict"][k], got["state_dict"][k]) for k in ref["state_dict"])
    assert abs(ref["meta"]["val_miou"] - got["meta"]["val_miou"]) <= 1e-6
    rows, want = (json.loads((d / "history.json").read_text()) for d in (out, reference / "train"))
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert all(abs(a["val_miou"] - b["val_miou"]) <= 1e-6 and abs(a["train_loss"] - b["train_loss"]) <= 1e-6
               for a, b in zip(rows, want))


def test_resume_with_another_architecture_or_config_is_refused(reference, tmp_path, capsys):
    out = tmp_path / "train"
    for f in ("last.ckpt", "history.json"):
        (out / f).parent.mkdir(exist_ok=True)
        (out / f).write_bytes((reference / "train" / f).read_bytes())
    arch = json.loads((reference / "search" / "arch.json").read_text())
    label = sorted(k for k in arch if k.startswith("cell/") and k.split("/")[-1].startswith("op"))[0]
    arch[label] = "skip_connect" if arch[label] != "skip_connect" else "conv_3x3"  # same shapes or not: refused
    other = tmp_path / "other.json"
    other.write_text(json.dumps(arch))
    before = sorted(os.listdir(out))
    assert main(train_args(out, other) + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.ckpt: --resume with a different architecture" in err[0] and label in err[0]
    assert main(train_args(out, reference / "search" / "arch.json") + ["--resume", "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config (train.lr is 0.003 in the checkpoint, 0.01 now)" in err[0]
    # a setting that changes speed, not results, may change
    assert sorted(os.listdir(out)) == before


def test_search_resume_with_another_config_is_refused(reference, tmp_path, capsys):
    out = tmp_path / "search"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((reference / "search" / "checkpoint.pt").read_bytes())
    assert main(search_args(out) + ["--resume", "--set", "search.arc_lr=0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config (search.arc_lr is 0.1 in the checkpoint, 0.2 now)" in err[0]
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]
