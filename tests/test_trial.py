"""The nnictl trial entry point, run in-process (the nnictl test runs it under NNI)."""
from __future__ import annotations

import json

import nni
import pytest
import torch
import yaml

from nni_rspnet.errors import ArchError
from nni_rspnet.space.arch import load_arch, random_arch
from nni_rspnet.errors import ConfigError
from nni_rspnet.seg.deploy import load_model
from nni_rspnet.nnictl.hpo import export_search_space, split_sample
from nni_rspnet.seg.train import TrainConfig
from nni_rspnet.space.model import SpaceConfig
from nni_rspnet.config import RunConfig
from nni_rspnet.nnictl.trial import main, relay_reports, run_trial

SPACE = {"name": "trial-test", "num_classes": 11, "stem_channels": 8, "resolutions": [4, 8], "channels": [8, 16],
         "layers": 2, "paths_per_node": 1, "skip_paths": False, "cell_nodes": 2, "head_channels": 8,
         "ops": ["skip_connect", "conv_3x3"], "rsp_depth": 1}
DATA = {"num_train": 16, "num_val": 8, "image_size": [32, 64], "batch_size": 8, "val_batch_size": 8,
        "augment": False}
TRAIN = {"epochs": 2, "lr": 0.05}
SEARCH = {"warmup_epochs": 0, "stage1_epochs": 2, "stage2_epochs": 1, "limit_batches": 1}




def events(folder):
    """The TensorBoard events of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture
def config_file(tmp_path) -> str:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({"space": SPACE, "data": DATA, "train": TRAIN, "search": SEARCH}))
    return str(path)


@pytest.fixture
def reported(monkeypatch):
    """Captures what the trial sends to NNI (outside NNI these calls only log)."""
    sent = {"intermediate": [], "final": []}
    monkeypatch.setattr(nni, "report_intermediate_result", sent["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", sent["final"].append)
    return sent


def test_settings_are_layered_yaml_then_set_then_tuner(config_file):
    arch, settings = split_sample({"train.epochs": 7, "cell/node0/op0": "x"})
    cfg = RunConfig.load(config_file, ["train.epochs=4", "train.lr=0.2"], settings)
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.2  # tuner > --set > YAML
    assert cfg.data.num_train == 16 and arch == {"cell/node0/op0": "x"}
    assert cfg.train.optimizer == TrainConfig().optimizer  # what none of them sets: the dataclass default


def test_relay_tags_intermediate_and_holds_back_final(reported):
    finals = []
    with relay_reports("retrain", finals):
        nni.report_intermediate_result({"default": 0.5, "epoch": 0})
        nni.report_intermediate_result(0.25)
        nni.report_final_result({"default": 0.5})
    nni.report_final_result({"default": 0.75})  # restored afterwards
    assert reported["intermediate"] == [{"default": 0.5, "epoch": 0, "phase": "retrain"},
                                        {"default": 0.25, "phase": "retrain"}]
    assert finals == [{"default": 0.5}] and reported["final"] == [{"default": 0.75}]


def test_bad_trial_setups_are_named(config_file, tmp_path):
    with pytest.raises(ConfigError, match="--stage"):
        run_trial("nas", config_file, out_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="sent no architecture label"):
        run_trial("arch", config_file, sample={"train.lr": 0.1}, out_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="must not sample labels"):
        run_trial("macro", config_file, sample={"cell/node0/op0": "conv_3x3"}, out_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"train\].*tuner.*epochs"):
        run_trial("arch", config_file, sample={"train.epochs": "many"}, out_dir=str(tmp_path / "o"))
    sample = {label: entry["_value"][0] for label, entry in export_search_space(SPACE).items()}
    label = next(iter(sample))
    with pytest.raises(ArchError, match=f"tuner sample.*{label}"):
        run_trial("arch", config_file, sample={**sample, label: "no_such_op"}, out_dir=str(tmp_path / "o"))


def test_standalone_arch_trial(config_file, tmp_path, reported, capsys):
    """Outside NNI: a random architecture from --seed, trained, measured and exported."""
    out = tmp_path / "out"
    assert main(["--stage", "arch", "--config", config_file, "--out", str(out), "--seed", "3",
                 "--set", "train.lr=0.1"]) == 0
    final = reported["final"]
    assert len(final) == 1 and set(final[0]) == {"default", "params", "macs", "latency_ms"}
    assert 0 <= final[0]["default"] <= 1 and final[0]["params"] > 0 and final[0]["macs"] > 0
    printed = capsys.readouterr().out
    assert f'"default": {final[0]["default"]}' in printed
    assert [r["phase"] for r in reported["intermediate"]] == ["retrain", "retrain"]  # one per epoch
    cfg = SpaceConfig.from_dict(SPACE)
    assert load_arch(out / "arch.json", cfg) == random_arch(cfg, 3)
    saved = json.loads((out / "config.json").read_text())
    assert saved["stage"] == "arch" and saved["train"]["lr"] == 0.1
    assert saved["space"] == SpaceConfig.from_dict(SPACE).to_dict()  # every setting the run used, defaults too
    assert json.loads((out / "result.json").read_text())["default"] == final[0]["default"]
    # The scripted network is the trained one.
    x = torch.randn(2, 3, 32, 64)
    scripted = torch.jit.load(str(out / "model_scripted.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(x), load_model(str(out / "train" / "model.pt"))(x), atol=1e-5)
    assert (out / "arch.png").read_bytes()[:4] == b"\x89PNG"
    # What the web UI shows: TensorBoard's curves and architecture, and a summary at the end of the log.
    retrain = events(out / "tensorboard" / "retrain")
    assert [e.step for e in retrain.Scalars("val_miou")] and len(retrain.Scalars("val_miou")) == 2
    assert retrain.Scalars("val_miou")[-1].value == pytest.approx(final[0]["default"], abs=1e-6)
    board = events(out / "tensorboard" / "architecture")
    text = board.Tensors("architecture/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| parameters | {final[0]['params']:,} |" in text and "arch.png" in text
    assert board.Images("architecture")[0].width > 100
    summary = (out / "architecture.md").read_text()
    assert summary == text and summary in printed


def test_cell_stage_trial_searches_and_reports_cell_epochs(config_file, tmp_path, reported):
    out = tmp_path / "cell"
    final = run_trial("cell", config_file, sample={"search.arc_lr": 0.01}, out_dir=str(out),
                      report=nni.report_final_result)
    phases = [r["phase"] for r in reported["intermediate"]]
    assert phases == ["search1", "search1", "retrain", "retrain"]  # stage 2 is not reported by a cell trial
    assert [r["epoch"] for r in reported["intermediate"][:2]] == [1, 2]
    assert reported["final"] == [final]
    cfg = SpaceConfig.from_dict(SPACE)
    arch = load_arch(out / "arch.json", cfg)
    assert arch == load_arch(out / "search" / "arch.json", cfg)
    cell = json.loads((out / "search" / "cell.json").read_text())
    assert cell and all(arch[k] == v for k, v in cell.items())
    probs = json.loads((out / "probs.json").read_text())
    assert probs and all(0.0 <= p <= 1.0 for p in probs.values())
    assert json.loads((out / "config.json").read_text())["search"]["arc_lr"] == 0.01
    search = events(out / "tensorboard" / "search")
    assert [e.step for e in search.Scalars("search/val_miou")] == [1, 2, 3]  # every search epoch, both stages
