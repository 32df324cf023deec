"""The nnictl experiment configs: what NNI makes of them, what their trial command runs, and that every
tuner sample makes a valid run configuration."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from nni_rspnet.config import RunConfig
from nni_rspnet.nnictl.hpo import check_search_space_matches, split_sample
from nni_rspnet.nnictl.trial import STAGES, build_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {p.stem: p for p in sorted((ROOT / "experiment_configs").glob("*.yml"))}
EXPECTED = {"cell": "cell", "macro": "macro", "arch_hpo": "arch"}  # config -> the stage its trials run


def canonical(path: Path):
    from nni.experiment.config import ExperimentConfig

    return ExperimentConfig.load(str(path)).canonical_copy()  # what nnictl create does, paths resolved


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_nni_loads_the_config_and_its_trial_command_runs_our_trial(name):
    """As ``nnictl create`` would: load and validate the YAML, read its search space, send the manager its
    JSON; then the trial command, run from the trial code folder, starts our trial with valid arguments."""
    assert set(CONFIGS) == set(EXPECTED)
    cfg = canonical(CONFIGS[name])
    cfg.validate()
    manager_json = cfg.json()  # the experiment as nnictl hands it to the NNI manager
    assert manager_json["searchSpace"] == cfg.search_space and cfg.search_space  # the tuner's space was read
    assert cfg.training_service.platform == "local"
    assert cfg.assessor.name == "Medianstop" and cfg.assessor.class_args["optimize_mode"] == "maximize"
    assert Path(cfg.trial_code_directory) == ROOT / "experiment_configs"  # the trials need no code from a clone
    argv = shlex.split(cfg.trial_command)
    assert argv[0] in ("python", "python3") and argv[1] == "-m"
    spec = importlib.util.find_spec(argv[2])  # `python -m MODULE` finds a module that runs as a script
    assert spec is not None and spec.origin.endswith(".py") and Path(spec.origin).read_text().count("__main__")
    args = build_parser().parse_args(argv[3:])
    assert args.stage == EXPECTED[name] and args.stage in STAGES
    assert args.config == "tiny"  # a shipped config: the trial runs from any folder
    RunConfig.load(args.config, args.overrides)  # the trial's --set are valid


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_tuner_sample_fits(name):
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    path = CONFIGS[name]
    cfg = canonical(path)
    args = build_parser().parse_args(shlex.split(cfg.trial_command)[3:])
    tuner = TpeTuner(seed=0)
    tuner.update_search_space(cfg.search_space)
    for i in range(5):  # the first samples of TPE are random: they cover the space's corners
        sample = tuner.generate_parameters(i)
        arch_part, settings = split_sample(sample)
        run = RunConfig.load(args.config, args.overrides, settings, origin=f"{path.name} sample {i}")
        for key, value in settings.items():
            section, field = key.split(".")
            assert getattr(getattr(run, section), field) == pytest.approx(value)  # the tuner's value wins
        if args.stage == "arch":
            check_search_space_matches(cfg.search_space, run.space, source=str(path))
            assert set(arch_part) == {k for k in cfg.search_space if "/" in k}
        else:
            assert arch_part == {}
        tuner.receive_trial_result(i, sample, 0.1)
