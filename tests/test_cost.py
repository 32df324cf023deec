"""Per-candidate cost tables, expected cost and the resource penalty."""
from __future__ import annotations

import json

import pytest
import torch

from nni_rspnet.space.arch import build_network, random_arch, space_spec
from nni_rspnet.space.macro import trellis_nodes
from nni_rspnet.measure import count_macs, count_params, measure_cost, measure_latency
from nni_rspnet.search.cost_table import CostTable, build_cost_table
from nni_rspnet.search.penalty import ResourcePenalty
from cost_helpers import one_hot_probs


@pytest.fixture(scope="module")
def table_and_cfg():
    from nni_rspnet.space.model import SpaceConfig

    cfg = SpaceConfig(name="test", num_classes=5, stem_channels=8, resolutions=[4, 8], channels=[8, 16], layers=3,
                      paths_per_node=2, skip_paths=True, cell_nodes=3, ops=["skip_connect", "sep_conv_3x3", "zoomed_conv"],
                      rsp_depth=1, head_channels=8)
    return build_cost_table(cfg, (32, 64), latency=False), cfg


def test_table_covers_every_label_of_the_space(table_and_cfg):
    table, cfg = table_and_cfg
    assert set(table.choices) == set(space_spec(cfg))
    ops = [e for e in table.entries if table.choices[e.label]["candidates"]]
    assert ops and all(e.costs["params"][0] == 0 for e in ops)  # skip_connect has no parameters
    gated = [e for e in ops if e.gate is not None]
    assert gated and all(e.gate[0].endswith("/in") for e in gated)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_derived_cost_matches_the_built_network(table_and_cfg, seed):
    table, cfg = table_and_cfg
    arch = random_arch(cfg, seed)
    net = build_network(cfg, arch)
    params, macs = count_params(net), count_macs(net, (32, 64))
    # exact up to the nodes the fixed network prunes (they cannot reach the head): never below
    assert params <= table.derived(arch, "params")
    assert macs <= table.derived(arch, "macs")
    if len(net.nodes) == len(trellis_nodes(cfg.layers, len(cfg.resolutions), cfg.skip_paths)):
        assert table.derived(arch, "params") == pytest.approx(params, rel=1e-6)
        assert table.derived(arch, "macs") == pytest.approx(macs, rel=0.02)


def test_an_unchosen_edge_costs_nothing(table_and_cfg):
    table, cfg = table_and_cfg
    arch = random_arch(cfg, 0)
    arch["cell/node2/in"] = [0, 1]  # edge 2 dropped: its op does not matter
    costs = {op: table.derived({**arch, "cell/node2/op2": op}, "params") for op in cfg.ops}
    assert len(set(costs.values())) == 1
    kept = {op: table.derived({**arch, "cell/node2/op0": op}, "params") for op in cfg.ops}
    assert len(set(kept.values())) == 3


def test_expected_cost_is_differentiable_and_agrees_with_one_hot(table_and_cfg):
    table, cfg = table_and_cfg
    arch = random_arch(cfg, 1)
    logits = {label: torch.zeros(spec["n_candidates"], requires_grad=True) for label, spec in table.choices.items()}
    probs = {label: torch.softmax(v, -1) for label, v in logits.items()}
    expected = table.expected(probs, "params")
    expected.backward()
    assert any(float(v.grad.abs().sum()) > 0 for v in logits.values())
    one_hot = one_hot_probs(table, arch)
    assert float(table.expected(one_hot, "params")) == pytest.approx(table.derived(arch, "params"))
    assert table.derived(one_hot, "params") == pytest.approx(table.derived(arch, "params"))
    cheap = table.derived({l: s["candidates"][0] for l, s in table.choices.items() if s["candidates"]}, "params")
    dear = table.derived({l: s["candidates"][-1] for l, s in table.choices.items() if s["candidates"]}, "params")
    assert cheap < float(table.expected({}, "params")) < dear  # the uniform prior lies in between


def test_json_round_trip_and_errors(table_and_cfg, tmp_path):
    table, cfg = table_and_cfg
    path = tmp_path / "lut.json"
    table.save(path)
    again = CostTable.load(path)
    arch = random_arch(cfg, 2)
    assert again.derived(arch, "params") == table.derived(arch, "params")
    data = json.loads(path.read_text())
    data["entries"][0]["costs"]["params"] = [1.0]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="costs, expected"):
        CostTable.load(path)
    with pytest.raises(ValueError, match="not found"):
        CostTable.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown cost metric"):
        table.derived(arch, "flops")
    with pytest.raises(ValueError, match="unknown op"):
        table.derived({**arch, "cell/node0/op0": "conv_9x9"}, "params")


def test_latency_table_and_measurement(table_and_cfg):
    _, cfg = table_and_cfg
    threads = torch.get_num_threads()
    table = build_cost_table(cfg, (32, 64), latency=True, repeats=2)
    assert torch.get_num_threads() == threads  # restored after timing with one thread
    assert table.fixed["latency_ms"] >= 0
    assert all(min(e.costs["latency_ms"]) >= 0 and max(e.costs["latency_ms"]) > 0 for e in table.entries)
    net = build_network(cfg, random_arch(cfg, 0))
    cost = measure_cost(net, (32, 64), repeats=2)
    assert cost["params"] == count_params(net) and cost["latency_ms"] > 0
    assert measure_latency(torch.nn.Identity(), torch.zeros(1), repeats=3) >= 0


def test_penalty_weight_moves_towards_the_target(table_and_cfg):
    table, cfg = table_and_cfg
    arch = random_arch(cfg, 0)
    cost = table.derived(arch, "params")
    over = ResourcePenalty(table, "params", cost / 2, lam=0.1, rate=0.5)
    assert over.adapt(arch) == pytest.approx(cost) and over.lam > 0.1
    under = ResourcePenalty(table, "params", cost * 2, lam=0.1, rate=0.5)
    under.adapt(arch)
    assert under.lam < 0.1
    assert float(over.loss({})) == pytest.approx(over.lam * float(table.expected({}, "params")) / (cost / 2))
    capped = ResourcePenalty(table, "params", 1.0, lam=1.0, rate=50.0, lam_max=3.0)
    capped.adapt(arch)
    assert capped.lam == 3.0
    state = capped.state_dict()
    capped.reset()
    assert capped.lam == 1.0
    capped.load_state_dict(state)
    assert capped.lam == 3.0
    with pytest.raises(ValueError, match="target must be > 0"):
        ResourcePenalty(table, "params", 0)
    with pytest.raises(ValueError, match="unknown cost metric"):
        ResourcePenalty(table, "watts", 1.0)
