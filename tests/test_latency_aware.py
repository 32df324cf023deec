"""Latency-aware search: target forms, the cost table's model of a built network (pruning included),
runtimes, the table cache and a relative target end to end."""
from __future__ import annotations

import json
import os

import pytest
import torch

from nni_rspnet.cli import main
from nni_rspnet.errors import ConfigError
from nni_rspnet.measure import count_macs, count_params, time_interleaved
from nni_rspnet.search import cost_table as ct
from nni_rspnet.search.cost_table import CostTable, build_cost_table, cost_table_for, resolve_target
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.search.targets import LatencyTarget, parse_latency_target
from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.space.model import SpaceConfig
from cost_helpers import one_hot_probs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "search_spaces", "tiny.yaml")
LIGHT = os.path.join(ROOT, "search_spaces", "cityscapes_light.yaml")
SIZE = (32, 64)


def small_space(**changes) -> SpaceConfig:
    values = dict(name="t", num_classes=5, stem_channels=8, resolutions=[4, 8, 16], channels=[8, 16, 16], layers=3,
                  paths_per_node=2, skip_paths=True, cell_nodes=3, ops=["skip_connect", "sep_conv_3x3", "conv_3x3"],
                  rsp_depth=1, rsp_form="single", head_channels=8, stem_layers=2, resampler="sep", head="sep")
    values.update(changes)
    return SpaceConfig(**values)


@pytest.fixture(scope="module")
def table_and_cfg():
    cfg = small_space()
    return build_cost_table(cfg, SIZE, latency=True, repeats=1, warmup=0, calibrate=0), cfg


# --- targets --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (12, LatencyTarget(ms=12.0)), (12.5, LatencyTarget(ms=12.5)), ("12", LatencyTarget(ms=12.0)),
    ("12.5ms", LatencyTarget(ms=12.5)), (" 3 ms", LatencyTarget(ms=3.0)),
    ("0.5xlraspp", LatencyTarget(factor=0.5, reference="lraspp")),
    ("0.5x lraspp", LatencyTarget(factor=0.5, reference="lraspp")),
    ("2*DeepLabV3", LatencyTarget(factor=2.0, reference="deeplabv3")),
])
def test_latency_target_forms(text, expected):
    assert parse_latency_target(text) == expected
    assert parse_latency_target(None) is None
    assert parse_latency_target(str(expected)) == expected  # printed as it is read


