"""The nnictl experiment configs: NNI accepts them, and every tuner sample makes a valid trial setup."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from nni_rspnet.schema import from_mapping
from nni_rspnet.seg.data import DataConfig
from nni_rspnet.nnictl.hpo import check_search_space_matches, split_sample
from nni_rspnet.search.driver import SearchConfig
from nni_rspnet.space.model import SpaceConfig
from nni_rspnet.seg.train import TrainConfig
from nni_rspnet.nnictl.trial import build_parser, resolve_sections

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "experiment_configs").glob("*.yml"))
SECTIONS = {"space": SpaceConfig, "search": SearchConfig, "train": TrainConfig, "data": DataConfig}


def canonical(path: Path):
    from nni.experiment.config import ExperimentConfig

    return ExperimentConfig.load(str(path)).canonical_copy()  # what nnictl create does, paths resolved


def test_the_three_configs_exist():
    assert {p.stem for p in CONFIGS} == {"cell", "macro", "arch_hpo"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_valid_and_every_tuner_sample_fits(path):
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    cfg = canonical(path)
    assert cfg.training_service.platform == "local"
    assert cfg.assessor.name == "Medianstop" and cfg.assessor.class_args["optimize_mode"] == "maximize"
    assert Path(cfg.trial_code_directory) == ROOT
    argv = shlex.split(cfg.trial_command)
    assert argv[:3] == ["python3", "-m", "nni_rspnet.nnictl.trial"]
    args = build_parser().parse_args(argv[3:])
    assert (ROOT / args.config).is_file()

    tuner = TpeTuner(seed=0)
    tuner.update_search_space(cfg.search_space)
    for i in range(5):  # the first samples of TPE are random: they cover the space's corners
        sample = tuner.generate_parameters(i)
        sections, arch_part = resolve_sections(str(ROOT / args.config), args.overrides, sample)
        built = {name: from_mapping(cls, sections[name], f"{path.name} sample {i} [{name}]")
                 for name, cls in SECTIONS.items()}
        for key, value in split_sample(sample)[1].items():
            for name, v in value.items():
                assert getattr(built[key], name) == pytest.approx(v)  # the tuner's value wins
        if args.stage == "arch":
            check_search_space_matches(cfg.search_space, built["space"], source=str(path))
            assert set(arch_part) == {k for k in cfg.search_space if "/" in k}
        else:
            assert arch_part == {}
        tuner.receive_trial_result(i, sample, 0.1)
