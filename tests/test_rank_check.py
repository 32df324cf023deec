"""The rank check: supernet scores of sub-networks, trainings alone, Kendall tau, the command and its errors."""
from __future__ import annotations

import json
import os

import pytest
import torch

from nni_rspnet.cli import main
from nni_rspnet.errors import ConfigError, ModelFileError
from nni_rspnet.schema import load_section
from nni_rspnet.search.driver import run_search
from nni_rspnet.search.rank_check import (SupernetScorer, cell_reliance, cells_scaled, rank_correlation, ranks,
                                          read_search_config, reliance_line, sample_archs, scoring_batches,
                                          training_agreement)
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.seg.data import DataConfig
from nni_rspnet.space.arch import build_network, load_arch, random_arch
from nni_rspnet.space.cell import Cell
from nni_rspnet.space.model import SpaceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "search_spaces", "tiny.yaml")
MICRO = [  # a space and data that search in seconds
    "space.layers=3", "space.resolutions=[4,8]", "space.channels=[8,16]", "space.cell_nodes=3", "space.rsp_depth=1",
    "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]",
    "data.num_train=64", "data.num_val=16", "data.image_size=[32,64]", "data.crop_size=[32,64]",
    "data.batch_size=8", "data.val_batch_size=8",
    "search.warmup_epochs=1", "search.stage1_epochs=1", "search.stage2_epochs=1",
]
SETS = [arg for item in MICRO for arg in ("--set", item)]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A finished micro search (partial channels on, as tiny.yaml has them)."""
    torch.set_num_threads(1)
    space, search_cfg = SpaceConfig.from_yaml(TINY, MICRO), SearchConfig.from_yaml(TINY, MICRO)
    data = load_section(DataConfig, TINY, "data", MICRO)
    out = tmp_path_factory.mktemp("search")
    run_search(space, search_cfg, data, out)
    return space, search_cfg, data, str(out)


def _state(scorer):
    return {k: v.clone() for k, v in scorer.module.state_dict().items()}


def test_scores_are_deterministic_tell_archs_apart_and_leave_the_supernet_unchanged(search):
    space, search_cfg, data, out = search
    assert search_cfg.partial_channels > 1  # the sub-networks are read out of a PC-DARTS supernet
    scorer = SupernetScorer.from_search(out, space)
    calib, evaluation = scoring_batches(data, search_cfg, space.num_classes, calib_batches=2)
    assert len(calib) == 2 and sum(len(y) for _, y in evaluation) == 32  # the whole architecture split
    before = _state(scorer)
    paths = [list(m.inner.chosen) for m in scorer.paths]
    searched = load_arch(os.path.join(out, "arch.json"), space)
    other = random_arch(space, 3)
    assert other != searched
    a1 = scorer.score(searched, calib, evaluation)
    b = scorer.score(other, calib, evaluation)
    a2 = scorer.score(searched, calib, evaluation)
    assert 0.0 <= a1 <= 1.0 and a1 == a2 and a1 != b
    after = _state(scorer)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.chosen is None for m in scorer.cell_ops) and [list(m.inner.chosen) for m in scorer.paths] == paths
    assert all(bn.momentum == 0.1 for bn in scorer.norms) and not scorer.net.training
    # a fresh scorer of the same files gives the same number
    assert SupernetScorer.from_search(out, space).score(searched, calib, evaluation) == a1


def test_apply_restricts_every_choice_to_the_arch(search):
    space, _, _, out = search
    scorer = SupernetScorer.from_search(out, space)
    arch = random_arch(space, 5)
    scorer.apply(arch)
    for m in scorer.cell_ops:
        assert m.op_names[m.chosen] == arch[m.label]
    for m in scorer.cell_inputs:
        weights = m._softmax(m._arch_alpha).detach()
        assert torch.allclose(weights[arch[m.label]], torch.full((2,), 0.5))
        assert float(weights.sum()) == pytest.approx(1)
    assert scorer.paths and all(m.inner.chosen == arch[m.label] and m.inner.mean for m in scorer.paths)


def test_cells_can_be_zeroed_in_the_supernet_and_in_a_network_alone(search):
    space, search_cfg, data, out = search
    scorer = SupernetScorer.from_search(out, space)
    calib, evaluation = scoring_batches(data, search_cfg, space.num_classes, calib_batches=2)
    arch = load_arch(os.path.join(out, "arch.json"), space)
    before = _state(scorer)
    full = scorer.score(arch, calib, evaluation)
    zeroed = scorer.score(arch, calib, evaluation, cells=0.0)
    assert 0.0 <= zeroed <= 1.0
    assert scorer.score(arch, calib, evaluation) == full  # the hooks are gone and the supernet is as loaded
    after = _state(scorer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.manual_seed(0)
    net = build_network(space, arch).eval()
    cells = [m for m in net.modules() if isinstance(m, Cell)]
    seen = []
    with cells_scaled(net, 0.0) as n:
        assert n == len(cells) > 0
        hook = cells[0].register_forward_hook(lambda _m, _i, o: seen.append(o))  # runs after the zeroing hook
        with torch.no_grad():
            net(torch.randn(1, 3, 32, 64))
        hook.remove()
    assert seen and torch.count_nonzero(seen[0]) == 0 and all(not c._forward_hooks for c in cells)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    r = cell_reliance(net, calib, evaluation, space.num_classes)
    assert set(r) == {"miou", "cells_zeroed"} and all(0.0 <= v <= 1.0 for v in r.values())
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())  # measured on a copy
    line = reliance_line({"supernet": {"miou": 0.15, "cells_zeroed": 0.14}, "alone": {"miou": 0.4, "cells_zeroed": 0.1}})
    assert "-1.0 points" in line and "-30.0 points" in line and "routes around" in line
    assert "routes around" not in reliance_line({"supernet": {"miou": 0.3, "cells_zeroed": 0.1},
                                                 "alone": {"miou": 0.4, "cells_zeroed": 0.1}})
    assert reliance_line(None) == "" and "trained alone" not in reliance_line({"supernet": {"miou": 0.3,
                                                                                            "cells_zeroed": 0.1}})


def test_sampling_ranks_and_correlation():
    space = SpaceConfig.from_yaml(TINY, MICRO)
    searched = random_arch(space, 0)
    archs = sample_archs(space, 4, seed=0, searched=searched)
    assert [n for n, _ in archs][0] == "searched" and archs[0][1] == searched and len(archs) == 4
    assert len({json.dumps(a, sort_keys=True) for _, a in archs}) == 4  # distinct, the searched one not repeated
    assert sample_archs(space, 4, seed=0, searched=searched) == archs
    assert sample_archs(space, 3, seed=1)[0][0] == "random-1000"
    assert ranks([0.2, 0.5, 0.2, 0.1]) == [2, 1, 2, 4]
    assert rank_correlation([1, 2, 3], [0.1, 0.2, 0.3])["kendall_tau"] == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [0.3, 0.2, 0.1])["spearman"] == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3], [0.2, 0.2, 0.2])["kendall_tau"] is None


def test_tau_comes_with_a_bootstrap_interval_and_a_wide_one_is_no_verdict():
    """Over 8 architectures a middling tau cannot tell a ranking supernet from a random one: the interval
    says so, and the verdict asks for more architectures instead of trusting the point value."""
    from nni_rspnet.search.rank_check import verdict

    assert rank_correlation([1, 2, 3], [0.1, 0.2, 0.3])["kendall_ci"] is None  # too few pairs to resample
    perfect = rank_correlation(list(range(8)), [0.1 * i for i in range(8)])
    assert perfect["kendall_ci"] == [1.0, 1.0]
    assert rank_correlation(list(range(8)), list(range(8)), resamples=0)["kendall_ci"] is None  # none asked for
    loose = rank_correlation(list(range(8)), [3, 1, 2, 8, 6, 5, 4, 7])
    lo, hi = loose["kendall_ci"]
    assert loose["kendall_ci"] == rank_correlation(list(range(8)), [3, 1, 2, 8, 6, 5, 4, 7])["kendall_ci"]  # seeded
    assert lo < 0 < loose["kendall_tau"] < hi < 1
    # two such blocks of 8 one after the other: 16 architectures resolve the ranking (tau +0.70)
    wider = rank_correlation(list(range(16)), [3, 1, 2, 8, 6, 5, 4, 7, 11, 9, 10, 16, 14, 13, 12, 15])
    assert wider["kendall_ci"][0] > 0 and wider["kendall_ci"][1] - wider["kendall_ci"][0] < hi - lo
    assert verdict(loose["kendall_tau"], loose["kendall_ci"], 8).startswith("unresolved: the 90 % interval")
    assert "more architectures than 8 (--n)" in verdict(loose["kendall_tau"], loose["kendall_ci"], 8)
    assert verdict(0.8, [0.5, 1.0], 8).startswith("the supernet ranks architectures much as")
    assert verdict(0.4, None).startswith("the supernet's ranking agrees only loosely")  # no interval: the old reading


def test_training_agreement_is_the_ceiling_of_a_rank_check_and_a_low_one_is_no_verdict():
    """Trainings that disagree with themselves are no yardstick for the supernet: the check says so."""
    from nni_rspnet.search.rank_check import agreement_line, verdict
    # the quality benchmark's shapes: 8 architectures of one cost band, trained with seeds 0 and 1 for 15 epochs
    shapes = [[0.5766, 0.5824], [0.5330, 0.5532], [0.5427, 0.5513], [0.5431, 0.5184], [0.5968, 0.5423],
              [0.5594, 0.5509], [0.5859, 0.6026], [0.5556, 0.5531]]
    a = training_agreement(shapes)
    assert a["seeds"] == 2 and a["archs"] == 8
    assert a["icc"] == pytest.approx(0.51, abs=0.01) and a["tau_ceiling"] == pytest.approx(0.61, abs=0.01)
    assert a["seed_tau"] == pytest.approx(0.34, abs=0.01) and a["within_sd"] == pytest.approx(0.0167, abs=5e-4)
    assert training_agreement([r[::-1] for r in shapes]) == pytest.approx(a)  # seeds are exchangeable
    # architectures far apart with little noise: the trainings agree, the ceiling is near 1
    clear = training_agreement([[0.1 * i, 0.1 * i + 0.001 * (-1) ** i] for i in range(6)])
    assert clear["icc"] > 0.99 and clear["tau_ceiling"] > 0.9
    # one architecture trained six times over: nothing but noise
    noise = training_agreement([[0.50, 0.52], [0.52, 0.50], [0.51, 0.49], [0.49, 0.51]])
    assert noise["icc"] == 0.0 and noise["between_sd"] == 0.0 and noise["tau_ceiling"] == 0.0
    for bad in ([], [[0.5, 0.6]] * 2, [[0.5]] * 4, [[0.5, 0.6], [0.5, 0.6], [0.5]], [[0.08, 0.08]] * 4):
        assert training_agreement(bad) is None
    assert verdict(0.9, [0.7, 1.0], 8, noise).startswith("no verdict on the supernet: the trainings alone disagree")
    assert verdict(0.9, [0.7, 1.0], 8, a).startswith("the supernet ranks architectures much as")  # 0.61: a yardstick
    assert verdict(0.9, [0.7, 1.0], 8, None).startswith("the supernet ranks architectures much as")
    assert "ICC 0.51" in agreement_line(a) and "reach +0.61" in agreement_line(a) and agreement_line(None) == ""
    # the check's printout carries the line, and reads the supernet's tau against it
    from nni_rspnet.search.rank_check import format_table
    rows = [{"name": f"random-{i}", "searched": i == 0, "params": 1000, "supernet_miou": 0.2 + 0.01 * i,
             "trained_miou": sum(r) / 2, "trained_mious": r} for i, r in enumerate(shapes)]
    result = {"archs": rows, "settings": {"epochs": 15, "seed": 0, "seeds": 2}, "trained": 8, "agreement": a,
              **rank_correlation([r["supernet_miou"] for r in rows], [r["trained_miou"] for r in rows])}
    text = format_table(result)
    assert "(the mean of seeds 0 to 1)" in text and agreement_line(a) in text
    noisy = format_table(dict(result, agreement=noise))
    assert "no verdict on the supernet: the trainings alone disagree so much (ICC 0.00)" in noisy


def test_command_writes_table_json_and_plot(search, tmp_path, capsys):
    space, _, _, out = search
    rc = tmp_path / "rc"
    assert main(["rank-check", "--search", out, "-n", "3", "--epochs", "1", "--out", str(rc), "--threads", "1",
                 "--calib-batches", "2"]) == 0  # two seeds per architecture by default
    printed = capsys.readouterr().out
    assert "Kendall tau" in printed and "searched *" in printed and "the mean of seeds 0 to 1" in printed
    result = json.loads((rc / "rank_check.json").read_text())
    # micro networks trained 1 epoch may all predict background: then the trainings say nothing of noise
    same = len({v for a in result["archs"] for v in a["trained_mious"]}) == 1
    assert ("Training noise (2 seeds per architecture, 3 architectures)" in printed) != same
    assert result["complete"] and result["trained"] == 3 and len(result["archs"]) == 3
    assert [a["searched"] for a in result["archs"]] == [True, False, False]
    assert result["archs"][0]["arch"] == load_arch(os.path.join(out, "arch.json"))
    for a in result["archs"]:
        assert 0 <= a["supernet_miou"] <= 1 and 0 <= a["trained_miou"] <= 1 and a["params"] > 0
        assert len(a["trained_mious"]) == 2 and a["trained_miou"] == pytest.approx(sum(a["trained_mious"]) / 2)
        assert (rc / "train" / a["name"] / "model.pt").is_file()
    from nni_rspnet.seg.deploy import load_model
    first, second = (next(iter(load_model(str(rc / "train" / d / "model.pt")).state_dict().values()))
                     for d in ("searched", "searched-seed1"))
    assert not torch.equal(first, second)  # the second training started from other weights (seed 1)
    assert result["agreement"] == training_agreement([a["trained_mious"] for a in result["archs"]])
    assert (result["agreement"] is None) == same and result["settings"]["seeds"] == 2
    # tau is defined unless one side is constant (micro networks trained 1 epoch may all predict background)
    varied = all(len({a[k] for a in result["archs"]}) > 1 for k in ("supernet_miou", "trained_miou"))
    if varied:
        assert -1.0 <= result["kendall_tau"] <= 1.0 and -1.0 <= result["spearman"] <= 1.0
    else:
        assert result["kendall_tau"] is None and result["spearman"] is None
    assert sorted(a["rank_supernet"] for a in result["archs"]) == [1, 2, 3]
    rel = result["cell_reliance"]  # how much the supernet and the network alone use their cells
    assert set(rel) == {"supernet", "alone"} and "Cells: zeroing every cell's output" in printed
    assert all(0.0 <= v <= 1.0 for side in rel.values() for v in side.values())
    assert result["settings"]["epochs"] == 1 and result["settings"]["space"] == space.to_dict()
    png = (rc / "rank_check.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    # a rerun with the same settings keeps the finished trainings
    stamp = (rc / "train" / "searched" / "model.pt").stat().st_mtime_ns
    assert main(["rank-check", "--search", out, "-n", "3", "--epochs", "1", "--out", str(rc), "--threads", "1",
                 "--calib-batches", "2"]) == 0
    assert "kept from an earlier run" in capsys.readouterr().out
    assert (rc / "train" / "searched" / "model.pt").stat().st_mtime_ns == stamp
    assert json.loads((rc / "rank_check.json").read_text())["kendall_tau"] == result["kendall_tau"]
    # a third seed trains only seed 2 of each architecture and keeps the two before it
    assert main(["rank-check", "--search", out, "-n", "3", "--epochs", "1", "--out", str(rc), "--threads", "1",
                 "--calib-batches", "2", "--seeds", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(kept from an earlier run)") == 6 and printed.count("(seed 2)") == 3
    more = json.loads((rc / "rank_check.json").read_text())
    assert [a["trained_mious"][:2] for a in more["archs"]] == [a["trained_mious"] for a in result["archs"]]
    assert all(len(a["trained_mious"]) == 3 for a in more["archs"]) and more["settings"]["seeds"] == 3
    assert (rc / "train" / "searched" / "model.pt").stat().st_mtime_ns == stamp


def test_bad_inputs_are_one_line_errors(search, tmp_path, capsys):
    space, _, _, out = search
    cases = [
        (["--search", str(tmp_path / "nowhere")], "search folder not found"),
        (["--search", str(tmp_path)], "not a search folder"),
        (["--search", out, "-n", "1"], "at least 2 architectures"),
        (["--search", out, "--set", "space.layers=2"], "another space"),
    ]
    for args, message in cases:
        assert main(["rank-check", *args, "--out", str(tmp_path / "rc")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    no_supernet = tmp_path / "half"
    no_supernet.mkdir()
    (no_supernet / "search_config.json").write_text((open(os.path.join(out, "search_config.json")).read()))
    (no_supernet / "arch.json").write_text(open(os.path.join(out, "arch.json")).read())
    assert main(["rank-check", "--search", str(no_supernet), "--out", str(tmp_path / "rc")]) == 2
    assert "supernet_stage1.pt not found" in capsys.readouterr().err
    (no_supernet / "supernet_stage1.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a readable supernet"):
        SupernetScorer.from_search(str(no_supernet), space)
    with pytest.raises(ConfigError, match="not a search folder"):
        read_search_config(str(tmp_path))
    assert not (tmp_path / "rc").exists()  # nothing was written for a refused check


def test_stage3_by_supernet_keeps_the_candidate_the_supernet_scores_best(search, tmp_path):
    import shutil
    from dataclasses import replace
    from nni_rspnet.search import select as sel
    space, search_cfg, data, out = search
    work = tmp_path / "search"
    shutil.copytree(out, work)
    argmax = load_arch(os.path.join(out, "arch.json"), space)
    cfg = replace(search_cfg, rerank_by="supernet", rerank_candidates=4, rerank_tolerance=0.5,
                  rerank_temperature=3.0)
    chosen = sel.select(space, cfg, data, argmax, {}, str(work), split=None)
    saved = json.loads((work / sel.CANDIDATES_FILE).read_text())
    rows = saved["candidates"]
    assert len(rows) >= 2 and rows[0]["source"] == "argmax" and "supernet" in saved["criterion"]
    scorer = SupernetScorer.from_search(out, space)
    calib, evaluation = scoring_batches(data, search_cfg, space.num_classes, calib_batches=sel.CALIB_BATCHES)
    for row in rows:  # each score is the rank check's own score of that architecture
        assert row["score"] == pytest.approx(scorer.score(row["arch"], calib, evaluation), abs=1e-6)
    assert chosen == rows[saved["chosen"]]["arch"]
    assert rows[saved["chosen"]]["score"] == max(r["score"] for r in rows)
