"""RunConfig: one configuration per run, one default per setting, and the class-count check on every path."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from nni_rspnet.cli import main as cli_main
from nni_rspnet.config import RunConfig
from nni_rspnet.errors import ConfigError
from nni_rspnet.nnictl.trial import run_trial
from nni_rspnet.schema import SECTIONS
from nni_rspnet.search.driver import run_search
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.search.strategy import RSPDartsModule, TwoStageDarts
from nni_rspnet.seg.data import DataConfig, build_datasets
from nni_rspnet.seg.train import SegmentationModule, TrainConfig, train_network
from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.space.model import SpaceConfig

SMALL_SPACE = {"resolutions": [4, 8], "channels": [8, 16], "layers": 2, "cell_nodes": 2, "stem_channels": 8,
               "head_channels": 8, "ops": ["skip_connect", "conv_3x3"], "rsp_depth": 1}


def test_sections_are_the_config_file_sections():
    assert tuple(f.name for f in dataclasses.fields(RunConfig)) == SECTIONS
    assert RunConfig().to_dict() == RunConfig.from_sections({}).to_dict()


def test_yaml_then_set_then_sample_each_section_validated_once(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"space": SMALL_SPACE, "train": {"epochs": 3, "lr": 0.1}}))
    cfg = RunConfig.load(path, ["train.epochs=4", "data.num_train=10"], {"train.lr": 0.2})
    assert (cfg.train.epochs, cfg.train.lr, cfg.data.num_train) == (4, 0.2, 10)
    assert cfg.space == SpaceConfig(**SMALL_SPACE) and cfg.search == SearchConfig()
    assert RunConfig.from_sections(cfg.to_dict()) == cfg  # the resolved config reads back as itself
    with pytest.raises(ConfigError, match=r"run\.yaml \[search\]: arc_lr must be > 0"):
        RunConfig.load(path, ["search.arc_lr=0"])
    with pytest.raises(ConfigError, match=r"run\.yaml \[train\] with the tuner's parameters: epochs: expected an int"):
        RunConfig.load(path, sample={"train.epochs": "many"})
    with pytest.raises(ConfigError, match="tuner parameter 'epochs'.*SECTION.KEY"):
        RunConfig.load(path, sample={"epochs": 3})
    with pytest.raises(ConfigError, match=r"\[search\]: lut: cost table .*none.json' not found"):
        RunConfig.load(path, [f"search.lut={tmp_path / 'none.json'}"])


def test_one_default_per_setting():
    """The section dataclasses hold every default: the strategy and the training module read theirs."""
    search, strategy = SearchConfig(), TwoStageDarts()
    assert strategy.epochs == {1: search.warmup_epochs + search.stage1_epochs,
                               2: search.stage2_warmup_epochs + search.stage2_epochs}
    assert strategy.module_kwargs == dict(arc_learning_rate=search.arc_lr, arc_weight_decay=search.arc_weight_decay,
                                          gradient_clip_val=search.grad_clip, tau_init=search.tau_init,
                                          tau_min=search.tau_min, partial_channels=search.partial_channels,
                                          warmup_sampling=search.warmup_sampling, path_sampling=search.path_sampling,
                                          stage1_weight_sampling=search.stage1_weight_sampling,
                                          stage1_arch_sampling=search.stage1_arch_sampling)
    assert TwoStageDarts.from_config(SearchConfig(stage1_weight_sampling=True)).module_kwargs["stage1_weight_sampling"]
    assert TwoStageDarts.from_config(SearchConfig(stage1_arch_sampling=True)).module_kwargs["stage1_arch_sampling"]
    assert TwoStageDarts.from_config(SearchConfig(arc_lr=0.5)).module_kwargs["arc_learning_rate"] == 0.5
    assert strategy.val_images == search.val_images
    assert TwoStageDarts.from_config(SearchConfig(val_images=7)).val_images == 7
    internal = inspect.signature(RSPDartsModule).parameters
    assert all(internal[k].default is inspect.Parameter.empty for k in strategy.module_kwargs)  # no own default
    train = TrainConfig()
    module = inspect.signature(SegmentationModule).parameters
    for key in ("optimizer", "lr", "momentum", "weight_decay", "poly_power", "warmup_epochs", "aux_weight",
                "ohem_thresh", "ohem_min_kept", "ema_decay", "teacher", "kd_weight", "kd_temperature"):
        assert module[key].default == getattr(train, key), key


@pytest.fixture
def three_class_folder(tmp_path):
    from test_data import make_folder

    return f"folder:{make_folder(str(tmp_path / 'data'))}"


def test_num_classes_is_checked_on_every_path(tmp_path, three_class_folder, capsys):
    """A dataset whose classes the head does not predict stops search, train, trial and demo at once."""
    space = SpaceConfig(**SMALL_SPACE)  # 11 classes
    data = DataConfig(dataset=three_class_folder, batch_size=2, val_batch_size=2, augment=False)
    message = f"space.num_classes is 11 but dataset {three_class_folder} has 3 classes; set --set space.num_classes=3"
    with pytest.raises(ConfigError, match=message):
        build_datasets(data, num_classes=11)
    assert build_datasets(data, num_classes=3).classes == ["sky", "ground", "thing"]
    with pytest.raises(ConfigError, match=message):
        run_search(space, SearchConfig(), data, tmp_path / "search")
    assert not (tmp_path / "search").exists()  # checked before anything was written
    with pytest.raises(ConfigError, match=message):
        train_network(build_network(space, random_arch(space, 0)), data, TrainConfig(), str(tmp_path / "train"),
                      space=space.to_dict())
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"space": SMALL_SPACE, "data": {"dataset": three_class_folder}}))
    with pytest.raises(ConfigError, match=message):
        run_trial("arch", str(config), out_dir=str(tmp_path / "trial"))
    assert cli_main(["demo", "--fast", "--config", str(config), "--out", str(tmp_path / "demo")]) == 2
    assert message in capsys.readouterr().err


def test_numbers_as_a_user_writes_them(tmp_path):
    """YAML 1.1 reads 1e6 as a string; a user means a number (in files and in --set)."""
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 2e-3\n")
    cfg = RunConfig.load(path, ["search.lr=1e6", "search.target_params=5E4"])
    assert (cfg.train.lr, cfg.search.lr, cfg.search.target_params) == (2e-3, 1e6, 5e4)
    with pytest.raises(ConfigError, match=r"\[train\]: lr: expected a finite number, got nan"):
        RunConfig.load(path, ["train.lr=.nan"])  # NaN passed every `<= 0` check
    with pytest.raises(ConfigError, match=r"\[space\]: paths_per_node=5 is more than the incoming paths of any node "
                                          r"\(at most 4 with skip_paths=true\)"):
        RunConfig.load(path, ["space.paths_per_node=5", "space.skip_paths=true"])
