"""``nni-rspnet experiment create|stop``: the documented way to start an experiment binds its web UI and
REST API to 127.0.0.1 unless ``--host`` says otherwise (read from the kernel's table of listening sockets)."""
from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest
import yaml

from nni_rspnet.cli import main
from nni_rspnet.nnictl import experiment as nnictl

TCP_LISTEN = "0A"


def listening_addresses(port: int):
    """The local addresses with a TCP socket listening on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state != TCP_LISTEN or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return found


def test_proc_table_reader_sees_a_listening_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert listening_addresses(s.getsockname()[1]) == {"127.0.0.1"}


@pytest.fixture
def tiny_experiment(tmp_path, monkeypatch):
    """A one-trial HPO experiment whose trial sleeps; nnictl's registry in a temporary HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "exp.yml"
    config.write_text(yaml.safe_dump({
        "experimentName": "listen-test", "searchSpace": {"x": {"_type": "choice", "_value": [1]}},
        "trialCommand": f"{sys.executable} -c 'import time; time.sleep(2)'", "trialCodeDirectory": str(tmp_path),
        "trialConcurrency": 1, "maxTrialNumber": 1, "tuner": {"name": "Random"},
        "trainingService": {"platform": "local"}, "experimentWorkingDirectory": str(tmp_path / "work")}))
    return config


@pytest.mark.slow
@pytest.mark.parametrize("host,expected", [(None, {"127.0.0.1"}), ("0.0.0.0", {"0.0.0.0"})],
                         ids=["default", "every-interface"])
def test_experiment_create_listens_where_it_says(tiny_experiment, capsys, host, expected):
    port = nnictl.free_port()
    argv = ["experiment", "create", "--config", str(tiny_experiment), "--port", str(port)]
    assert main(argv + (["--host", host] if host else [])) == 0
    out = capsys.readouterr().out
    exp_id = re.search(r"experiment (\w+): web UI and REST API at http://127\.0\.0\.1:(\d+)", out).group(1)
    try:
        assert listening_addresses(port) == expected
        if host is None:
            assert f"listening on 127.0.0.1:{port} only" in out
        else:
            assert "anyone who can reach this machine" in out
        assert nnictl.RestClient(port).alive()
    finally:
        try:
            assert main(["experiment", "stop", exp_id]) == 0
        finally:  # whatever happened above, leave no manager behind
            left = nnictl.stop(nnictl.Experiment(exp_id, port, tiny_experiment.parent))
    assert f"experiment {exp_id} stopped" in capsys.readouterr().out
    assert not left and not listening_addresses(port)
