"""Experiment control: launch an ``nnictl`` experiment, read it through the REST API, stop it and
leave no process behind.

``prepare_config`` copies an experiment YAML of ``experiment_configs/`` with a few fields replaced
(working directory, interpreter, trial arguments, trial count); ``launch`` runs ``nnictl create``;
``RestClient`` reads trials and metrics from the manager; ``stop`` runs ``nnictl stop`` and then ends
by process id whatever of the experiment survived it. (``nni-rspnet report`` reads an experiment's
folder instead, and works on finished experiments too.)

NNI's manager (a Node process) serves the web UI and the REST API, with no authentication, on every
interface (``app.listen(port)``): plain ``nnictl create`` exposes the experiment's config, trials and
controls to the whole network. ``launch`` and ``view`` preload a tiny script through ``NODE_OPTIONS``
that pins such listens to one host, 127.0.0.1 unless told otherwise (``nni-rspnet experiment create
--host``), so nothing is exposed by default. The TensorBoard the web UI starts for a trial
(``tensorboard --bind_all ...``) is pinned the same way: a ``tensorboard`` command first on the
manager's ``PATH`` replaces ``--bind_all`` with ``--host=<the same host>``.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import yaml

from ..errors import ConfigError, NniError
from ..fileio import atomic_write_text, make_dirs, read_json, read_yaml
from ..resources import resolve
from .report import decode_metric

# Statuses after which an experiment schedules no more work.
FINISHED_STATUSES = ("DONE", "STOPPED", "ERROR", "NO_MORE_TRIAL")
TRIAL_DONE_STATUSES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")

LOCALHOST = "127.0.0.1"
DEFAULT_WORKING_DIR = "~/nni-experiments"  # NNI's own default experimentWorkingDirectory

# Pins a Node server that listens on a port without a host to one host (the loopback interface).
_LOCALHOST_JS = r"""
const HOST = '__HOST__';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (args.length === 1 || typeof args[1] !== 'string') args.splice(1, 0, HOST);
  } else if (first && typeof first === 'object' && first.path === undefined && !first.host) {
    args[0] = Object.assign({}, first, { host: HOST });
  }
  return listen.apply(this, args);
};
"""
_PATH_KEYS = ("trialCodeDirectory", "searchSpaceFile", "experimentWorkingDirectory")

# `tensorboard` as NNI's manager runs it, serving on one host instead of every interface.
_TENSORBOARD_COMMAND = """#!{python}
# NNI's web UI starts TensorBoard with --bind_all (every interface); this one serves on {host} only.
import sys

from tensorboard.main import run_main

sys.argv = [sys.argv[0]] + ["--host={host}" if arg == "--bind_all" else arg for arg in sys.argv[1:]]
sys.exit(run_main())
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_host(host: str) -> str:
    """The address the manager may listen on: a loopback address (the default, 127.0.0.1) or every
    interface (``0.0.0.0`` or ``::``). nnictl itself checks its manager on ``localhost``, so a manager
    bound to another single address would never be found.

    Raises:
        ConfigError: naming the host and what is accepted.
    """
    name = "127.0.0.1" if host == "localhost" else str(host)
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise ConfigError(f"--host {str(host)[:60]!r}: not an IP address; expected 127.0.0.1 (this machine only, "
                          f"the default) or 0.0.0.0 (every interface)") from None
    if not (address.is_loopback or address.is_unspecified):
        raise ConfigError(f"--host {host}: nnictl looks for its manager on localhost, so it must listen on a loopback "
                          f"address (127.0.0.1, the default) or on every interface (0.0.0.0)")
    return name


def localhost_node_options(folder: Union[str, os.PathLike], host: str = LOCALHOST) -> str:
    """Writes the preload script that pins the manager's listens to ``host`` into ``folder``; returns the
    ``NODE_OPTIONS`` value."""
    host = check_host(host)
    name = "nni_localhost_only.js" if host == LOCALHOST else f"nni_listen_{host.replace(':', '_')}.js"
    path = Path(folder).resolve() / name  # node reads a relative --require as a module name
    atomic_write_text(path, _LOCALHOST_JS.replace("__HOST__", host))
    return f"--require {path}"


