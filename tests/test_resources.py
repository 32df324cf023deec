"""The shipped files (package data), configs by name or path from any folder, and ``--threads``."""
from __future__ import annotations

import os
import re
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from nni_rspnet.cli import main
from nni_rspnet.config import RunConfig
from nni_rspnet.errors import ConfigError
from nni_rspnet.resources import all_shipped, resolve, shipped

ROOT = Path(__file__).resolve().parents[1]


def test_every_top_level_file_ships(monkeypatch, tmp_path):
    """Each file of search_spaces/ and experiment_configs/ is package data, found by name from any folder."""
    monkeypatch.chdir(tmp_path)
    names = {item.path.name for item in all_shipped()}
    on_disk = {p.name for pattern in ("search_spaces/*", "search_spaces/found/*", "experiment_configs/*")
               for p in ROOT.glob(pattern) if p.suffix in (".yaml", ".yml", ".json")}
    assert on_disk and names == on_disk
    assert {item.name for item in shipped("config")} >= {"tiny", "cityscapes"}
    assert {item.name for item in shipped("experiment")} == {"macro", "cell", "arch_hpo"}


def test_the_wheel_lists_every_package():
    """pyproject.toml lists the packages by hand (two of them are the mapped data folders): none may be missed."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nni_rspnet").rglob("__init__.py")}
    assert set(setuptools["packages"]) == code | {"nni_rspnet.search_spaces", "nni_rspnet.experiment_configs"}
    assert setuptools["package-dir"] == {"nni_rspnet.search_spaces": "search_spaces",
                                         "nni_rspnet.experiment_configs": "experiment_configs"}


def test_resolve_takes_a_path_first_then_a_shipped_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    tiny = resolve("tiny")
    assert Path(tiny).name == "tiny.yaml" and Path(tiny).is_file()
    assert resolve("tiny.yaml") == tiny
    (tmp_path / "tiny.yaml").write_text("space: {layers: 2}\n")
    assert resolve("tiny.yaml") == "tiny.yaml"  # a file that exists wins over the shipped one
    assert resolve("tiny") == tiny  # ... a bare name without such a file is the shipped one
    assert Path(resolve("macro", "experiment")).name == "macro.yml"
    with pytest.raises(ConfigError, match=r"^tinny: config file not found .*shipped: cityscapes, .*tiny"):
        resolve("tinny")
    with pytest.raises(ConfigError, match=r"^search_spaces/tiny.yaml: config file not found"):
        resolve("search_spaces/tiny.yaml")  # a path is a path: not looked up among the shipped names


def test_run_config_by_name_from_an_empty_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    run = RunConfig.load("tiny", ["space.layers=2"])
    assert run.space.name == "tiny" and run.space.layers == 2
    assert RunConfig.load().space.name == "tiny"  # the default config is the shipped one


def test_shipped_experiments_point_at_shipped_search_spaces():
    """searchSpaceFile is relative to the experiment file: the sibling data folder holds it, installed or not."""
    for item in shipped("experiment"):
        data = yaml.safe_load(item.path.read_text())
        target = (item.path.parent / data["searchSpaceFile"]).resolve()
        assert target.is_file() and target.parent.name == "search_spaces", item.name
        assert "--config tiny" in data["trialCommand"] and data["trialCodeDirectory"] == "."


def test_configs_command_lists_and_prints_paths(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny", "cityscapes", "macro_hparams", "arch_hpo"):
        assert f"  {name} " in out
    first_comment = (ROOT / "search_spaces" / "tiny.yaml").read_text().splitlines()[0].lstrip("# ").strip()
    # each file with the first line of its header comment (names padded to the longest of their kind)
    assert re.search(rf"^  tiny +{re.escape(first_comment)}$", out, re.M)
    assert re.search(r"^  cityscapes_light-half_lraspp +", out, re.M)  # the shipped light network
    assert main(["configs", "--path", "macro"]) == 0
    path = capsys.readouterr().out.strip()
    assert os.path.isabs(path) and path.endswith("macro.yml") and os.path.isfile(path)
    assert main(["configs", "--path", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--path nope: not a shipped file" in err[0] and "tiny.yaml" in err[0]


def test_threads_option_sets_torch_threads(capsys, tmp_path):
    import torch

    config = tmp_path / "s.yaml"
    config.write_text("space:\n  resolutions: [4, 8]\n  channels: [8, 16]\n  layers: 2\n  cell_nodes: 2\n"
                      "  ops: [skip_connect, conv_3x3]\n  rsp_depth: 1\n  head_channels: 8\n")
    assert main(["space", "--config", str(config), "--samples", "0", "--threads", "3"]) == 0
    assert torch.get_num_threads() == 3  # the conftest fixture restores the test's one thread
    torch.set_num_threads(1)
    assert main(["space", "--config", str(config), "--samples", "0"]) == 0
    assert torch.get_num_threads() == 1  # 0 (the default) leaves torch's setting alone
    with pytest.raises(SystemExit) as exit_info:
        main(["space", "--threads", "-1"])
    assert exit_info.value.code == 2
    assert "--threads: expected a whole number >= 0, got '-1'" in capsys.readouterr().err


def test_idle_threads_sleep_on_a_busy_machine_unless_the_environment_says_otherwise(tmp_path):
    import subprocess
    import sys

    from nni_rspnet.runtime import busy_cores, wait_policy

    assert wait_policy(None) is None and wait_policy(0.2) is None and wait_policy(0.5) == "PASSIVE"
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    assert busy_cores(0.0, str(stat)) is None  # no time passed between the samples
    assert busy_cores(0.0, str(tmp_path / "missing")) is None
    real = busy_cores(0.05)
    assert real is None or 0.0 <= real <= (os.cpu_count() or 1)

    code = "import os, nni_rspnet; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ACTIVE", done.stderr
    # a busy machine: keep one core busy while the package is imported
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        spin.kill()
        spin.wait()
    assert done.stdout.strip() == "PASSIVE", done.stderr


def test_a_child_process_chooses_its_own_wait_policy_unless_the_user_set_one(monkeypatch):
    """The policy the package chose under load is not inherited by a child that starts on an idle machine
    (the benchmark's demo ran at a third of its speed so); the user's own setting always stands."""
    from nni_rspnet import runtime

    load = {"busy": 1.5}
    monkeypatch.setattr(runtime, "busy_cores", lambda: load["busy"])
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv(runtime.AUTO_WAIT_POLICY, raising=False)
    runtime.sleeping_idle_threads()  # the parent, under load
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" == os.environ[runtime.AUTO_WAIT_POLICY]
    load["busy"] = 0.1
    runtime.sleeping_idle_threads()  # its child (same environment), on an idle machine: OpenMP's default
    assert "OMP_WAIT_POLICY" not in os.environ and runtime.AUTO_WAIT_POLICY not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the user's: kept on an idle machine
    runtime.sleeping_idle_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and runtime.AUTO_WAIT_POLICY not in os.environ
