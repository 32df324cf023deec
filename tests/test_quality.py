"""The quality section of the benchmarks: its reference network, its plan, cost-matched random
architectures, and a quick end-to-end run that resumes."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch

from benchmarks.baselines import plain_cnn
from benchmarks.common import BenchmarkConfig, load_results, store_result
from benchmarks.quality import (GROUPS, Job, clear_task_dir, draw_random, fingerprint, main, new_state, plan, record,
                                reusable_runs, same_fingerprint, similar_cost_archs, task_config)
from nni_rspnet.config import RunConfig
from nni_rspnet.measure import count_params
from nni_rspnet.space.arch import build_network, load_arch, random_arch

MICRO = ["space.layers=3", "space.resolutions=[4,8]", "space.channels=[8,16]", "space.cell_nodes=3",
         "space.rsp_depth=1", "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]"]


@pytest.fixture(autouse=True)
def repo_found_untouched():
    """No test writes the shipped architectures (``BenchmarkConfig``'s default ``quality_found_dir`` is the
    repository's ``search_spaces/found``): a test that forgets ``quality_found_dir=None`` fails here."""
    found = BenchmarkConfig().quality_found_dir

    def listing():
        return {n: open(os.path.join(found, n), "rb").read() for n in sorted(os.listdir(found))}

    before = listing()
    yield
    assert listing() == before, f"a test wrote into {found}"


def test_plain_cnn_is_the_baseline_of_the_issue():
    net = plain_cnn(11)
    assert count_params(net) == 107_675  # "about 108k parameters"
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 32, 64, 64, 64, 11]
    assert [c.stride[0] for c in convs[:6]] == [1, 2, 1, 2, 1, 1]
    assert [c.dilation[0] for c in convs[:6]] == [1, 1, 1, 1, 2, 4]
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 50, 97)).shape == (1, 11, 50, 97)
    with pytest.raises(ValueError, match="6 layers"):
        plain_cnn(11, widths=(8, 8))


def test_random_architectures_of_similar_cost_are_deterministic(tmp_path):
    cfg = BenchmarkConfig(out_dir=str(tmp_path)).quick_version()
    run = task_config(replace(cfg, quality_overrides=list(cfg.quality_overrides) + MICRO), "builtin")
    searched = random_arch(run.space, 0)
    target = count_params(build_network(run.space, searched))
    picked = similar_cost_archs(run, target, 3, 0.1, [searched])
    assert picked == similar_cost_archs(run, target, 3, 0.1, [searched])
    assert [p["seed"] for p in picked] == sorted(p["seed"] for p in picked) and 0 not in [p["seed"] for p in picked]
    for p in picked:
        assert abs(p["params"] - target) <= 0.1 * target and p["arch"] == random_arch(run.space, p["seed"])
        assert p["params"] == count_params(build_network(run.space, p["arch"]))
    with pytest.raises(RuntimeError, match="widen quality_param_tolerance"):
        similar_cost_archs(run, 10.0, 1, 0.1, [], max_draws=5)


def test_plan_runs_one_of_each_kind_first_and_skips_finished_runs(tmp_path):
    cfg = replace(BenchmarkConfig(out_dir=str(tmp_path)), quality_overrides=MICRO, quality_found_dir=None)
    run = task_config(cfg, "builtin")
    own = RunConfig.load(cfg.tiny_config, MICRO)  # the budgets are the config's own, not the benchmark's
    assert run.train.epochs == own.train.epochs and run.search.stage1_epochs == own.search.stage1_epochs
    assert run.search.limit_batches == own.search.limit_batches and run.data.num_train == own.data.num_train
    state = new_state("digits", "builtin", run)
    first = sorted(plan(cfg, state, run, 0), key=lambda j: j.order)
    assert [j.key for j in first] == ["search seed0", "search seed1", "search seed2"] + [
        f"{g} train{t}" for t in (0, 1) for g in ("plain_cnn", "lraspp", "plain_cnn_wide")]
    assert [j.spec["sections"]["search"]["seed"] for j in first[:3]] == [0, 1, 2]
    arch = random_arch(run.space, 1)
    for s in range(3):
        state["searches"][str(s)] = {"arch": arch, "params": 1}
    state["random"] = [{"seed": 9, "name": "random 9", "arch": arch}, {"seed": 12, "name": "random 12", "arch": arch}]
    state["runs"]["plain_cnn train0"] = {"group": "plain_cnn", "val_miou": 0.3}
    order = [j.key for j in sorted(plan(cfg, state, run, 0), key=lambda j: j.order)]
    assert order[:6] == ["searched seed0 train0", "random 9 train0", "lraspp train0", "plain_cnn_wide train0",
                         "rank check", "scores"]
    assert order[6:9] == ["searched seed1 train0", "searched seed2 train0", "random 12 train0"]
    assert all(k.endswith("train1") for k in order[9:]) and len(order) == 9 + 3 + 2 + 3
    assert "plain_cnn train0" not in order  # finished
    # the rank check and the table's scores judge the first search's supernet
    rank = next(j for j in plan(cfg, state, run, 0) if j.key == "rank check")
    assert rank.spec["search_dir"].endswith("search_seed0") and rank.spec["n"] == cfg.quality_rank_archs
    assert rank.spec["epochs"] == cfg.quality_rank_epochs and rank.spec["sections"]["search"]["seed"] == 0



