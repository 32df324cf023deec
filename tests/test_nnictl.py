"""End to end through ``nnictl create``: trials, REST API, web UI in a headless browser, report, assessor.

One small experiment (``experiment_configs/arch_hpo.yml`` with 2 trials of a tiny space) runs once for
the module; the tests read it through the REST API, the trial folders, Chromium and ``nni-rspnet
report``, then stop it and check that no manager or trial process is left. NNI's home folder (nnictl's
registry of experiments) is a temporary one, and the manager listens on 127.0.0.1 at a free port.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from nnictl_helpers import running
from nni_rspnet.nnictl import experiment as nnictl
from nni_rspnet.space.arch import build_network, load_arch
from nni_rspnet.nnictl.hpo import write_search_space
from nni_rspnet.nnictl.report import make_report
from nni_rspnet.space.model import SpaceConfig

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("NNI_RSPNET_ARTIFACTS", ROOT / ".artifacts"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]

# A tiny space and a few seconds of training per trial: the experiment is about the plumbing.
SMALL_SPACE = {"resolutions": [4, 8], "channels": [8, 16], "layers": 2, "cell_nodes": 2, "stem_channels": 8,
               "head_channels": 8, "ops": ["skip_connect", "conv_3x3", "sep_conv_3x3"]}
TRIAL_SETS = [f"space.{k}={json.dumps(v).replace(' ', '')}" for k, v in SMALL_SPACE.items()] + [
    "data.num_train=16", "data.num_val=8", "data.image_size=[32,64]", "data.crop_size=[32,64]",
    "data.batch_size=8", "data.val_batch_size=8", "train.epochs=2"]




def nni_env(home: Path) -> dict:
    """The environment for nnictl and its trials: a private NNI home, the shared matplotlib cache,
    one torch thread."""
    env = dict(os.environ)
    env["MPLCONFIGDIR"] = env.get("MPLCONFIGDIR") or str(Path("~/.cache/matplotlib").expanduser())
    env["HOME"] = str(home)
    env["OMP_NUM_THREADS"] = "1"  # tiny nets on a shared box: one thread per trial is many times faster
    home.mkdir(parents=True, exist_ok=True)
    return env


def small_space_config() -> SpaceConfig:
    return SpaceConfig.from_yaml(ROOT / "search_spaces" / "tiny.yaml", [s for s in TRIAL_SETS if s.startswith("space.")])


def test_prepare_config_resolves_paths_and_overrides(tmp_path):
    import yaml

    from nni_rspnet.errors import ConfigError

    data = nnictl.prepare_config(ROOT / "experiment_configs" / "arch_hpo.yml", tmp_path / "copy.yml",
                                 working_dir=tmp_path / "work", python="/opt/py/bin/python",
                                 trial_args=["--set", "space.ops=[a, b]"],
                                 overrides={"maxTrialNumber": 2, "assessor": None})
    assert yaml.safe_load((tmp_path / "copy.yml").read_text()) == data
    assert data["trialCodeDirectory"] == str(ROOT / "experiment_configs")
    assert data["searchSpaceFile"] == str(ROOT / "search_spaces" / "tiny_arch.json")
    assert data["experimentWorkingDirectory"] == str(tmp_path / "work")
    assert data["trialCommand"].startswith("/opt/py/bin/python -m nni_rspnet.nnictl.trial --stage arch")
    assert data["trialCommand"].endswith(" --set 'space.ops=[a, b]'")  # quoted for the trial's shell
    assert data["maxTrialNumber"] == 2 and "assessor" not in data
    (tmp_path / "bad.yml").write_text("trialCommand: [unclosed")
    with pytest.raises(ConfigError, match="bad.yml: not valid YAML"):
        nnictl.prepare_config(tmp_path / "bad.yml", tmp_path / "x.yml")
    with pytest.raises(ConfigError, match="not found"):
        nnictl.prepare_config(tmp_path / "missing.yml", tmp_path / "x.yml")


def test_parse_metric_undoes_nni_double_encoding():
    record = {"data": json.dumps(json.dumps({"default": 0.5, "params": 3}))}
    assert nnictl.parse_metric(record) == {"default": 0.5, "params": 3}
    assert nnictl.parse_metric({"data": json.dumps("0.25")}) == 0.25


def test_node_preload_pins_listen_to_loopback(tmp_path, monkeypatch):
    """The NODE_OPTIONS preload makes a host-less listen() bind 127.0.0.1 (NNI's manager does that)."""
    import nni_node

    node = Path(nni_node.__path__[0]) / "node"
    script = ("const s = require('http').createServer(() => {}); s.listen(0, () => { "
              "console.log(s.address().address); s.close(); });")
    monkeypatch.chdir(tmp_path)  # a relative folder works too (node would read a relative --require as a module name)
    env = {**os.environ, "NODE_OPTIONS": nnictl.localhost_node_options(".")}
    assert str(tmp_path / "nni_localhost_only.js") in env["NODE_OPTIONS"]
    done = subprocess.run([str(node), "-e", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "127.0.0.1", done.stderr
    bare = subprocess.run([str(node), "-e", script], capture_output=True, text=True, timeout=60)
    assert bare.stdout.strip() != "127.0.0.1"  # without it node binds every interface


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The arch-HPO experiment, run to the end; stopped (and checked) when the module is done."""
    tmp = tmp_path_factory.mktemp("nnictl")
    space_json = tmp / "small_arch.json"
    write_search_space(small_space_config(), space_json)
    config = tmp / "arch_hpo.yml"
    args = [a for s in TRIAL_SETS for a in ("--set", s)]
    nnictl.prepare_config(ROOT / "experiment_configs" / "arch_hpo.yml", config, working_dir=tmp / "work",
                          python=sys.executable, trial_args=args,
                          overrides={"maxTrialNumber": 2, "trialConcurrency": 1, "maxExperimentDuration": "10m",
                                     "searchSpaceFile": str(space_json),
                                     "assessor": None})  # the planted test below checks the assessor
    exp = nnictl.launch(config, nnictl.free_port(), tmp / "work", env=nni_env(tmp / "home"))
    try:
        exp.rest.wait_finished(timeout=300, interval=2)
        yield exp
    finally:
        nnictl.stop(exp)


@pytest.mark.slow
def test_manager_listens_on_loopback_only(experiment):
    import psutil

    listening = {c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == experiment.port}
    assert listening == {"127.0.0.1"}


@pytest.mark.slow
def test_trials_succeeded_with_dict_metrics(experiment):
    rest = experiment.rest
    assert rest.status() == "DONE"
    trials = rest.trials()
    assert len(trials) == 2
    for trial in trials:
        assert trial["status"] == "SUCCEEDED", trial
        final = nnictl.parse_metric(trial["finalMetricData"][0])
        assert isinstance(final, dict) and set(final) >= {"default", "params", "macs", "latency_ms"}
        assert 0.0 <= final["default"] <= 1.0 and final["params"] > 0 and final["macs"] > 0
    periodical = [m for m in rest.metrics() if m["type"] == "PERIODICAL"]
    by_trial = {t["trialJobId"]: [nnictl.parse_metric(m) for m in periodical if m["trialJobId"] == t["trialJobId"]]
                for t in trials}
    for values in by_trial.values():  # one intermediate result per retraining epoch
        assert [v["phase"] for v in values] == ["retrain", "retrain"]
        assert all(0.0 <= v["default"] <= 1.0 for v in values)


@pytest.mark.slow
def test_each_trial_arch_rebuilds(experiment):
    cfg = small_space_config()
    for trial in experiment.rest.trials():
        folder = experiment.folder / "trials" / trial["trialJobId"]
        sample = json.loads(trial["hyperParameters"][0])["parameters"]
        arch = load_arch(folder / "arch.json", cfg)
        assert arch == {k: sample[k] for k in arch}  # the tuner's sample is the architecture
        net = build_network(cfg, arch)
        assert net(torch.randn(1, 3, 32, 64)).shape == (1, cfg.num_classes, 32, 64)
        scripted = torch.jit.load(str(folder / "model_scripted.pt"))
        assert scripted(torch.randn(1, 3, 32, 64)).shape == (1, cfg.num_classes, 32, 64)
        assert (folder / "arch.png").is_file() and (folder / "config.json").is_file()


@contextlib.contextmanager
def chrome():
    """Headless Chromium through Debian's chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def open_trials_table(driver, experiment, finals) -> None:
    """The web UI's trial table, once every trial shows its final metric."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{experiment.url}/detail")
    WebDriverWait(driver, 60).until(lambda d: all(t in body_text(d) for t in finals))
    # The table fills row by row; give the metric column its last refresh.
    WebDriverWait(driver, 30).until(lambda d: body_text(d).count("(FINAL)") >= len(finals))


needs_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian's chromium and "
                                   "chromium-driver (scripts/install_browser.sh)")


@pytest.mark.slow
@needs_browser
def test_web_ui_lists_trials_and_metrics(experiment):
    trials = experiment.rest.trials()
    finals = {t["trialJobId"]: nnictl.parse_metric(t["finalMetricData"][0])["default"] for t in trials}
    with chrome() as driver:
        open_trials_table(driver, experiment, finals)
        text = body_text(driver)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "webui_trials.png"))
    assert "Trial jobs" in text
    for trial_id, miou in finals.items():
        # Each row reads "<id> <duration> SUCCEEDED <metric, rounded> (FINAL)".
        row = text[text.index(trial_id):][:200]
        shown = re.search(r"SUCCEEDED\s+([-+\d.e]+) \(FINAL\)", row)
        assert shown is not None, row
        assert float(shown.group(1)) == pytest.approx(miou, abs=1e-6)
    assert (ARTIFACTS / "webui_trials.png").stat().st_size > 10000


@pytest.mark.slow
@needs_browser
def test_web_ui_trial_tensorboard_and_architecture(experiment):
    """A user's path through the web UI: the metric columns params/MACs/latency, a trial's detail panel and
    its log (the architecture summary), then the TensorBoard button (curves and the architecture's
    picture), each step on a screenshot in SHOTS."""
    import psutil
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    shots = ARTIFACTS / "webui"
    shots.mkdir(parents=True, exist_ok=True)
    print(f"web-UI screenshots: {shots}")
    trials = experiment.rest.trials()
    finals = {t["trialJobId"]: nnictl.parse_metric(t["finalMetricData"][0]) for t in trials}
    trial_id = sorted(trials, key=lambda t: t["sequenceId"])[0]["trialJobId"]
    final = finals[trial_id]

    def click_text(text: str, tag: str = "*") -> None:
        matches = [e for e in driver.find_elements(By.XPATH, f"//{tag}[normalize-space(text())='{text}']")
                   if e.is_displayed()]
        assert matches, f"no visible {tag} reading {text!r}"
        matches[0].click()

    def row_of(trial: str):
        return driver.find_element(By.XPATH, f"//div[@role='row'][.//div[normalize-space(text())='{trial}']]")

    def visible(css: str):
        return WebDriverWait(driver, 20).until(
            lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), False))

    def only_other_window():
        WebDriverWait(driver, 10).until(lambda d: len(d.window_handles) == 2)
        driver.switch_to.window([w for w in driver.window_handles if w != main_window][0])

    with chrome() as driver:
        open_trials_table(driver, experiment, finals)
        main_window = driver.current_window_handle

        # The architecture's costs as columns of the table (the final metric dict's other keys).
        click_text("Add/Remove columns", "span")
        for column in ("params (metric)", "macs (metric)", "latency_ms (metric)"):
            click_text(column, "span")
        click_text("Save", "span")
        WebDriverWait(driver, 10).until(lambda d: str(final["params"]) in body_text(d))

        # The trial's detail panel: its Log tab, then its log, which ends with the architecture.
        row = row_of(trial_id)
        row.find_element(By.CSS_SELECTOR, "i[data-icon-name='ChevronRight']").click()
        visible("button[role='tab'][name='Log']").click()
        WebDriverWait(driver, 10).until(lambda d: "View trial log" in body_text(d))
        assert f"/trials/{trial_id}" in body_text(driver)  # the trial folder, where arch.png is
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", row)
        assert driver.save_screenshot(str(shots / "1_trial_detail_panel.png"))
        click_text("View trial log", "span")
        only_other_window()
        WebDriverWait(driver, 20).until(lambda d: "found architecture" in body_text(d))
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        log = body_text(driver)
        assert driver.save_screenshot(str(shots / "2_trial_log_architecture.png"))
        driver.close()
        driver.switch_to.window(main_window)
        assert f"| parameters | {final['params']:,} |" in log
        assert f"| MACs | {final['macs'] / 1e6:.2f} M" in log and f"| latency | {final['latency_ms']:.2f} ms" in log
        assert f"{experiment.id}/trials/{trial_id}/arch.png" in log

        # The TensorBoard button: select the trial, start TensorBoard, open it.
        row_of(trial_id).find_element(By.CSS_SELECTOR, ".detail-check").click()
        click_text("TensorBoard", "span")
        WebDriverWait(driver, 60).until(lambda d: "TensorBoard id" in body_text(d))
        click_text("Ok", "span")
        only_other_window()
        board_url = driver.current_url
        port = int(re.search(r":(\d+)", board_url.split("//", 1)[1]).group(1))
        for _ in range(30):  # TensorBoard takes a few seconds to start: reload until it answers
            if "TensorBoard" in driver.title:
                break
            time.sleep(2)
            driver.get(board_url)
        WebDriverWait(driver, 60).until(lambda d: "val_miou" in body_text(d) and f"{trial_id}/retrain" in body_text(d))
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close side pane']"):
            if close.is_displayed():
                close.click()
        tags = visible("input[placeholder='Filter tags (regex)']")
        tags.send_keys("val_", Keys.ESCAPE)  # Escape: close the tag suggestions over the charts
        time.sleep(3)  # the charts draw after their cards appear
        assert driver.save_screenshot(str(shots / "3_tensorboard_curves.png"))
        tags.send_keys(Keys.CONTROL, "a")
        tags.send_keys("architecture", Keys.ESCAPE)
        visible("img")
        time.sleep(2)
        assert driver.save_screenshot(str(shots / "4_tensorboard_architecture_picture.png"))
        driver.get(f"http://127.0.0.1:{port}/#text")
        WebDriverWait(driver, 60).until(lambda d: "found architecture" in body_text(d))
        board_text = body_text(driver)
        assert driver.save_screenshot(str(shots / "5_tensorboard_architecture_table.png"))

    assert f"{trial_id}" in board_text and f"{final['params']:,}" in board_text
    listening = {c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert listening == {"127.0.0.1"}  # the web UI's TensorBoard is not exposed either
    for png in shots.glob("*.png"):
        assert png.stat().st_size > 10000, png


@pytest.mark.slow
def test_report_on_the_experiment(experiment, tmp_path, capsys):
    from nni_rspnet.cli import main as cli_main

    env_home = Path(experiment.env["HOME"]) / "nni-experiments"
    rep = make_report(experiment.folder, tmp_path)
    assert len(rep.trials) == 2 and rep.best is not None and rep.cost == "latency_ms"
    assert rep.best.miou == max(t.miou for t in rep.trials)
    assert load_arch(tmp_path / "best_arch.json", small_space_config())
    assert (tmp_path / "pareto.png").stat().st_size > 5000
    assert cli_main(["report", str(experiment.folder), "--out", str(tmp_path / "cli")]) == 0
    assert f"best trial {rep.best.id}" in capsys.readouterr().out
    assert (env_home / ".experiment").is_file()  # nnictl's registry went to the private home


@pytest.mark.slow
def test_stop_leaves_nothing_running(experiment):
    assert nnictl.leftover_processes(experiment.id), "the manager should still be up before stop"
    assert nnictl.stop(experiment) == []
    assert not experiment.rest.alive()
    pgrep = subprocess.run(["pgrep", "-f", f"main.js.*{experiment.id}"], capture_output=True, text=True)
    assert pgrep.returncode == 1, pgrep.stdout


PLANTED_TRIAL = """
import time, nni
quality = nni.get_next_parameter()["quality"]
curve = {"good": [0.5, 0.6, 0.7, 0.8], "weak": [0.05, 0.06, 0.07, 0.08, 0.09, 0.10]}[quality]
for value in curve:
    nni.report_intermediate_result({"default": value})
    time.sleep(1.5)
nni.report_final_result({"default": curve[-1], "params": 1})
"""


@pytest.mark.slow
def test_medianstop_stops_a_weak_trial(tmp_path):
    """The assessor of our experiment configs, on planted curves: a weak trial after a good one is stopped."""
    import yaml

    (tmp_path / "planted.py").write_text(PLANTED_TRIAL)
    (tmp_path / "space.json").write_text(json.dumps({"quality": {"_type": "choice", "_value": ["good", "weak"]}}))
    assessor = yaml.safe_load((ROOT / "experiment_configs" / "arch_hpo.yml").read_text())["assessor"]
    assert assessor["name"] == "Medianstop"
    config = {"experimentName": "planted-medianstop", "searchSpaceFile": "space.json", "trialCommand": "python3 planted.py",
              "trialCodeDirectory": ".", "trialConcurrency": 1, "maxTrialNumber": 2, "maxExperimentDuration": "5m",
              "tuner": {"name": "GridSearch"}, "assessor": assessor,
              "trainingService": {"platform": "local", "useActiveGpu": False}}
    (tmp_path / "planted.yml").write_text(yaml.safe_dump(config))
    nnictl.prepare_config(tmp_path / "planted.yml", tmp_path / "run.yml", working_dir=tmp_path / "work",
                          python=sys.executable)
    with running(tmp_path / "run.yml", nnictl.free_port(), tmp_path / "work",
                        env=nni_env(tmp_path / "home")) as exp:
        exp.rest.wait_finished(timeout=120, interval=1)
        trials = sorted(exp.rest.trials(), key=lambda t: t["sequenceId"])
        params = [json.loads(t["hyperParameters"][0])["parameters"]["quality"] for t in trials]
        assert params == ["good", "weak"]
        assert [t["status"] for t in trials] == ["SUCCEEDED", "EARLY_STOPPED"]
        weak_steps = [m for m in exp.rest.metrics() if m["trialJobId"] == trials[1]["trialJobId"]]
        assert len(weak_steps) < 6  # stopped before its curve ended
        exp_id = exp.id
    assert nnictl.leftover_processes(exp_id) == []
