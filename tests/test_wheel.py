"""The package as a user installs it: a wheel, a fresh virtualenv, an empty folder.

Builds the wheel from a copy of the sources, installs it with the constraints file into a new
virtualenv (pip's cache and the local torch wheel make that a minute or two, never a CUDA torch),
then, in an empty folder, lists the shipped configs, runs ``nni-rspnet demo --fast`` and starts a
shipped experiment (found by name) through nnictl until its trial succeeds, and stops it. Every
command and the end of its output is printed (``pytest -s`` shows them).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "nni_rspnet", "search_spaces", "experiment_configs")

# Starts a shipped experiment by name with a small trial, waits for it, stops it (run by the new venv).
EXPERIMENT = """
import json, sys
from nni_rspnet.nnictl import experiment as nnictl
sets = ["data.num_train=16", "data.num_val=8", "data.image_size=[32,64]", "data.crop_size=[32,64]",
        "data.batch_size=8", "data.val_batch_size=8", "train.epochs=1"]
config = nnictl.prepare_config("arch_hpo", "experiment.yml", working_dir="experiments", python=sys.executable,
                               trial_args=[a for s in sets for a in ("--set", s)],
                               overrides={"maxTrialNumber": 1, "maxExperimentDuration": "10m", "assessor": None})
print("trial command:", config["trialCommand"])
print("search space:", config["searchSpaceFile"])
exp = nnictl.launch("experiment.yml", nnictl.free_port(), "experiments")
print("experiment", exp.id, "at", exp.url)
try:
    status = exp.rest.wait_finished(timeout=400)
    trials = exp.rest.trials()
    print("status", status, "trials", [(t["trialJobId"], t["status"]) for t in trials])
    finals = [nnictl.parse_metric(t["finalMetricData"][0]) for t in trials if t.get("finalMetricData")]
    print("final metrics", json.dumps(finals))
finally:
    left = nnictl.stop(exp)
    print("stopped; processes left:", left)
print(json.dumps({"status": status, "trials": [t["status"] for t in trials], "finals": finals, "left": left,
                  "folder": str(exp.folder)}))
"""


def run(argv, cwd: Path, env: dict, timeout: float) -> str:
    """Runs one command, prints it and the end of its output, and returns the output."""
    shown = " ".join(str(a) for a in argv)
    print(f"\n$ (cd {cwd} && {shown})", flush=True)
    started = time.monotonic()
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    tail = "\n".join(output.rstrip().splitlines()[-25:])
    print(f"{tail}\n[exit {done.returncode}, {time.monotonic() - started:.0f} s]", flush=True)
    assert done.returncode == 0, f"{shown} failed:\n{output[-4000:]}"
    return done.stdout


@pytest.mark.slow
@pytest.mark.heavy  # about 3 minutes: `make test-all`, not CI
def test_wheel_in_a_fresh_venv_works_from_an_empty_folder(tmp_path):
    src, dist, venv, empty = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PIP_PROGRESS_BAR="off", PIP_NO_INPUT="1", HOME=str(tmp_path / "home"),
               MPLCONFIGDIR=os.environ.get("MPLCONFIGDIR") or str(Path("~/.cache/matplotlib").expanduser()),
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR") or str(Path("~/.cache/pip").expanduser()))

    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", dist, src],
        tmp_path, env, 300)
    (wheel,) = dist.glob("nni_rspnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("nni_rspnet/search_spaces/tiny.yaml", "nni_rspnet/search_spaces/macro_hparams.json",
                    "nni_rspnet/experiment_configs/macro.yml", "nni_rspnet/seg/train.py"):
        assert shipped in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    run([sys.executable, "-m", "venv", venv], tmp_path, env, 300)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])  # as `source venv/bin/activate`
    env["VIRTUAL_ENV"] = str(venv)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-compile", "-c", ROOT / "constraints.txt",
         wheel], tmp_path, env, 900)
    torch_version = run([venv / "bin" / "python", "-c", "import torch; print(torch.__version__)"], empty, env, 120)
    assert "+cpu" in torch_version  # the constraints kept CUDA torch out

    assert "tiny" in run(["nni-rspnet", "configs"], empty, env, 120)
    run(["nni-rspnet", "demo", "--fast", "--out", "demo"], empty, env, 900)
    summary = json.loads((empty / "demo" / "summary.json").read_text())
    assert 0.0 <= summary["miou"] <= 1.0 and (empty / summary["files"]["ONNX"]).is_file()

    (empty / "experiment.py").write_text(EXPERIMENT)
    report = json.loads(run([venv / "bin" / "python", "experiment.py"], empty, env, 600).strip().splitlines()[-1])
    assert report["trials"] == ["SUCCEEDED"] and report["left"] == []
    assert 0.0 <= report["finals"][0]["default"] <= 1.0
    trial_dir = next((Path(report["folder"]) / "trials").iterdir())
    assert (trial_dir / "arch.json").is_file() and (trial_dir / "tensorboard" / "retrain").is_dir()
    assert sorted(p.name for p in empty.iterdir()) == ["demo", "experiment.py", "experiment.yml", "experiments"]
