"""The zero-cost proxy benchmark: pooling stored trainings across output folders, and the proxies."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from benchmarks.quality import fingerprint
from benchmarks.zero_cost import FUNCS, main, pool, score
from nni_rspnet.config import RunConfig
from nni_rspnet.space.arch import random_arch

MICRO = ["space.layers=3", "space.resolutions=[4,8]", "space.channels=[8,16]", "space.cell_nodes=3",
         "space.rsp_depth=1", "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]", "space.stem_channels=8",
         "data.num_train=8", "data.num_val=4", "data.image_size=[32,64]", "data.crop_size=[32,64]"]


def _run(extra=()):
    return RunConfig.load(os.path.join(os.path.dirname(__file__), "..", "search_spaces", "tiny.yaml"),
                          MICRO + list(extra))


def _results(folder, run, searched, random_runs):
    """A results.json as benchmarks.quality stores it: searches, random draws and their runs."""
    os.makedirs(folder, exist_ok=True)
    runs = {}
    for name, (arch, mious) in {**searched, **random_runs}.items():
        for seed, miou in enumerate(mious):
            runs[f"{name} s{seed}"] = {"group": name.split()[0], "name": name, "seed": seed, "val_miou": miou}
    state = {"fingerprint": fingerprint(run),
             "searches": {name.split("seed")[1]: {"arch": arch} for name, (arch, _) in searched.items()},
             "random": [{"name": n, "arch": a} for n, (a, _) in random_runs.items()], "runs": runs}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({"quality": {"tasks": {"digits": state}}}, f)
    return os.path.join(folder, "results.json")


def test_pool_merges_one_architecture_across_folders_and_refuses_other_trainings(tmp_path):
    run = _run()
    a, b, c = (random_arch(run.space, s) for s in (0, 1, 2))
    first = _results(tmp_path / "x", run, {"searched seed0": (a, [0.5, 0.7])}, {"random 1": (b, [0.4])})
    # The same architecture c trained in two folders whose searches differed: one entry, both runs.
    second = _results(tmp_path / "y", _run(["search.warmup_epochs=7"]), {"searched seed0": (c, [0.3])},
                      {"random 1": (b, [0.4, 0.45])})
    sections, rows = pool([first, second], "digits")
    assert sections["space"] == run.to_dict()["space"]
    by = {json.dumps(r["arch"], sort_keys=True): r for r in rows}
    assert len(rows) == 3
    assert by[json.dumps(b, sort_keys=True)]["runs"] == {0: 0.4, 1: 0.45}  # the later folder's runs complete it
    assert by[json.dumps(a, sort_keys=True)]["runs"] == {0: 0.5, 1: 0.7}
    other = _results(tmp_path / "z", _run(["train.epochs=3"]), {"searched seed0": (a, [0.1])}, {})
    with pytest.raises(ValueError, match=r"z/results.json: task 'digits' was trained with other train sections"):
        pool([first, other], "digits")
    with pytest.raises(ValueError, match="no stored training of task 'shapes'"):
        pool([first], "shapes")


def test_proxies_are_finite_deterministic_and_tell_architectures_apart():
    run = _run()
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 64)
    y = torch.randint(0, run.space.num_classes, (8, 32, 64))
    rows = [score(run, random_arch(run.space, s), x, y, images=4, init_seeds=2) for s in (0, 1)]
    again = score(run, random_arch(run.space, 0), x, y, images=4, init_seeds=2)
    assert again == rows[0]
    for name in ("params", "macs", "macs_per_param", *FUNCS):
        assert all(math.isfinite(r[name]) for r in rows), name
    assert rows[0]["params"] != rows[1]["params"]
    assert rows[0]["snip"] != rows[1]["snip"] and rows[0]["naswot"] != rows[1]["naswot"]


def test_main_writes_the_table(tmp_path, capsys):
    run = _run()
    archs = [random_arch(run.space, s) for s in range(4)]
    path = _results(tmp_path / "x", run, {f"searched seed{i}": (a, [0.1 * (i + 1)]) for i, a in enumerate(archs)}, {})
    out = tmp_path / "zc.md"
    assert main(["--runs", str(tmp_path / "x"), "--tasks", "digits", "--images", "2", "--init-seeds", "1",
                 "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "digits: 4 architectures, val mIoU 0.1000-0.4000" in text
    for name in ("macs_per_param", "naswot", "snip", "grad_norm", "synflow"):
        assert f"| {name} | " in text
    assert "| naswot |" in capsys.readouterr().out


def test_pool_reads_the_generated_shapes_from_the_folder_it_pools(tmp_path):
    # benchmarks.quality stores the shapes' path relative to its output folder (folder:<out>/...).
    run = _run([f"data.dataset=folder:{tmp_path / 'x' / 'quality' / 'shapes_data'}"])
    path = _results(tmp_path / "x", run, {"searched seed0": (random_arch(run.space, 0), [0.5])}, {})
    with open(path) as f:
        assert "folder:<out>/quality/shapes_data" in f.read()
    sections, _ = pool([path], "digits")
    assert sections["data"]["dataset"] == f"folder:{tmp_path / 'x'}/quality/shapes_data"


def test_the_scoring_batch_is_the_same_whatever_the_global_rng_state():
    # The built-in data's augmentation draws from the global RNGs: the batch must not depend on them.
    from benchmarks.zero_cost import batch
    run = _run()
    torch.manual_seed(1)
    x1, y1 = batch(run, 4)
    torch.manual_seed(2)
    torch.rand(10)
    x2, y2 = batch(run, 4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