@pytest.mark.parametrize("text, match", [
    ("0.5xmobilenet", "unknown reference network 'mobilenet'"), ("fast", "cannot read 'fast'"),
    ("0ms", "positive"), (-3, "positive"), ("0xlraspp", "positive"), (True, "not a latency"),
    ("12 s", "cannot read"),
])
def test_latency_target_errors_are_one_line(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_latency_target(text)
    assert "\n" not in str(err.value) and "search.target_latency" in str(err.value)


def test_search_section_reads_targets_in_one_place():
    cfg = SearchConfig.from_yaml(TINY, ["search.target_latency=0.5xlraspp"])
    assert cfg.target == ("latency_ms", LatencyTarget(factor=0.5, reference="lraspp"))
    assert SearchConfig.from_yaml(TINY, ["search.target_latency=20ms"]).target == ("latency_ms", LatencyTarget(ms=20.0))
    assert SearchConfig.from_yaml(TINY, ["search.target_latency_ms=7"]).target == ("latency_ms", LatencyTarget(ms=7.0))
    with pytest.raises(ConfigError, match="unknown reference network 'resnet'"):
        SearchConfig.from_yaml(TINY, ["search.target_latency=0.5xresnet"])
    with pytest.raises(ConfigError, match="at most one"):
        SearchConfig.from_yaml(TINY, ["search.target_latency=5", "search.target_params=1000"])
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        SearchConfig.from_yaml(TINY, ["search.latency_runtime=tensorrt"])
    # the light Cityscapes space searches latency-aware by default, at the deployment size
    light = SearchConfig.from_yaml(LIGHT)
    assert light.target == ("latency_ms", LatencyTarget(factor=0.5, reference="lraspp"))
    assert light.latency_input_size == [512, 1024]


def test_cli_rejects_an_unknown_reference_in_one_line(tmp_path, capsys):
    assert main(["search", "--config", TINY, "--out", str(tmp_path / "x"), "--set",
                 "search.target_latency=0.5xresnet"]) == 2
    err = capsys.readouterr().err
    assert "unknown reference network 'resnet'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --- the model of a built network -------------------------------------------------------------------

def test_params_and_macs_of_every_network_are_exact_pruned_nodes_included(table_and_cfg):
    table, cfg = table_and_cfg
    pruned = 0
    for seed in range(16):
        arch = random_arch(cfg, seed)
        net = build_network(cfg, arch)
        assert len(table.live(arch)) == len(net.nodes)
        pruned += len(net.nodes) < len(table.nodes)
        assert table.derived(arch, "params") == count_params(net)
        assert table.derived(arch, "macs") == pytest.approx(count_macs(net, SIZE), rel=1e-9)
    assert pruned > 0  # the seeds include networks with pruned nodes


def _pruned_arch(table, cfg):
    for seed in range(64):
        arch = random_arch(cfg, seed)
        if len(table.live(arch)) < len(table.nodes):
            return arch
    raise AssertionError("no random architecture with a pruned node")


def test_a_pruned_network_costs_exactly_its_live_nodes(table_and_cfg):
    table, cfg = table_and_cfg
    arch = _pruned_arch(table, cfg)
    live = set(table.live(arch))
    for metric in ("params", "macs", "latency_ms"):
        by_hand = table.fixed[metric]
        for node in table.nodes:
            if node.node not in live:
                continue
            keep = arch[node.label] if node.label else range(len(node.sources))
            by_hand += node.block[metric] + sum(node.paths[metric][j] for j in keep)
        for e in table.entries:
            if e.node in live and (e.gate is None or e.gate[1] in arch[e.gate[0]]):
                by_hand += e.costs[metric][table.choices[e.label]["candidates"].index(arch[e.label])]
        assert table.derived(arch, metric) == pytest.approx(by_hand, rel=1e-6)
    # a dead node's own path choice changes nothing
    dead = next(n for n in table.nodes if n.node not in live and n.label)
    other = next(v for v in ([0, 1], [0, 2], [1, 2]) if v != arch[dead.label] and max(v) < len(dead.sources))
    assert table.derived({**arch, dead.label: other}, "latency_ms") == pytest.approx(table.derived(arch, "latency_ms"))


def test_soft_liveness_is_between_zero_and_one_and_one_hot_matches_derived(table_and_cfg):
    table, cfg = table_and_cfg
    arch = _pruned_arch(table, cfg)
    one_hot = one_hot_probs(table, arch)
    for metric in ("params", "latency_ms"):
        assert float(table.expected(one_hot, metric)) == pytest.approx(table.derived(arch, metric), rel=1e-5)
    weights = {label: table._weights(label, None, True) for label in table.choices}
    live = table._liveness(weights, discrete=False)
    assert all(0.0 < float(v) <= 1.0 for v in live.values())
    assert any(float(v) < 1.0 for v in live.values())  # the uniform prior prunes some nodes sometimes
    logits = {label: torch.zeros(spec["n_candidates"], requires_grad=True) for label, spec in table.choices.items()}
    table.expected({k: torch.softmax(v, -1) for k, v in logits.items()}, "latency_ms").backward()
    path_label = next(n.label for n in table.nodes if n.label)
    assert float(logits[path_label].grad.abs().sum()) > 0  # paths steer the latency through pruning too


def test_extreme_architectures_bound_random_ones(table_and_cfg):
    table, cfg = table_and_cfg
    lo, hi = table.extreme_arch("params", min), table.extreme_arch("params", max)
    low, high = table.derived(lo, "params"), table.derived(hi, "params")
    assert low == count_params(build_network(cfg, lo)) and high == count_params(build_network(cfg, hi))
    for seed in range(8):
        assert low <= table.derived(random_arch(cfg, seed), "params") <= high


def test_json_round_trip_keeps_the_model_and_refuses_old_tables(table_and_cfg, tmp_path):
    table, cfg = table_and_cfg
    path = tmp_path / "t.json"
    table.save(path)
    again = CostTable.load(path)
    arch = _pruned_arch(table, cfg)
    assert again.derived(arch, "latency_ms") == pytest.approx(table.derived(arch, "latency_ms"))
    data = json.loads(path.read_text())
    data.pop("format")
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not a cost table of this version"):
        CostTable.load(path)


@pytest.mark.parametrize("runtime", ["eager", "torchscript", "onnxruntime"])
def test_table_in_each_runtime_times_parts_and_references(runtime):
    cfg = small_space(layers=2, resolutions=[4, 8], channels=[8, 16], ops=["skip_connect", "sep_conv_3x3"])
    table = build_cost_table(cfg, SIZE, repeats=1, warmup=0, runtime=runtime, references=["lraspp"], calibrate=1)
    assert table.runtime == runtime and table.references["lraspp"] > 0
    assert all(n.block["latency_ms"] > 0 for n in table.nodes)
    assert all(e.costs["latency_ms"][1] > 0 for e in table.entries)  # sep_conv_3x3
    assert table.key["runtime"] == runtime and table.key["clock"] == "cpu"


def test_relative_target_resolves_with_the_reference_of_the_table(table_and_cfg):
    table, _ = table_and_cfg
    table = CostTable.from_dict({**table.to_dict(), "references": {"lraspp": 40.0}})
    cfg = SearchConfig.from_yaml(TINY, ["search.target_latency=0.25xlraspp"])
    assert resolve_target(cfg, table) == ("latency_ms", 10.0)
    assert resolve_target(SearchConfig.from_yaml(TINY, ["search.target_params=100"]), table) == ("params", 100.0)


def test_the_table_is_measured_once_per_folder_and_settings(tmp_path, monkeypatch):
    cfg = small_space(layers=2, resolutions=[4, 8], channels=[8, 16], ops=["skip_connect", "sep_conv_3x3"])
    search = SearchConfig.from_yaml(TINY, ["search.target_latency=0.5xlraspp", "search.latency_repeats=1"])
    calls = []
    real = ct.build_cost_table

    def counting(*args, **kwargs):
        calls.append(kwargs.get("references"))
        return real(*args, **{**kwargs, "calibrate": 0})

    monkeypatch.setattr(ct, "build_cost_table", counting)
    first, source = cost_table_for(cfg, search, SIZE, "cpu", str(tmp_path))
    assert source == "measured now" and calls == [["lraspp"]] and (tmp_path / "cost_table.json").is_file()
    again, source = cost_table_for(cfg, search, SIZE, "cpu", str(tmp_path))
    assert "measured earlier" in source and len(calls) == 1
    assert again.references == pytest.approx(first.references)
    cost_table_for(cfg, search, (48, 64), "cpu", str(tmp_path))  # another deployment size: measured again
    assert len(calls) == 2
    lut = tmp_path / "lut.json"
    CostTable.from_dict({**first.to_dict(), "references": {}}).save(lut)
    given = SearchConfig.from_yaml(TINY, ["search.target_latency=0.5xlraspp", f"search.lut={lut}"])
    with pytest.raises(ConfigError, match="no latency of reference network 'lraspp'"):
        cost_table_for(cfg, given, SIZE, "cpu", None)


def test_interleaved_timing_and_clocks():
    calls = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1,
                             clock="cpu")
    assert calls == ["a", "b"] * 4 and all(len(t) == 3 for t in times.values())
    with pytest.raises(ValueError, match="one thread"):
        time_interleaved({"a": lambda: None}, 1, threads=2, clock="cpu")
