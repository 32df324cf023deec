"""fileio: atomic writes with the usual permissions, and the one error ladder for JSON and YAML files."""
import os
import stat

import pytest

from nni_rspnet.errors import ArchError, ConfigError
from nni_rspnet.fileio import atomic_path, read_json, read_yaml, save_torch, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_have_the_usual_permissions_and_leave_no_temporary(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "sub" / "a.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
        save_torch({"x": 1}, tmp_path / "m.pt")
    finally:
        os.umask(umask)
    assert (tmp_path / "sub" / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert _mode(tmp_path / "sub" / "a.json") == _mode(tmp_path / "m.pt") == 0o644  # not mkstemp's 0600
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "sub"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_lightning_checkpoints_are_written_by_fileio(tmp_path):
    from nni_rspnet.seg.train import AtomicCheckpointIO

    umask = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"epoch": 3}, tmp_path / "last.ckpt")
    finally:
        os.umask(umask)
    assert _mode(tmp_path / "last.ckpt") == 0o644 and os.listdir(tmp_path) == ["last.ckpt"]


@pytest.mark.parametrize("text,message", [
    (None, r"a\.json: architecture file not found"),
    ("{nope", r"a\.json: not valid JSON \("),
    ("[1, 2]", r"a\.json: expected a JSON object of label -> choice, got list"),
])
def test_read_json_error_ladder_names_the_file(tmp_path, text, message):
    path = tmp_path / "a.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ArchError, match=message):
        read_json(path, "architecture file", ArchError, expected="a JSON object of label -> choice")


def test_read_yaml_empty_is_a_mapping_and_errors_are_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert read_yaml(path, "config file") == {}
    path.write_text("space: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML") as err:
        read_yaml(path, "config file")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="the config file is a folder; expected a file"):
        read_yaml(tmp_path, "config file")


# --- bounded, safe reading (issue 13) ------------------------------------------------------------------------

def test_only_regular_files_are_read_and_sizes_are_checked_before_reading(tmp_path):
    from nni_rspnet.fileio import read_bytes

    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)  # open() would block until a writer came
    with pytest.raises(ConfigError, match="c.yaml: the config file is not a regular file"):
        read_yaml(fifo, "config file")
    big = tmp_path / "a.json"
    big.write_bytes(b" " * 2000)
    with pytest.raises(ArchError, match=r"a\.json: the architecture file is 2\.0 kB, more than the limit of 1\.0 kB"):
        read_json(big, "architecture file", ArchError, max_bytes=1000)
    assert read_bytes(big, max_bytes=2000) == b" " * 2000
    with pytest.raises(ConfigError, match="not found"):
        read_bytes(tmp_path / "none")


def test_yaml_is_safe_bounded_and_reads_yaml_1_2_numbers(tmp_path):
    from nni_rspnet.fileio import parse_yaml

    assert parse_yaml("a: 1e6\nb: -2.5E-3\nc: 1_000\nd: 1e\n", "x") == {"a": 1e6, "b": -2.5e-3, "c": 1000, "d": "1e"}
    marker = tmp_path / "PWNED"
    with pytest.raises(ConfigError, match="x: not valid YAML"):
        parse_yaml(f"a: !!python/object/apply:os.system ['touch {marker}']", "x")
    assert not marker.exists()
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    with pytest.raises(ConfigError, match="x: more than 1,000,000 values once YAML aliases are expanded"):
        parse_yaml(bomb, "x")
    with pytest.raises(ConfigError, match="x: nested"):
        parse_yaml("[" * 100_000 + "]" * 100_000, "x")
    path = tmp_path / "c.yaml"
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: the config file is not UTF-8 text \(byte 3"):
        read_yaml(path, "config file")


def test_messages_show_bounded_values():
    from nni_rspnet.fileio import short

    huge = {"k": [[list(range(10 ** 5))] * 100] * 100}
    assert len(short(huge)) <= 100 and len(short("x" * 10 ** 6)) < 80 and "..." in short("x" * 10 ** 6)


def test_json_is_strict_nan_becomes_null(tmp_path):
    import json

    write_json(tmp_path / "h.json", [{"loss": float("nan"), "m": float("inf"), "ok": 0.5}])
    assert json.loads((tmp_path / "h.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == [
        {"loss": None, "m": None, "ok": 0.5}]


def test_unwritable_outputs_are_one_error_and_leave_nothing(tmp_path):
    import resource
    import signal

    from nni_rspnet.errors import OutputError
    from nni_rspnet.fileio import atomic_write_bytes, make_dirs

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file: expected a folder for the run folder, found a file"):
        make_dirs(tmp_path / "file", "run folder")
    with pytest.raises(OutputError, match="is a folder; expected the path of a file"):
        atomic_write_bytes(tmp_path, b"x")
    target = tmp_path / "new" / "deeper" / "m.pt"
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, old_limit[1]))  # as a full disk: writes past it fail
    try:
        with pytest.raises(OutputError, match=r"m\.pt: cannot write \(File too large\)"):
            save_torch({"w": list(range(10_000))}, target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert sorted(os.listdir(tmp_path)) == ["file"]  # the folders it had created are gone again


def test_torch_files_load_weights_only(tmp_path):
    import pickle

    from nni_rspnet.errors import ModelFileError
    from nni_rspnet.fileio import load_torch

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'PWNED'}",)

    (tmp_path / "a.ckpt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFileError, match=r"a\.ckpt: cannot load the checkpoint \(UnpicklingError"):
        load_torch(tmp_path / "a.ckpt")
    assert not (tmp_path / "PWNED").exists()
    save_torch({"epoch": 3}, tmp_path / "b.ckpt")
    assert load_torch(tmp_path / "b.ckpt") == {"epoch": 3}