def localhost_tensorboard(folder: Union[str, os.PathLike], host: str = LOCALHOST) -> str:
    """Writes the ``tensorboard`` command that serves on ``host`` into ``folder/_bin``; returns that folder
    (to put first on the manager's ``PATH``)."""
    path = Path(folder).resolve() / "_bin" / "tensorboard"
    atomic_write_text(path, _TENSORBOARD_COMMAND.format(python=sys.executable, host=host))
    path.chmod(0o755)
    return os.fspath(path.parent)


def working_dir_of(config: Union[str, os.PathLike]) -> Path:
    """The ``experimentWorkingDirectory`` of an nnictl config (relative to the file, as nnictl reads it),
    or NNI's default ``~/nni-experiments``."""
    config = Path(resolve(config, "experiment"))
    data = read_yaml(config, "experiment config", expected="an nnictl experiment config with a 'trialCommand'")
    folder = os.path.expanduser(str(data.get("experimentWorkingDirectory") or DEFAULT_WORKING_DIR))
    return Path(folder if os.path.isabs(folder) else (config.parent / folder)).resolve()


def prepare_config(config: Union[str, os.PathLike], out: Union[str, os.PathLike], *,
                   working_dir: Optional[Union[str, os.PathLike]] = None, python: Optional[str] = None,
                   trial_args: Sequence[str] = (), overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Copies an nnictl experiment YAML to ``out`` with a few fields replaced.

    Relative paths (``trialCodeDirectory``, ``searchSpaceFile``, ``experimentWorkingDirectory``) are
    resolved against the original file's folder, as nnictl does, so the copy may live anywhere.

    Args:
        config: the experiment YAML: a file, or the name of a shipped one (``macro``, ``cell``, ``arch_hpo``).
        out: where to write the copy.
        working_dir: ``experimentWorkingDirectory`` (where NNI keeps the experiment and its trials).
        python: interpreter that replaces a leading ``python``/``python3`` of ``trialCommand``.
        trial_args: appended to ``trialCommand`` (for example ``--set train.epochs=1``).
        overrides: other top-level fields to set (``maxTrialNumber``, ``trialConcurrency``, ...); a
            ``None`` value removes the field (for example ``{"assessor": None}``).

    Returns:
        The written configuration.
    """
    config = Path(resolve(config, "experiment"))
    expected = "an nnictl experiment config with a 'trialCommand'"
    data = read_yaml(config, "experiment config", expected=expected)
    if "trialCommand" not in data:
        raise ConfigError(f"{config}: expected {expected}")
    for key in _PATH_KEYS:
        if isinstance(data.get(key), str) and not os.path.isabs(os.path.expanduser(data[key])):
            data[key] = str((config.parent / data[key]).resolve())
    if working_dir is not None:
        data["experimentWorkingDirectory"] = str(Path(working_dir).resolve())
    command = str(data["trialCommand"])
    if python:
        command = re.sub(r"^python3?(?=\s)", python, command.strip())
    if trial_args:
        command = " ".join([command, *(shlex.quote(a) for a in trial_args)])
    data["trialCommand"] = command
    for key, value in (overrides or {}).items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    atomic_write_text(out, yaml.safe_dump(data, sort_keys=False))
    return data


class RestClient:
    """Reads an experiment through the NNI manager's REST API (``/api/v1/nni/...``) on 127.0.0.1."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.base = f"http://{host}:{port}/api/v1/nni"
        self.timeout = timeout

    def get(self, path: str) -> Any:
        """GET ``path`` (for example ``/trial-jobs``) and decode the JSON reply."""
        with urllib.request.urlopen(self.base + path, timeout=self.timeout) as reply:
            return json.loads(reply.read().decode("utf-8"))

    def alive(self) -> bool:
        try:
            self.get("/check-status")
            return True
        except (OSError, ValueError):
            return False

    def status(self) -> str:
        return self.get("/check-status")["status"]

    def experiment_id(self) -> str:
        return self.get("/experiment")["id"]

    def trials(self) -> List[Dict[str, Any]]:
        return self.get("/trial-jobs")

    def metrics(self) -> List[Dict[str, Any]]:
        return self.get("/metric-data")

    def wait(self, until: Callable[["RestClient"], bool], timeout: float, interval: float = 2.0,
             what: str = "condition") -> None:
        """Polls until ``until(self)`` holds; raises ``NniError`` on timeout or when the experiment errs."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("/check-status")
            if status.get("status") == "ERROR":
                raise NniError(f"experiment at {self.base} is in ERROR: {status.get('errors')}")
            if until(self):
                return
            if time.monotonic() > deadline:
                raise NniError(f"timed out after {timeout:.0f} s waiting for {what}; status {status}, "
                               f"trials {[(t.get('trialJobId'), t.get('status')) for t in self.trials()]}")
            time.sleep(interval)

    def wait_finished(self, timeout: float, interval: float = 2.0) -> str:
        """Waits until the experiment is DONE (or stopped) and no trial runs; returns the status."""
        def finished(client: "RestClient") -> bool:
            trials = client.trials()
            return (client.status() in FINISHED_STATUSES and bool(trials)
                    and all(t["status"] in TRIAL_DONE_STATUSES for t in trials))

        self.wait(finished, timeout, interval, what="the experiment to finish")
        return self.status()


def parse_metric(record: Mapping[str, Any]) -> Any:
    """The value of one ``/metric-data`` record (or ``finalMetricData`` entry); NNI double-encodes it."""
    return decode_metric(record["data"])


@dataclass
class Experiment:
    """A launched experiment: id, port, working folder and the manager process id."""

    id: str
    port: int
    working_dir: Path
    manager_pid: Optional[int] = None
    env: Dict[str, str] = field(default_factory=dict)
    host: str = LOCALHOST

    @property
    def folder(self) -> Path:
        return self.working_dir / self.id

    @property
    def rest(self) -> RestClient:
        return RestClient(self.port)

    @property
    def url(self) -> str:
        host = LOCALHOST if ipaddress.ip_address(self.host).is_unspecified else self.host
        return f"http://{host}:{self.port}"


def _nnictl(args: Sequence[str], env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nni.tools.nnictl.nnictl", *args], env=dict(env),
                          capture_output=True, text=True, timeout=timeout)


def _manager_env(working_dir: Path, host: str, env: Optional[Mapping[str, str]]) -> Dict[str, str]:
    """The environment of nnictl and the manager it starts: the listen pin in ``NODE_OPTIONS``, and on
    ``PATH`` the pinned ``tensorboard`` the web UI's TensorBoard button starts, then this interpreter's
    folder (trials run ``python -m nni_rspnet.nnictl.trial`` through the shell)."""
    full_env = dict(os.environ if env is None else env)
    full_env["PATH"] = os.pathsep.join([localhost_tensorboard(working_dir, host), os.path.dirname(sys.executable),
                                        full_env.get("PATH", "")])
    full_env["NODE_OPTIONS"] = " ".join(filter(None, [full_env.get("NODE_OPTIONS", ""),
                                                       localhost_node_options(working_dir, host)]))
    return full_env


def _start(action: str, args: Sequence[str], port: int, working_dir: Path, host: str,
           env: Optional[Mapping[str, str]], timeout: float, known_id: Optional[str] = None) -> Experiment:
    host = check_host(host)
    working_dir = Path(make_dirs(working_dir, "experiment working folder")).resolve()
    full_env = _manager_env(working_dir, host, env)
    command = f"nnictl {action} {' '.join(args)}"
    try:
        done = _nnictl([action, *args, "--port", str(port)], full_env, timeout)
    except subprocess.TimeoutExpired as err:
        raise NniError(f"{command} did not return within {timeout:.0f} s") from err
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # nnictl colours its output
    found = re.search(r"(?:Experiment ID:|experiment id is)\s*(\w+)", text)
    if done.returncode != 0 or not (found or known_id):
        _kill_managers_on_port(port)
        tail = " ".join((text[-1500:] + " " + done.stderr[-1500:]).split())
        raise NniError(f"{command} failed (exit {done.returncode}): {tail}")
    exp = Experiment(found.group(1) if found else str(known_id), port, working_dir, env=full_env, host=host)
    exp.manager_pid = next(iter(manager_pids(exp.id)), None)
    return exp


def launch(config: Union[str, os.PathLike], port: int, working_dir: Union[str, os.PathLike], *,
           env: Optional[Mapping[str, str]] = None, timeout: float = 120.0, host: str = LOCALHOST) -> Experiment:
    """Runs ``nnictl create --config CONFIG --port PORT`` and returns the running experiment.

    The NNI manager listens on ``host`` only: 127.0.0.1 by default (see the module docstring).
    ``working_dir`` must be the config's ``experimentWorkingDirectory`` (``prepare_config`` sets both;
    ``working_dir_of`` reads it).

    Raises:
        ConfigError: ``host`` is neither a loopback address nor every interface.
        NniError: nnictl failed or the manager did not answer; its output is in the message.
    """
    return _start("create", ["--config", resolve(config, "experiment")], port, Path(working_dir), host, env, timeout)


def view(exp_id: str, port: int, working_dir: Union[str, os.PathLike], *,
         env: Optional[Mapping[str, str]] = None, timeout: float = 120.0, host: str = LOCALHOST) -> Experiment:
    """Runs ``nnictl view EXP_ID`` (a stopped experiment, read only) with the manager on ``host`` only;
    ``working_dir`` is where the listen pin is written (nnictl finds the experiment in its registry)."""
    return _start("view", [exp_id], port, Path(working_dir), host, env, timeout, known_id=exp_id)


def _proc_pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _read_proc(pid: int, what: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return b""


def manager_pids(exp_id: str) -> List[int]:
    """Node NNI manager processes of experiment ``exp_id`` (found by their command line)."""
    pids = []
    for pid in _proc_pids():
        argv = _read_proc(pid, "cmdline").split(b"\0")
        if any(a.endswith(b"main.js") for a in argv) and exp_id.encode() in argv:
            pids.append(pid)
    return pids


def trial_pids(exp_id: str) -> List[int]:
    """Trial processes of experiment ``exp_id`` (their environment holds ``NNI_EXP_ID=<id>``)."""
    marker = f"NNI_EXP_ID={exp_id}".encode()
    return [pid for pid in _proc_pids() if pid != os.getpid() and marker in _read_proc(pid, "environ").split(b"\0")]


def tensorboard_pids(exp_id: str) -> List[int]:
    """TensorBoard processes the web UI started for trials of ``exp_id`` (their log folders name it)."""
    marker = f"/{exp_id}/trials/".encode()
    pids = []
    for pid in _proc_pids():
        cmdline = _read_proc(pid, "cmdline")
        if b"tensorboard" in cmdline and marker in cmdline:
            pids.append(pid)
    return pids


def leftover_processes(exp_id: str) -> List[int]:
    """Every process of the experiment still alive: the manager, the trials and TensorBoards (zombies excluded)."""
    pids = sorted(set(manager_pids(exp_id)) | set(trial_pids(exp_id)) | set(tensorboard_pids(exp_id)))
    return [pid for pid in pids if b") Z " not in _read_proc(pid, "stat")]


def _kill(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _kill_managers_on_port(port: int) -> None:
    for pid in _proc_pids():
        argv = _read_proc(pid, "cmdline").split(b"\0")
        if any(a.endswith(b"main.js") for a in argv) and str(port).encode() in argv:
            _kill([pid], signal.SIGKILL)


def stop(exp: Experiment, timeout: float = 60.0) -> List[int]:
    """``nnictl stop <id>``, then kills by pid whatever of the experiment survived it.

    Returns:
        The processes still alive at the end (empty when all went away).
    """
    with contextlib.suppress(subprocess.TimeoutExpired):
        _nnictl(["stop", exp.id], exp.env or os.environ, timeout)
    deadline = time.monotonic() + 15
    while leftover_processes(exp.id) and time.monotonic() < deadline:
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = leftover_processes(exp.id)
        if not left:
            break
        _kill(left, sig)
        time.sleep(2)
    return leftover_processes(exp.id)


def _registry() -> Dict[str, Any]:
    """nnictl's registry of experiments (``~/nni-experiments/.experiment``): id -> status, port, logDir."""
    path = Path(DEFAULT_WORKING_DIR).expanduser() / ".experiment"
    if not path.is_file():
        return {}
    try:
        return read_json(path, "nnictl registry")
    except ConfigError:  # being rewritten by nnictl right now
        return {}


def running_ids() -> List[str]:
    """Ids of the experiments nnictl's registry does not mark as stopped."""
    return [exp_id for exp_id, rec in _registry().items() if isinstance(rec, dict) and rec.get("status") != "STOPPED"]


def working_dir_of_id(exp_id: str) -> Path:
    """The working folder nnictl recorded for experiment ``exp_id`` (NNI's default when unknown)."""
    rec = _registry().get(exp_id)
    log_dir = rec.get("logDir") if isinstance(rec, dict) else None
    return Path(log_dir or Path(DEFAULT_WORKING_DIR).expanduser())
