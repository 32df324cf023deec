import json
import os

import pytest

from nni_rspnet.cli import main


@pytest.mark.slow
def test_demo_fast_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["miou"] <= 1.0
    assert summary["params"] > 1000 and summary["macs"] > 0 and summary["latency_ms"] > 0
    assert summary["onnx_max_abs_diff"] < 1e-4
    for name, path in summary["files"].items():
        assert os.path.exists(path), name
    for png in ("data_preview.png", "architecture.png", "train/curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "[6/6]" in printed and "| mIoU (val, retrained) |" in printed and "model.onnx" in printed
