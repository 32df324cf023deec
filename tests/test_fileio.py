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
