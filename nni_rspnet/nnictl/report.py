"""``nni-rspnet report``: what an nnictl experiment found, read from its folder.

An NNI experiment folder (``~/nni-experiments/<id>`` or ``<experimentWorkingDirectory>/<id>``) holds
``db/nni.sqlite`` (trial events and metrics, as the manager stored them) and ``trials/<trial>/``, each
with the ``.nni/metrics`` the trial wrote and, for our trials, ``arch.json`` and ``config.json``. The
report is a table of trials (mIoU, parameters, MACs, latency), the accuracy-cost Pareto front as a PNG
and the best architecture. It reads the database read-only, so it also works while the experiment runs.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to choose

from ..errors import ArchError, ConfigError
from ..fileio import atomic_write_text, read_json, save_figure, write_json
from ..space.arch import describe

NNI_HOME = Path("~/nni-experiments").expanduser()


@dataclass
class TrialRecord:
    """One trial of an experiment.

    Attributes:
        id: NNI's trial job id.
        sequence: the trial's sequence number (submission order).
        status: last status NNI recorded (``SUCCEEDED``, ``EARLY_STOPPED``, ...), ``UNKNOWN`` without db.
        parameters: what the tuner sent.
        final: the final metric as a dict (a bare number becomes ``{"default": number}``), or None.
        intermediate: the ``default`` of every intermediate result, in order.
        folder: the trial's folder (its ``NNI_OUTPUT_DIR``).
    """

    id: str
    sequence: int = 0
    status: str = "UNKNOWN"
    parameters: Dict[str, Any] = field(default_factory=dict)
    final: Optional[Dict[str, Any]] = None
    intermediate: List[float] = field(default_factory=list)
    folder: Optional[Path] = None

    def metric(self, key: str) -> Optional[float]:
        """A numeric entry of the final metric (``default``, ``params``, ``macs``, ``latency_ms``), or None."""
        value = (self.final or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def miou(self) -> Optional[float]:
        return self.metric("default")

    def arch(self) -> Optional[Dict[str, Any]]:
        """The trial's architecture: its ``arch.json``, else the labels the tuner sent, else the
        ``mutation`` of a Retiarii multi-trial experiment."""
        if self.folder is not None and (self.folder / "arch.json").is_file():
            return read_json(self.folder / "arch.json", "architecture file", ArchError)
        labels = {k: v for k, v in self.parameters.items() if "/" in k}
        if not labels and isinstance(self.parameters.get("mutation"), dict):
            labels = dict(self.parameters["mutation"])
        return labels or None

    def space_config(self) -> Optional[Dict[str, Any]]:
        """The ``space`` section the trial ran with (its ``config.json``, or a Retiarii trial's
        ``init_parameters``), or None."""
        if self.folder is not None and (self.folder / "config.json").is_file():
            return read_json(self.folder / "config.json", "trial config").get("space")
        init = self.parameters.get("init_parameters")
        config = init.get("config") if isinstance(init, dict) else None
        return config if isinstance(config, dict) else None


def decode_metric(raw: Any) -> Any:
    """NNI stores a metric as JSON of a JSON string (``'"{\\"default\\": 0.5}"'``); undo both levels."""
    value = json.loads(raw) if isinstance(raw, str) else raw
    while isinstance(value, str):
        value = json.loads(value)
    return value


def _as_dict(value: Any) -> Dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {"default": value}


def resolve_experiment(ref: Union[str, os.PathLike], home: Path = NNI_HOME) -> Path:
    """The folder of an experiment given as a folder or an experiment id.

    An id is looked up in nnictl's registry (``~/nni-experiments/.experiment``, which records each
    experiment's working directory), then as ``~/nni-experiments/<id>``.

    Raises:
        ConfigError: naming ``ref`` when no experiment folder matches.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "db").is_dir() or (path / "trials").is_dir():
            return path
        raise ConfigError(f"{path}: not an NNI experiment folder (no db/ or trials/ inside)")
    registry = home / ".experiment"
    if registry.is_file():
        try:
            known = read_json(registry, "nnictl registry")
        except ConfigError:  # a registry nnictl is rewriting, or a foreign file: look in the folder below
            known = {}
        log_dir = (known.get(str(ref)) or {}).get("logDir")
        if log_dir and (Path(log_dir) / str(ref)).is_dir():
            return Path(log_dir) / str(ref)
    if (home / str(ref)).is_dir():
        return home / str(ref)
    raise ConfigError(f"{ref}: no such experiment folder, and no experiment with this id in {registry}")