def test_an_experiment_of_searched_networks_only_plans_no_other_training(tmp_path):
    cfg = replace(BenchmarkConfig(out_dir=str(tmp_path)), quality_overrides=MICRO, quality_found_dir=None, quality_groups=("searched",),
                  quality_rank_archs=0)
    run = task_config(cfg, "builtin")
    state = new_state("digits", "builtin", run)
    assert [j.key for j in plan(cfg, state, run, 0)] == ["search seed0", "search seed1", "search seed2"]
    arch = random_arch(run.space, 1)
    params = count_params(build_network(run.space, arch))
    for s in range(3):
        job = Job("digits", f"search seed{s}", (0, s), {"kind": "search"})
        record(replace(cfg, quality_found_dir=None), state, run, job, {"arch": arch, "params": params}, print)
    assert state["random"] == []  # none drawn: no random group, and no scores of a table without them
    keys = sorted(j.key for j in plan(cfg, state, run, 0))
    assert keys == sorted(f"searched seed{s} train{t}" for s in range(3) for t in range(2))
    # continued with every group (the stored searches kept): the random group is drawn then, and trained
    full = replace(cfg, quality_groups=tuple(GROUPS), quality_random=2, quality_param_tolerance=0.5)
    draw_random(full, state, run, lambda m: None)
    assert [r["seed"] for r in state["random"]] == [r["seed"] for r in similar_cost_archs(
        run, params, 2, 0.5, [arch])] and len(state["random"]) == 2
    keys = {j.key for j in plan(full, state, run, 0)}
    assert {f"{r['name']} train0" for r in state["random"]} <= keys and "plain_cnn train0" in keys

def test_a_changed_search_keeps_the_stored_trainings_it_would_repeat(tmp_path):
    cfg = replace(BenchmarkConfig(out_dir=str(tmp_path)), quality_overrides=MICRO, quality_found_dir=None)
    run = task_config(cfg, "builtin")
    runs = {"plain_cnn train0": {"group": "plain_cnn", "val_miou": 0.3},
            "random 9 train1": {"group": "random", "name": "random 9", "val_miou": 0.4},
            "searched seed0 train0": {"group": "searched", "val_miou": 0.5}}
    old = dict(new_state("digits", "builtin", run), runs=runs)
    new_search = RunConfig.load(cfg.tiny_config, MICRO + ["search.seed=3", "train.threads=1", "search.threads=1"])
    assert fingerprint(new_search) != old["fingerprint"]
    kept = reusable_runs(old, new_search)
    assert sorted(kept) == ["plain_cnn train0", "random 9 train1"]  # never a searched network
    for changed in ("train.epochs=2", "data.num_train=30", "space.num_classes=7"):
        other = RunConfig.load(cfg.tiny_config, MICRO + [changed])
        assert reusable_runs(old, other) == {}, changed
    # a changed space keeps the reference networks, which read only its classes and input channels
    new_space = RunConfig.load(cfg.tiny_config,
                               MICRO + ["space.head_channels=16", "train.threads=1", "search.threads=1"])
    assert sorted(reusable_runs(old, new_space)) == ["plain_cnn train0"]
    assert reusable_runs(None, run) == {} and reusable_runs({"fingerprint": "not json"}, run) == {}


