"""Deployment: self-describing model.pt, TorchScript and ONNX exports that match PyTorch, predict."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import nni_rspnet  # noqa: F401
from nni_rspnet.space.arch import build_network, random_arch
from nni_rspnet.cli import main
from nni_rspnet.errors import DataError
from nni_rspnet.seg.deploy import (ModelFileError, Predictor, export_onnx, export_torchscript, load_checkpoint,
                               load_model, model_meta, predict_folder, save_model)
from nni_rspnet.space.model import SpaceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["space.layers=2", "space.channels=[8,16,16]", "space.stem_channels=8", "space.head_channels=16"]
META = {"classes": [f"c{i}" for i in range(11)], "dataset": "builtin", "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fixed network with non-trivial weights and BN statistics, saved as model.pt."""
    torch.set_num_threads(1)
    space = SpaceConfig.from_yaml(os.path.join(ROOT, "search_spaces", "tiny.yaml"), TINY)
    arch = random_arch(space, 1)
    torch.manual_seed(0)
    net = build_network(space, arch)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    save_model(net, path, space=space.to_dict(), arch=arch, meta=META)
    return net, path


def test_model_pt_round_trip(trained):
    net, path = trained
    payload = load_checkpoint(path)
    assert payload["meta"] == META and payload["space"]["num_classes"] == 11
    again = load_model(path)
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


def test_bad_model_files_are_named(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a model.pt") as err:
        load_checkpoint(str(bad))
    assert str(bad) in str(err.value)
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"format": "something else"}, str(bad))
    with pytest.raises(ModelFileError, match="marker"):
        load_checkpoint(str(bad))


def test_torchscript_matches_pytorch_at_any_size(trained, tmp_path):
    net, _ = trained
    path = str(tmp_path / "model.ts.pt")
    export_torchscript(net, path, META, check_input=torch.randn(1, 3, 32, 64))
    scripted = torch.jit.load(path)
    for size in [(32, 64), (48, 80)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert (scripted(x) - net(x)).abs().max() < 1e-4
    assert model_meta(path) == META


def test_onnx_matches_pytorch(trained, tmp_path):
    import onnxruntime as ort

    net, _ = trained
    path = str(tmp_path / "model.onnx")
    diff = export_onnx(net, path, (32, 64), META)
    assert diff < 1e-4
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 64)  # another batch size: the batch axis is dynamic
    out = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - net(x).numpy()).max() < 1e-4
    assert model_meta(path) == META


def test_predict_folder_writes_index_masks(trained, tmp_path):
    net, path = trained
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    pics = {"a.png": rng.integers(0, 255, (32, 64, 3), dtype=np.uint8),
            "b.jpg": rng.integers(0, 255, (40, 72, 3), dtype=np.uint8)}
    for name, pic in pics.items():
        Image.fromarray(pic).save(images / name)
    written = predict_folder(path, str(images), str(tmp_path / "out"), overlay=True)
    assert [os.path.basename(p) for p in written] == ["a.png", "b.png"]
    with Image.open(written[0]) as im:
        assert im.mode == "P" and im.size == (64, 32)
        mask = np.array(im)
    x = torch.from_numpy(pics["a.png"]).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(META["mean"]).view(3, 1, 1)) / torch.tensor(META["std"]).view(3, 1, 1)
    with torch.no_grad():
        expected = net(x[None])[0].argmax(0).numpy()
    assert np.array_equal(mask, expected)
    assert os.path.exists(tmp_path / "out" / "b_overlay.jpg")
    # The same masks from the TorchScript and the ONNX files.
    export_torchscript(net, str(tmp_path / "m.ts.pt"), META)
    export_onnx(net, str(tmp_path / "m.onnx"), (32, 64), META)
    for other in ("m.ts.pt", "m.onnx"):
        pred = Predictor(str(tmp_path / other)).predict(pics["a.png"])
        assert (pred == expected).mean() > 0.999


def test_predict_errors(trained, tmp_path):
    _, path = trained
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        predict_folder(path, str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(DataError, match="not found"):
        predict_folder(path, str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_cli_export_and_predict(trained, tmp_path, capsys):
    _, path = trained
    out = str(tmp_path / "net.onnx")
    assert main(["export", "--checkpoint", path, "--format", "onnx", "--input-size", "32", "64", "--out", out]) == 0
    assert "max |difference|" in capsys.readouterr().out and os.path.exists(out)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert main(["export", "--checkpoint", str(bad), "--format", "torchscript"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_model_files_are_told_apart_by_content_not_name(trained, tmp_path, capsys):
    """An ONNX file without the .onnx suffix predicts (it used to be 'not a model.pt'); TorchScript exports to
    a name without an extension (torch's writer used to fail on the temporary name)."""
    net, path = trained
    export_onnx(net, str(tmp_path / "m.onnx"), (32, 64), META)
    os.rename(tmp_path / "m.onnx", tmp_path / "model.bin")
    image = np.random.default_rng(1).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    assert Predictor(str(tmp_path / "model.bin")).session is not None
    assert main(["export", "--checkpoint", path, "--format", "torchscript", "--out", str(tmp_path / "mymodel")]) == 0
    assert Predictor(str(tmp_path / "mymodel")).net is not None
    a, b = (Predictor(str(tmp_path / name)).predict(image) for name in ("model.bin", "mymodel"))
    assert (a == b).mean() > 0.999


def test_parity_checks_reject_nan(trained, tmp_path):
    from nni_rspnet.seg.deploy import check_parity

    assert check_parity(1e-6, "m", "TorchScript") == 1e-6
    with pytest.raises(ModelFileError, match=r"m: TorchScript output differs from PyTorch by nan"):
        check_parity(float("nan"), "m", "TorchScript")
    net, _ = trained

    class NaNOnce(torch.nn.Module):  # scripts to something that differs from its eager run
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x)
            return y * float("nan") if torch.jit.is_scripting() else y

    with pytest.raises(ModelFileError, match="differs from PyTorch by nan"):
        export_torchscript(NaNOnce(), str(tmp_path / "x.pt"), check_input=torch.randn(1, 3, 32, 64))
    assert not (tmp_path / "x.pt").exists()
