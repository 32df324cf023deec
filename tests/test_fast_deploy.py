"""The fast deploy path: BatchNorm folded and checked on export, ONNX files with any image size,
``evaluate`` and ``predict`` running an ``.onnx`` file in onnxruntime, equal to PyTorch."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from nni_rspnet import runtimes
from nni_rspnet.cli import main
from nni_rspnet.runtimes import OrtNetwork, fold_batchnorm, fold_checked, prepare
from nni_rspnet.search.references import reference_network
from nni_rspnet.seg.deploy import Predictor, export_onnx, export_torchscript, load_network, save_model
from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.space.model import SpaceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "search_spaces", "tiny.yaml")
SMALL = ["space.layers=2", "space.channels=[8,16,16]", "space.stem_channels=8", "space.head_channels=16"]
DATA = ["data.num_train=8", "data.num_val=6", "data.image_size=[32,64]", "data.crop_size=[32,64]"]


def _randomise_norms(net: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small network of the tiny space with non-trivial BatchNorm statistics, saved as model.pt with
    the built-in data's classes."""
    torch.set_num_threads(1)
    space = SpaceConfig.from_yaml(TINY, SMALL)
    arch = random_arch(space, 2)
    torch.manual_seed(0)
    net = _randomise_norms(build_network(space, arch))
    folder = tmp_path_factory.mktemp("model")
    meta = {"classes": ["background"] + [str(i) for i in range(10)], "dataset": "builtin"}
    save_model(net, str(folder / "model.pt"), space=space.to_dict(), arch=arch, meta=meta)
    return net, folder


@pytest.mark.parametrize("make", [
    lambda: build_network(SpaceConfig.from_yaml(TINY, SMALL), random_arch(SpaceConfig.from_yaml(TINY, SMALL), 0)),
    lambda: build_network(SpaceConfig.from_yaml(os.path.join(ROOT, "search_spaces", "cityscapes_light.yaml")),
                          random_arch(SpaceConfig.from_yaml(os.path.join(ROOT, "search_spaces",
                                                                         "cityscapes_light.yaml")), 0)),
    lambda: reference_network("lraspp", 5),
], ids=["tiny", "cityscapes_light", "lraspp"])
def test_folding_batchnorm_keeps_the_output_to_1e5(make):
    net = _randomise_norms(make())
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    folded, count = fold_batchnorm(net)
    assert count == norms > 0  # every BatchNorm of these networks follows its convolution
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        ref, out = net(x), folded(x)
    assert (out - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_a_wrong_fold_is_caught(monkeypatch):
    net = _randomise_norms(reference_network("lraspp", 5))
    real = runtimes._fold

    def off_by_a_bit(conv, bn):
        fused = real(conv, bn)
        fused.bias.data += 0.1
        return fused

    monkeypatch.setattr(runtimes, "_fold", off_by_a_bit)
    with pytest.raises(ValueError, match="folding BatchNorm"):
        fold_checked(net, torch.randn(1, 3, 64, 128))


def test_exports_are_folded_and_match_pytorch_at_any_size(model, tmp_path):
    import onnx

    net, _ = model
    onnx_path = str(tmp_path / "m.onnx")
    assert export_onnx(net, onnx_path, (32, 64), {"classes": ["c"] * 11}) < 1e-4
    ops = {node.op_type for node in onnx.load(onnx_path).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    ort_net = OrtNetwork(onnx_path)
    assert ort_net.input_hw is None  # any size
    for size in [(32, 64), (48, 96), (33, 70)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert (ort_net(x) - net(x)).abs().max() < 1e-4
    ts_path = str(tmp_path / "m.ts.pt")
    scripted = export_torchscript(net, ts_path, check_input=torch.randn(1, 3, 32, 64))
    assert "BatchNorm" not in str(scripted.inlined_graph)
    x = torch.randn(1, 3, 40, 72)
    with torch.no_grad():
        assert (torch.jit.load(ts_path)(x) - net(x)).abs().max() < 1e-4
    fixed = str(tmp_path / "fixed.onnx")
    export_onnx(net, fixed, (32, 64), fold=False, dynamic_size=False)
    loaded, _ = load_network(fixed)
    with torch.no_grad():  # a fixed-size file runs at its size, the logits resized back
        assert loaded(torch.randn(1, 3, 48, 96)).shape == (1, 11, 48, 96)


def test_evaluate_and_predict_run_onnx_in_onnxruntime_like_pytorch(model, tmp_path, capsys):
    net, folder = model
    pt = str(folder / "model.pt")
    onnx_path = str(tmp_path / "model.onnx")
    assert main(["export", "--checkpoint", pt, "--format", "onnx", "--input-size", "32", "64", "--out",
                 onnx_path]) == 0
    assert "BatchNorm folded" in capsys.readouterr().out
    results = {}
    for name, path in (("pt", pt), ("onnx", onnx_path)):
        out = tmp_path / f"eval_{name}"
        assert main(["evaluate", "--config", TINY, *[a for s in SMALL + DATA for a in ("--set", s)],
                     "--checkpoint", path, "--out", str(out), "--save-images", "0"]) == 0
        results[name] = json.loads((out / "iou.json").read_text())
    capsys.readouterr()
    assert results["onnx"]["miou"] == pytest.approx(results["pt"]["miou"], abs=1e-3)
    assert results["onnx"]["pixel_accuracy"] == pytest.approx(results["pt"]["pixel_accuracy"], abs=1e-3)
    images = tmp_path / "images"
    images.mkdir()
    pic = np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8)
    Image.fromarray(pic).save(images / "a.png")
    masks = {}
    for name, path in (("pt", pt), ("onnx", onnx_path)):
        assert main(["predict", "--model", path, "--input", str(images), "--out", str(tmp_path / f"p_{name}")]) == 0
        masks[name] = np.array(Image.open(tmp_path / f"p_{name}" / "a.png"))
    assert masks["onnx"].shape == (40, 72) and (masks["onnx"] == masks["pt"]).mean() > 0.999
    assert np.abs(Predictor(onnx_path).logits(pic) - Predictor(pt).logits(pic)).max() < 1e-4


@pytest.mark.parametrize("runtime", ["eager", "torchscript", "onnxruntime"])
def test_prepare_runs_a_network_in_each_runtime(model, runtime):
    net, _ = model
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        ref = net(x)
    out = prepare(net, (x,), runtime, threads=1)()
    out = torch.as_tensor(out[0] if isinstance(out, list) else out)
    assert (out - ref).abs().max() < 1e-4
    with torch.no_grad():  # preparing (scripting, exporting) leaves the network as it was
        assert torch.equal(net(x), ref)
