"""The architecture as a tuner search space: export, tuner samples back to valid architectures."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nni_rspnet.errors import ArchError
from nni_rspnet.space.arch import build_network, space_spec
from nni_rspnet.cli import main as cli_main
from nni_rspnet.errors import ConfigError
from nni_rspnet.nnictl.hpo import (check_search_space_matches, export_search_space, load_search_space, sample_to_arch,
                            split_sample, write_search_space)
from nni_rspnet.space.model import SpaceConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"name": "small", "num_classes": 4, "stem_channels": 8, "resolutions": [4, 8], "channels": [8, 16],
         "layers": 3, "paths_per_node": 2, "skip_paths": True, "cell_nodes": 3, "head_channels": 8,
         "ops": ["skip_connect", "conv_3x3", "sep_conv_3x3"], "rsp_depth": 1}


@pytest.fixture(scope="module")
def small_cfg() -> SpaceConfig:
    return SpaceConfig.from_dict(SMALL)


def test_export_covers_every_label_with_its_choices(small_cfg):
    spec = space_spec(small_cfg)
    space = export_search_space(small_cfg)
    assert list(space) == list(spec)
    for label, entry in space.items():
        assert entry["_type"] == "choice"
        choice = spec[label]
        if choice.is_op:
            assert entry["_value"] == list(small_cfg.ops)
        else:  # every distinct set of chosen inputs, once, as a sorted index list
            assert len(entry["_value"]) == math.comb(choice.n_candidates, choice.n_chosen)
            assert all(v == sorted(v) and len(v) == choice.n_chosen for v in entry["_value"])
            assert len({tuple(v) for v in entry["_value"]}) == len(entry["_value"])
    assert any(k.startswith("macro/") for k in space) and any(k.endswith("/in") for k in space)


@pytest.mark.parametrize("tuner", ["Random", "TPE", "Evolution"])
def test_stock_tuner_samples_rebuild(small_cfg, tuner):
    from nni.algorithms.hpo.evolution_tuner import EvolutionTuner
    from nni.algorithms.hpo.random_tuner import RandomTuner
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    make = {"Random": lambda: RandomTuner(seed=1), "TPE": lambda: TpeTuner(seed=1),
            "Evolution": lambda: EvolutionTuner(population_size=3)}[tuner]
    t = make()
    # A JSON round trip, as nnictl hands the file to the tuner.
    t.update_search_space(json.loads(json.dumps(export_search_space(small_cfg, {"train.lr": {
        "_type": "loguniform", "_value": [1e-3, 1e-1]}}))))
    archs = []
    for i in range(4):
        sample = t.generate_parameters(i)
        arch = sample_to_arch(sample, small_cfg)
        assert 1e-3 <= split_sample(sample)[1]["train.lr"] <= 1e-1
        archs.append(arch)
        t.receive_trial_result(i, sample, 0.1 * i)
    net = build_network(small_cfg, archs[-1])
    out = net(torch.randn(1, 3, 32, 64))
    assert out.shape == (1, 4, 32, 64)


def test_split_sample_and_errors(small_cfg):
    arch, over = split_sample({"cell/node0/op0": "conv_3x3", "search.arc_lr": 0.01, "space.paths_per_node": 1})
    assert arch == {"cell/node0/op0": "conv_3x3"}
    assert over == {"search.arc_lr": 0.01, "space.paths_per_node": 1}
    assert split_sample(None) == ({}, {})
    with pytest.raises(ConfigError, match="'lr'.*SECTION.KEY"):
        split_sample({"lr": 0.1})
    with pytest.raises(ConfigError, match="'model.lr'"):
        split_sample({"model.lr": 0.1})
    with pytest.raises(ArchError, match="no architecture label"):
        sample_to_arch({"train.lr": 0.1}, small_cfg)
    good = {label: entry["_value"][0] for label, entry in export_search_space(small_cfg).items()}
    bad_label = next(k for k in good if k.startswith("macro/"))
    with pytest.raises(ArchError, match=bad_label):
        sample_to_arch({**good, bad_label: [0, 99]}, small_cfg)


def test_extra_key_must_be_section_key(small_cfg):
    with pytest.raises(ConfigError, match="SECTION.KEY"):
        export_search_space(small_cfg, {"lr": {"_type": "choice", "_value": [1]}})


def test_committed_tiny_arch_json_matches_tiny_space():
    """search_spaces/tiny_arch.json is what arch_hpo.yml hands the tuner: it must fit tiny.yaml."""
    path = ROOT / "search_spaces" / "tiny_arch.json"
    space = load_search_space(path)
    cfg = SpaceConfig.from_yaml(ROOT / "search_spaces" / "tiny.yaml")
    labels = check_search_space_matches(space, cfg, source=str(path))
    assert labels == list(space_spec(cfg))


def test_mismatched_search_space_is_named(small_cfg, tmp_path):
    space = export_search_space(small_cfg)
    label = next(iter(space))
    del space[label]
    with pytest.raises(ArchError, match=f"missing label '{label}'"):
        check_search_space_matches(space, small_cfg)
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="'_type' and '_value'"):
        load_search_space(bad)


def test_cli_export_search_space(tmp_path, capsys):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(json.dumps({"space": SMALL}))  # JSON is YAML
    out = tmp_path / "arch.json"
    extra = json.dumps({"train.lr": {"_type": "loguniform", "_value": [0.001, 0.1]}})
    assert cli_main(["export-search-space", "--config", str(cfg), "--out", str(out), "--extra", extra]) == 0
    written = json.loads(out.read_text())
    assert written == write_search_space(SMALL, tmp_path / "again.json", json.loads(extra))
    assert "architecture labels and 1 other parameters" in capsys.readouterr().out
    assert cli_main(["export-search-space", "--config", str(cfg), "--out", str(out), "--extra", "{bad"]) == 2
    assert "--extra: not valid JSON" in capsys.readouterr().err