def test_a_changed_recipe_keeps_the_searches_and_their_folders(tmp_path):
    cfg = replace(BenchmarkConfig(out_dir=str(tmp_path)), quality_overrides=MICRO, quality_found_dir=None)
    run = task_config(cfg, "builtin")
    search = {"arch": {"cell/node0/op0": "conv_3x3"}, "params": 1000, "dir": str(tmp_path / "search_seed0")}
    runs = {"plain_cnn train0": {"group": "plain_cnn", "val_miou": 0.3}, "scores": {"scores": {"a": 0.1}},
            "rank check": {"kendall_tau": 0.5}, "searched seed0 train0": {"group": "searched", "val_miou": 0.5}}
    old = dict(new_state("digits", "builtin", run), runs=runs, searches={"0": search})
    new_recipe = RunConfig.load(cfg.tiny_config, MICRO + ["train.lr=0.02", "train.threads=1", "search.threads=1"])
    assert fingerprint(new_recipe) != old["fingerprint"]
    # the searches and the supernet's scores stay; every training (and the rank check, which trains) goes
    assert reusable_runs(old, new_recipe) == {"search seed0": search, "scores": runs["scores"]}
    new_search = RunConfig.load(cfg.tiny_config, MICRO + ["search.seed=3", "train.threads=1", "search.threads=1"])
    assert sorted(reusable_runs(old, new_search)) == ["plain_cnn train0"]
    # a cleared task folder keeps the kept searches' folders and nothing else
    task = tmp_path / "task"
    (task / "search_seed0").mkdir(parents=True)
    (task / "search_seed0" / "arch.json").write_text("{}")
    (task / "runs" / "x").mkdir(parents=True)
    (task / "rank_check.json").write_text("{}")
    clear_task_dir(str(task), keep=["search_seed0"])
    assert sorted(os.listdir(task)) == ["search_seed0"] and (task / "search_seed0" / "arch.json").exists()
    clear_task_dir(str(task))
    assert not task.exists()


def test_a_moved_output_folder_keeps_its_shapes_runs(tmp_path, monkeypatch):
    # The shapes data lives under the output folder; its absolute path must not tie the stored runs to it.
    import benchmarks.quality as quality
    made = []
    monkeypatch.setattr(quality, "make_shapes", lambda path, *a: made.append(path) or {"path": path})
    runs = {"plain_cnn train0": {"group": "plain_cnn", "val_miou": 0.3}}
    here = replace(BenchmarkConfig(out_dir=str(tmp_path / "a")), quality_overrides=MICRO, quality_found_dir=None)
    there = replace(here, out_dir=str(tmp_path / "b"))
    old = dict(new_state("shapes", "shapes", task_config(here, "shapes")), runs=runs)
    moved = task_config(there, "shapes")
    assert moved.data.dataset == f"folder:{tmp_path / 'b' / 'quality' / 'shapes_data'}" and len(made) == 2
    assert "<out>" in old["fingerprint"] and old["fingerprint"] == fingerprint(moved)
    assert same_fingerprint(old["fingerprint"], moved)
    # a state stored before this change holds the absolute path, and is the same run
    legacy = json.loads(old["fingerprint"])
    legacy["data"]["dataset"] = f"folder:{tmp_path / 'a' / 'quality' / 'shapes_data'}"
    assert same_fingerprint(json.dumps(legacy), moved)
    # another data set is not
    legacy["data"]["dataset"] = f"folder:{tmp_path / 'elsewhere'}"
    assert not same_fingerprint(json.dumps(legacy), moved) and not same_fingerprint("not json", moved)
    assert reusable_runs(dict(old, fingerprint=json.dumps(legacy)), moved) == {}
    assert reusable_runs(old, RunConfig.load(here.tiny_config, MICRO + [f"data.dataset={moved.data.dataset}",
                                                                        "space.num_classes=7", "search.seed=3",
                                                                        "train.threads=1", "search.threads=1"])) \
        == runs


def test_found_architectures_are_written_outside_quick_mode(tmp_path):
    found = tmp_path / "found"
    cfg = replace(BenchmarkConfig(out_dir=str(tmp_path)), quality_overrides=MICRO, quality_search_seeds=2,
                  quality_random=2, quality_param_tolerance=0.5, quality_found_dir=str(found))
    assert BenchmarkConfig().quick_version().quality_found_dir is None
    run = task_config(cfg, "builtin")
    state = new_state("digits", "builtin", run)
    for s in range(2):
        arch = random_arch(run.space, 100 + s)
        result = {"arch": arch, "params": count_params(build_network(run.space, arch))}
        record(cfg, state, run, Job("digits", f"search seed{s}", (0,), {"kind": "search"}), result, lambda m: None)
        assert (state["random"] is None) == (s == 0)  # picked once every search has finished
    names = sorted(p.name for p in found.iterdir())
    assert names == sorted([f"{run.space.name}-digits-seed0.json", f"{run.space.name}-digits-seed1.json"]
                           + [f"{run.space.name}-digits-random{r['seed']}.json" for r in state["random"]])
    assert load_arch(found / f"{run.space.name}-digits-seed1.json", run.space) == random_arch(run.space, 101)