def _read_db(db: Path) -> Tuple[Dict[str, TrialRecord], bool]:
    records: Dict[str, TrialRecord] = {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # read-only: the manager may still be writing
    try:
        events = conn.execute("SELECT trialJobId, event, data, sequenceId FROM TrialJobEvent ORDER BY timestamp")
        for trial_id, event, data, seq in events:
            rec = records.setdefault(trial_id, TrialRecord(trial_id))
            rec.sequence = int(seq) if seq is not None else rec.sequence
            if event in ("ADD_CUSTOMIZED", "ADD_HYPERPARAMETER"):
                continue
            rec.status = event
            if event == "WAITING" and data:
                rec.parameters = json.loads(data).get("parameters", {})
        metrics = conn.execute("SELECT trialJobId, type, data FROM MetricData ORDER BY timestamp, sequence")
        for trial_id, kind, data in metrics:
            rec = records.setdefault(trial_id, TrialRecord(trial_id))
            value = _as_dict(decode_metric(data))
            if kind == "FINAL":
                rec.final = rec.final or value  # NNI keeps the first final result
            else:
                rec.intermediate.append(float(value.get("default", math.nan)))
    except sqlite3.DatabaseError:
        return {}, False
    finally:
        conn.close()
    return records, True


def _read_metrics_file(path: Path) -> List[Dict[str, Any]]:
    """Parses a trial's ``.nni/metrics``: records ``ME`` + 6-digit length + JSON, back to back."""
    data = path.read_bytes()
    out, i = [], 0
    while i + 8 <= len(data) and data[i:i + 2] == b"ME":
        n = int(data[i + 2:i + 8])
        out.append(json.loads(data[i + 8:i + 8 + n].decode("utf-8")))
        i += 8 + n
    return out


def load_trials(folder: Union[str, os.PathLike]) -> List[TrialRecord]:
    """All trials of the experiment in ``folder``, in submission order.

    The manager's database gives statuses, parameters and metrics; without a readable database each
    trial folder's ``.nni/metrics`` and ``parameter.cfg`` are read instead (statuses are then unknown).
    """
    folder = Path(folder)
    db = folder / "db" / "nni.sqlite"
    records, from_db = _read_db(db) if db.is_file() else ({}, False)
    trials_dir = folder / "trials"
    for trial_dir in sorted(trials_dir.iterdir()) if trials_dir.is_dir() else []:
        if not trial_dir.is_dir():
            continue
        rec = records.setdefault(trial_dir.name, TrialRecord(trial_dir.name))
        rec.folder = trial_dir
        if from_db:
            continue
        param_file = trial_dir / "parameter.cfg"
        if param_file.is_file():
            for line in param_file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec.parameters = json.loads(line).get("parameters", {})
        metrics_file = trial_dir / ".nni" / "metrics"
        for m in _read_metrics_file(metrics_file) if metrics_file.is_file() else []:
            value = _as_dict(decode_metric(m["value"]))
            if m.get("type") == "FINAL":
                rec.final = rec.final or value
            else:
                rec.intermediate.append(float(value.get("default", math.nan)))
        if rec.final is not None:
            rec.status = "SUCCEEDED"
    return sorted(records.values(), key=lambda r: (r.sequence, r.id))


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point dominates, for *low* cost (x) and *high* accuracy (y).

    A point dominates another when it is no worse in both and better in one. Ties keep both points.
    The indices come back sorted by cost.
    """
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(xj <= xi and yj >= yi and (xj < xi or yj > yi) for j, (xj, yj) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def cost_key(records: Sequence[TrialRecord]) -> str:
    """The cost axis of the Pareto front: latency when every scored trial has it, else params, else MACs."""
    scored = [r for r in records if r.miou is not None]
    for key in ("latency_ms", "params", "macs"):
        if scored and all(r.metric(key) is not None for r in scored):
            return key
    return "latency_ms"


def best_trial(records: Sequence[TrialRecord], cost: str = "latency_ms") -> Optional[TrialRecord]:
    """The succeeded trial with the highest final mIoU; on a tie the cheaper one (by ``cost``), or None."""
    done = [r for r in records if r.miou is not None and r.status in ("SUCCEEDED", "UNKNOWN")]
    if not done:
        return None
    return max(done, key=lambda r: (r.miou, -(r.metric(cost) if r.metric(cost) is not None else math.inf)))


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: Sequence[TrialRecord], front: Sequence[str] = ()) -> str:
    """A Markdown table of the trials; a ``*`` marks the trials on the Pareto front."""
    lines = ["| trial | status | mIoU | params | MACs (M) | latency (ms) | epochs reported | Pareto |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in records:
        macs = r.metric("macs")
        lines.append(f"| {r.id} | {r.status} | {_fmt(r.miou, '.4f')} | {_fmt(r.metric('params'), ',.0f')} | "
                     f"{_fmt(None if macs is None else macs / 1e6, '.2f')} | {_fmt(r.metric('latency_ms'), '.2f')} | "
                     f"{len(r.intermediate)} | {'*' if r.id in front else ''} |")
    return "\n".join(lines)


def plot_pareto(records: Sequence[TrialRecord], front: Sequence[str], key: str, path: Union[str, os.PathLike],
                title: str = "") -> None:
    """Scatter of mIoU against cost for every scored trial, the Pareto front drawn as a step line."""
    scored = [r for r in records if r.miou is not None and r.metric(key) is not None]
    on_front = [r for r in scored if r.id in front]
    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    ax = fig.subplots()
    ax.scatter([r.metric(key) for r in scored], [r.miou for r in scored], c="tab:gray", label="trials")
    ax.step([r.metric(key) for r in on_front], [r.miou for r in on_front], where="post", c="tab:red", lw=1.5)
    ax.scatter([r.metric(key) for r in on_front], [r.miou for r in on_front], c="tab:red", label="Pareto front",
               zorder=3)
    for r in scored:
        ax.annotate(r.id, (r.metric(key), r.miou), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel({"latency_ms": "latency (ms)", "params": "parameters", "macs": "MACs"}[key])
    ax.set_ylabel("validation mIoU")
    ax.set_title(title or "accuracy-cost trade-off")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


@dataclass
class Report:
    """What ``make_report`` found and wrote."""

    folder: Path
    trials: List[TrialRecord]
    front: List[str]
    cost: str
    best: Optional[TrialRecord]
    best_arch: Optional[Dict[str, Any]]
    files: Dict[str, Path]

    def text(self) -> str:
        """The report as printed by ``nni-rspnet report``."""
        lines = [f"experiment {self.folder} : {len(self.trials)} trials", "", format_table(self.trials, self.front),
                 "", f"Pareto front (mIoU vs {self.cost}): {', '.join(self.front) or '-'}"]
        if self.best is not None:
            lines += ["", f"best trial {self.best.id}: mIoU {self.best.miou:.4f}"]
            if self.best_arch:
                lines.append(describe(self.best_arch, self.best.space_config()))
        else:
            lines += ["", "no trial has reported a final mIoU yet"]
        lines += [""] + [f"wrote {name}: {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def make_report(ref: Union[str, os.PathLike], out_dir: Optional[Union[str, os.PathLike]] = None) -> Report:
    """Reads an experiment and writes ``trials.md``, ``trials.csv``, ``pareto.png`` and ``best_arch.json``.

    Args:
        ref: experiment folder or experiment id.
        out_dir: where to write; defaults to ``<experiment folder>/report``.
    """
    folder = resolve_experiment(ref)
    trials = load_trials(folder)
    key = cost_key(trials)
    scored = [r for r in trials if r.miou is not None and r.metric(key) is not None]
    front = [scored[i].id for i in pareto_front([(r.metric(key), r.miou) for r in scored])]
    best = best_trial(trials, key)
    best_arch = best.arch() if best is not None else None
    out = Path(out_dir) if out_dir is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    atomic_write_text(out / "trials.md", format_table(trials, front) + "\n")
    files["table"] = out / "trials.md"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "status", "miou", "params", "macs", "latency_ms", "pareto"])
    for r in trials:
        writer.writerow([r.id, r.status, r.miou, r.metric("params"), r.metric("macs"), r.metric("latency_ms"),
                         int(r.id in front)])
    atomic_write_text(out / "trials.csv", buf.getvalue())
    files["csv"] = out / "trials.csv"
    if scored:
        plot_pareto(trials, front, key, out / "pareto.png", title=f"experiment {folder.name}")
        files["pareto"] = out / "pareto.png"
    if best_arch:
        write_json(out / "best_arch.json", dict(sorted(best_arch.items())))
        files["best_arch"] = out / "best_arch.json"
    return Report(folder, trials, front, key, best, best_arch, files)
