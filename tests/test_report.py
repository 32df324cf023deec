"""``nni-rspnet report``: trials table, Pareto front and best architecture of an experiment folder."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.cli import main as cli_main
from nni_rspnet.errors import ConfigError
from nni_rspnet.nnictl.report import load_trials, make_report, pareto_front, resolve_experiment

SMALL = {"name": "small", "num_classes": 4, "stem_channels": 8, "resolutions": [4, 8], "channels": [8, 16],
         "layers": 2, "paths_per_node": 1, "cell_nodes": 2, "head_channels": 8,
         "ops": ["skip_connect", "conv_3x3"], "rsp_depth": 1}

# The schema NNI 2.10.1's manager creates in db/nni.sqlite (copied from a real experiment).
SCHEMA = """
CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
                            sequenceId integer, message text);
CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer,
                         data text);
CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer, endTime integer,
                                logDir text, nextSequenceId integer, revision integer);
"""

# trial id -> (status, final metric or None, intermediate mIoUs)
TRIALS = {
    "AAAAA": ("SUCCEEDED", {"default": 0.40, "params": 900, "macs": 2.0e6, "latency_ms": 3.0}, [0.2, 0.4]),
    "BBBBB": ("SUCCEEDED", {"default": 0.55, "params": 1500, "macs": 4.0e6, "latency_ms": 5.0}, [0.3, 0.55]),
    "CCCCC": ("SUCCEEDED", {"default": 0.35, "params": 2000, "macs": 5.0e6, "latency_ms": 6.0}, [0.3, 0.35]),
    "DDDDD": ("EARLY_STOPPED", None, [0.01, 0.02]),
}


def _nni_metric(value) -> str:
    """NNI stores metric data JSON-encoded twice."""
    return json.dumps(json.dumps(value))


def make_experiment(root: Path, with_db: bool = True) -> Path:
    folder = root / "exp1234"
    for seq, (trial, (status, final, inter)) in enumerate(TRIALS.items()):
        tdir = folder / "trials" / trial
        (tdir / ".nni").mkdir(parents=True)
        arch = random_arch(SMALL, seed=seq)
        (tdir / "arch.json").write_text(json.dumps(arch))
        (tdir / "config.json").write_text(json.dumps({"stage": "arch", "space": SMALL}))
        (tdir / "parameter.cfg").write_text(json.dumps({"parameter_id": seq, "parameters": {"train.lr": 0.1 * seq}}))
        records = [{"type": "PERIODICAL", "value": json.dumps({"default": v})} for v in inter]
        if final is not None:
            records.append({"type": "FINAL", "value": json.dumps(final)})
        blob = b""
        for r in records:
            body = json.dumps({"parameter_id": seq, "trial_job_id": trial, "sequence": 0, **r}).encode()
            blob += b"ME" + b"%06d" % len(body) + body
        (tdir / ".nni" / "metrics").write_bytes(blob)
    if with_db:
        (folder / "db").mkdir()
        conn = sqlite3.connect(folder / "db" / "nni.sqlite")
        conn.executescript(SCHEMA)
        t = 1000
        for seq, (trial, (status, final, inter)) in enumerate(TRIALS.items()):
            params = json.dumps({"parameter_id": seq, "parameter_source": "algorithm",
                                 "parameters": {"train.lr": 0.1 * seq}, "parameter_index": 0})
            conn.execute("INSERT INTO TrialJobEvent VALUES (?,?,?,?,?,?,?)", (t, trial, "WAITING", params, "", seq, None))
            conn.execute("INSERT INTO TrialJobEvent VALUES (?,?,?,?,?,?,?)", (t + 1, trial, "RUNNING", None, "", seq, None))
            for i, v in enumerate(inter):
                conn.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)",
                             (t + 2 + i, trial, str(seq), "PERIODICAL", i, _nni_metric({"default": v, "epoch": i})))
            if final is not None:
                conn.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)",
                             (t + 5, trial, str(seq), "FINAL", 0, _nni_metric(final)))
                # NNI keeps the first final result; a later one must not replace it.
                conn.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)",
                             (t + 6, trial, str(seq), "FINAL", 0, _nni_metric({"default": 0.0})))
            conn.execute("INSERT INTO TrialJobEvent VALUES (?,?,?,?,?,?,?)", (t + 7, trial, status, None, "", seq, None))
            t += 10
        conn.commit()
        conn.close()
    return folder


def test_pareto_front():
    # (cost, accuracy): lower cost and higher accuracy are better.
    pts = [(3.0, 0.40), (5.0, 0.55), (6.0, 0.35), (4.0, 0.40), (3.0, 0.40), (1.0, 0.10)]
    assert pareto_front(pts) == [5, 0, 4, 1]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_load_trials_from_db(tmp_path):
    trials = load_trials(make_experiment(tmp_path))
    assert [t.id for t in trials] == list(TRIALS)
    by_id = {t.id: t for t in trials}
    assert by_id["BBBBB"].status == "SUCCEEDED" and by_id["DDDDD"].status == "EARLY_STOPPED"
    assert by_id["BBBBB"].final["default"] == 0.55  # the first FINAL, as NNI keeps it
    assert by_id["BBBBB"].intermediate == [0.3, 0.55]
    assert by_id["CCCCC"].parameters == {"train.lr": pytest.approx(0.2)}
    assert by_id["DDDDD"].final is None


def test_load_trials_without_db_reads_metrics_files(tmp_path):
    trials = load_trials(make_experiment(tmp_path, with_db=False))
    by_id = {t.id: t for t in trials}
    assert set(by_id) == set(TRIALS)
    assert by_id["AAAAA"].final == TRIALS["AAAAA"][1] and by_id["AAAAA"].status == "SUCCEEDED"
    assert by_id["DDDDD"].intermediate == [0.01, 0.02] and by_id["DDDDD"].final is None


def test_make_report_writes_table_front_and_best_arch(tmp_path):
    folder = make_experiment(tmp_path)
    rep = make_report(folder, tmp_path / "out")
    assert rep.cost == "latency_ms"
    assert rep.front == ["AAAAA", "BBBBB"]  # CCCCC is slower and worse than BBBBB
    assert rep.best.id == "BBBBB"
    best_arch = json.loads((tmp_path / "out" / "best_arch.json").read_text())
    assert best_arch == json.loads((folder / "trials" / "BBBBB" / "arch.json").read_text())
    build_network(SMALL, best_arch)  # rebuilds
    table = (tmp_path / "out" / "trials.md").read_text()
    assert "| BBBBB | SUCCEEDED | 0.5500 | 1,500 | 4.00 | 5.00 | 2 | * |" in table
    assert "| DDDDD | EARLY_STOPPED | - |" in table
    png = (tmp_path / "out" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    text = rep.text()
    assert "best trial BBBBB: mIoU 0.5500" in text and "cell:" in text and "macro:" in text


def test_best_trial_tie_goes_to_the_cheaper(tmp_path):
    from nni_rspnet.nnictl.report import TrialRecord, best_trial

    a = TrialRecord("a", 0, "SUCCEEDED", final={"default": 0.5, "latency_ms": 9.0})
    b = TrialRecord("b", 1, "SUCCEEDED", final={"default": 0.5, "latency_ms": 4.0})
    c = TrialRecord("c", 2, "EARLY_STOPPED", final={"default": 0.9, "latency_ms": 1.0})
    assert best_trial([a, b, c]).id == "b"
    assert best_trial([c]) is None


def test_cost_axis_falls_back_to_params(tmp_path):
    folder = make_experiment(tmp_path)
    conn = sqlite3.connect(folder / "db" / "nni.sqlite")
    conn.execute("UPDATE MetricData SET data = ? WHERE trialJobId = 'AAAAA' AND type = 'FINAL'",
                 (_nni_metric({"default": 0.40, "params": 900}),))
    conn.commit()
    conn.close()
    assert make_report(folder, tmp_path / "o").cost == "params"


def test_resolve_experiment_by_id_and_errors(tmp_path):
    folder = make_experiment(tmp_path / "work")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".experiment").write_text(json.dumps({"exp1234": {"id": "exp1234", "logDir": str(folder.parent)}}))
    assert resolve_experiment("exp1234", home=home) == folder
    assert resolve_experiment(folder) == folder
    with pytest.raises(ConfigError, match="nope"):
        resolve_experiment("nope", home=home)
    with pytest.raises(ConfigError, match="not an NNI experiment folder"):
        resolve_experiment(tmp_path)


def test_cli_report(tmp_path, capsys):
    folder = make_experiment(tmp_path)
    assert cli_main(["report", str(folder), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (mIoU vs latency_ms): AAAAA, BBBBB" in out
    assert (tmp_path / "r" / "pareto.png").is_file()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "no such experiment folder" in capsys.readouterr().err
