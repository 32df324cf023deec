import pytest

from nni_rspnet.cli import main


def test_space_prints_labels_size_and_costs(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("space:\n  resolutions: [4, 8]\n  channels: [8, 16]\n  layers: 2\n  cell_nodes: 2\n"
                    "  ops: [skip_connect, conv_3x3]\n  rsp_depth: 1\n  head_channels: 8\n")
    assert main(["space", "--config", str(path), "--samples", "2", "--input-size", "32", "48"]) == 0
    out = capsys.readouterr().out
    assert "cell/node1/op1" in out and "skip_connect, conv_3x3" in out
    assert "search space size: 10^" in out
    assert "supernet parameters:" in out
    assert "2 sampled networks at 32x48: parameters" in out


def test_bad_config_is_one_line_and_status_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("space:\n  layrs: 2\n")
    assert main(["space", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "unknown key 'layrs'" in err[0]


def test_unknown_command_exits():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_a_user_error_in_any_command_is_one_line(tmp_path, capsys):
    """Every command goes through one handler: a data error in the demo is no traceback either."""
    assert main(["demo", "--fast", "--out", str(tmp_path / "d"), "--set", "data.dataset=folder:/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nni-rspnet demo: error: /nonexistent: dataset root folder not found"]
