"""Stage 3 of the search (search/select.py): candidates at the argmax's cost, and the choice among them."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

from nni_rspnet.measure import count_macs, count_params
from nni_rspnet.search import select as sel
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.seg.data import DataConfig, Datasets, build_datasets
from nni_rspnet.space.arch import build_network, random_arch, space_spec, validate

SIZE = [32, 64]


def one_hot(arch, spec):
    """probs.json of a distribution that puts all its mass on ``arch``."""
    probs = {}
    for label, choice in spec.items():
        if choice.is_op:
            probs.update({f"{label}/{n}": float(n == arch[label]) for n in choice.names})
        else:
            probs.update({f"{label}/{i}": float(i in arch[label]) for i in range(choice.n_candidates)})
    return probs


def test_sample_arch_is_valid_and_follows_the_probabilities(tiny_cfg):
    spec = space_spec(tiny_cfg)
    target = random_arch(tiny_cfg, 3)
    rng = random.Random(0)
    for _ in range(20):  # all the mass on one architecture: every draw is that architecture
        assert sel.sample_arch(tiny_cfg, one_hot(target, spec), rng) == target
    draws = [validate(sel.sample_arch(tiny_cfg, {}, rng), tiny_cfg) for _ in range(50)]  # no probs: uniform
    assert len({json.dumps(d, sort_keys=True) for d in draws}) > 10
    # A low temperature concentrates the draws on the most probable choice of each label.
    op = next(label for label, c in spec.items() if c.is_op)
    names = spec[op].names
    probs = {f"{op}/{n}": (0.6 if n == names[0] else 0.4 / (len(names) - 1)) for n in names}
    cold = [sel.sample_arch(tiny_cfg, probs, rng, temperature=0.05)[op] for _ in range(50)]
    warm = [sel.sample_arch(tiny_cfg, probs, rng, temperature=1.0)[op] for _ in range(200)]
    assert cold.count(names[0]) == 50
    assert 0.45 < warm.count(names[0]) / 200 < 0.75


def test_candidates_are_distinct_deterministic_and_within_the_cost_band(tiny_cfg):
    argmax = random_arch(tiny_cfg, 0)
    cfg = SearchConfig(rerank_candidates=8, rerank_tolerance=0.15, seed=4)
    first = sel.candidates(tiny_cfg, cfg, argmax, {}, SIZE)
    again = sel.candidates(tiny_cfg, cfg, argmax, {}, SIZE)
    assert [c.arch for c in first] == [c.arch for c in again]
    assert first[0].arch == argmax and first[0].source == "argmax"
    assert 2 <= len(first) <= 8
    assert len({json.dumps(c.arch, sort_keys=True) for c in first}) == len(first)
    for c in first:
        net = build_network(tiny_cfg, c.arch)
        assert c.params == count_params(net) == c.cost
        assert c.macs == pytest.approx(count_macs(net, SIZE, tiny_cfg.in_channels))
        assert abs(c.cost - first[0].cost) <= 0.15 * first[0].cost
    # A cost function (a search target's metric) defines the band instead of the parameters.
    by_macs = sel.candidates(tiny_cfg, cfg, argmax, {}, SIZE, cost_of=lambda a: count_macs(
        build_network(tiny_cfg, dict(a)), SIZE, tiny_cfg.in_channels))
    assert all(abs(c.cost - by_macs[0].cost) <= 0.15 * by_macs[0].cost for c in by_macs)


def test_select_by_macs_keeps_the_candidate_that_computes_most(tiny_cfg, tmp_path):
    argmax = random_arch(tiny_cfg, 0)
    cfg = SearchConfig(rerank_candidates=6, rerank_tolerance=0.3, rerank_by="macs")
    data = DataConfig(dataset="builtin", image_size=SIZE)
    chosen = sel.select(tiny_cfg, cfg, data, argmax, {}, str(tmp_path), split=None)
    saved = json.loads((tmp_path / sel.CANDIDATES_FILE).read_text())
    rows = saved["candidates"]
    assert chosen == rows[saved["chosen"]]["arch"]
    assert rows[saved["chosen"]]["macs"] == max(r["macs"] for r in rows)
    assert all(r["score"] == r["macs"] for r in rows)
    assert json.loads((tmp_path / sel.SUPERNET_ARCH_FILE).read_text()) == argmax
    # "none" is the plain one-shot answer.
    assert sel.select(tiny_cfg, replace(cfg, rerank_by="none"), data, argmax, {}, str(tmp_path / "n"),
                      split=None) == argmax


def test_select_by_loss_trains_each_candidate_once_and_resumes(tiny_cfg, tmp_path, monkeypatch):
    tiny_cfg = replace(tiny_cfg, num_classes=11)
    data = DataConfig(dataset="builtin", num_train=16, num_val=8, image_size=SIZE, crop_size=SIZE, batch_size=8,
                      val_batch_size=8, augment=False)
    ds = build_datasets(data, 11)
    split = Datasets(ds.train, ds.val, ds.classes)
    cfg = SearchConfig(rerank_candidates=3, rerank_tolerance=0.5, rerank_by="loss", rerank_epochs=1, threads=1)
    argmax = random_arch(tiny_cfg, 1)
    calls = []
    real = sel.train_network
    monkeypatch.setattr(sel, "train_network", lambda *a, **k: calls.append(1) or real(*a, **k))
    chosen = sel.select(tiny_cfg, cfg, data, argmax, {}, str(tmp_path), split=split)
    saved = json.loads((tmp_path / sel.CANDIDATES_FILE).read_text())
    rows = saved["candidates"]
    assert len(calls) == len(rows) >= 2
    assert all(r["score"] is not None and r["score"] < 0 for r in rows)  # minus a cross-entropy
    assert chosen == rows[saved["chosen"]]["arch"]
    assert rows[saved["chosen"]]["score"] == max(r["score"] for r in rows)
    # Run again (a killed search resumed): the stored scores are reused, nothing is trained.
    assert sel.select(tiny_cfg, cfg, data, argmax, {}, str(tmp_path), split=split) == chosen
    assert len(calls) == len(rows)
    # From scratch after other work drew from the global generator: the same scores (seeded initial weights).
    torch.manual_seed(12345)
    torch.rand(1000)
    sel.select(tiny_cfg, cfg, data, argmax, {}, str(tmp_path / "again"), split=split)
    again = json.loads((tmp_path / "again" / sel.CANDIDATES_FILE).read_text())["candidates"]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in rows], abs=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("rerank_by", "flops", "rerank_by must be"),
    ("rerank_candidates", 0, "rerank_candidates must be >= 1"),
    ("rerank_tolerance", 0.0, "rerank_tolerance must be > 0"),
    ("rerank_temperature", -1.0, "rerank_temperature must be > 0"),
    ("rerank_epochs", 0, "rerank_epochs must be >= 1"),
])
def test_bad_settings_are_one_clear_error(key, value, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**{key: value}).validate()