def test_quality_command_rejects_bad_jobs(capsys):
    assert main(["--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_an_experiment_writes_its_page_and_architectures_under_its_out(tmp_path, monkeypatch):
    import benchmarks.__main__ as entry
    seen = []
    monkeypatch.setattr(entry, "run_benchmark", lambda cfg, sections: seen.append(cfg))
    default = BenchmarkConfig()
    assert main(["--out", str(tmp_path / "plain")]) == 0  # the config as it is: the page and found/ it quotes
    assert seen[-1].markdown == "BENCHMARKS.md" and seen[-1].quality_found_dir == default.quality_found_dir
    for extra in (["--set", "search.warmup_epochs=18"], ["--config", "search_spaces/tiny.yaml"]):
        out = str(tmp_path / "exp")
        assert main(extra + ["--out", out]) == 0
        assert seen[-1].markdown == os.path.join(out, "BENCHMARKS.md")
        assert seen[-1].quality_found_dir == os.path.join(out, "found")
    assert main(["--set", "train.lr=0.02", "--out", out, "--markdown", "page.md"]) == 0
    assert seen[-1].markdown == "page.md" and seen[-1].quality_overrides[-1] == "train.lr=0.02"
    assert seen[-1].quality_groups == default.quality_groups and seen[-1].quality_rank_archs == 8
    assert main(["--set", "space.rsp_depth=0", "--groups", "searched", "--rank-archs", "0", "--out", out]) == 0
    assert seen[-1].quality_groups == ("searched",) and seen[-1].quality_rank_archs == 0


@pytest.mark.slow
def test_quick_quality_runs_in_two_processes_and_resumes(tmp_path, capsys):
    """The whole section at quick sizes on a micro space: searches, trainings, rank check and scores in two
    worker processes, then a rerun that redoes only the run removed from the stored results."""
    out, page = tmp_path / "bench", tmp_path / "BENCHMARKS.md"
    args = ["--dataset", "both", "--quick", "--out", str(out), "--markdown", str(page)]
    args += [a for item in MICRO for a in ("--set", item)]
    assert main(args + ["--jobs", "2"]) == 0
    cfg = BenchmarkConfig(out_dir=str(out))
    q = load_results(cfg)["quality"]
    assert q["complete"] and q["quick"] and set(q["tasks"]) == {"digits", "shapes"}
    for task, t in q["tasks"].items():
        assert len(t["searches"]) == 2 and len(t["random"]) == 2
        groups = t["summary"]["groups"]
        assert [groups[g]["n"] for g in ("searched", "random", "plain_cnn", "lraspp")] == [2, 2, 1, 1]
        mean = sum(s["params"] for s in t["searches"].values()) / 2
        assert all(abs(r["params"] - mean) <= 0.1 * mean for r in t["random"])
        rc = t["summary"]["rank_check"]
        assert rc["n"] == 3 and len(rc["archs"]) == 3
        varied = all(len({a[k] for a in rc["archs"]}) > 1 for k in ("supernet_miou", "trained_miou"))
        # tau is defined unless one side is constant (micro networks may all predict background)
        assert (-1 <= rc["kendall_tau"] <= 1) if varied else rc["kendall_tau"] is None
        assert t["summary"]["table_tau"]["n"] == 4
        for s in t["searches"].values():  # each search's export is the arch its runs trained
            assert load_arch(os.path.join(s["dir"], "arch.json")) == s["arch"]
    assert q["tasks"]["shapes"]["settings"]["num_classes"] == 7
    assert q["tasks"]["shapes"]["settings"]["data"].startswith("folder:")
    text = page.read_text()
    assert "### digits" in text and "### shapes" in text and "Kendall tau" in text and "| plain CNN | 107," in text
    assert (tmp_path / "docs" / "quality.png").read_bytes().startswith(b"\x89PNG")

    # drop one finished run: the rerun (one process) does it again and nothing else
    del q["tasks"]["digits"]["runs"]["random {} train0".format(q["tasks"]["digits"]["random"][1]["seed"])]
    store_result(replace(cfg, quick=True), "quality", q)
    capsys.readouterr()
    assert main(args + ["--dataset", "builtin"]) == 0
    printed = capsys.readouterr().out
    assert "[quality] 1 jobs run" in printed and "continuing" in printed
    again = load_results(cfg)["quality"]
    assert set(again["tasks"]) == {"digits", "shapes"}  # the task not rerun stays on the page
    assert json.dumps(again["tasks"]["shapes"]["runs"], sort_keys=True) == json.dumps(
        q["tasks"]["shapes"]["runs"], sort_keys=True)
