"""Training and evaluation: losses, schedule, the Lightning module, train_network, resume after SIGKILL,
DDP on CPU, evaluation modes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

import nni_rspnet  # noqa: F401
from nni_rspnet.space.arch import build_network, random_arch, save_arch
from nni_rspnet.seg.data import DataConfig, build_datasets
from nni_rspnet.seg.deploy import load_checkpoint, load_model
from nni_rspnet.seg.evaluate import evaluate_network, infer
from nni_rspnet.space.model import SpaceConfig
from nni_rspnet.seg.train import (SegmentationModule, TrainConfig, distillation_loss, poly_warmup_factor,
                              segmentation_loss, train_network)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "search_spaces", "tiny.yaml")
TINY = ["space.layers=2", "space.channels=[8,16,16]", "space.stem_channels=8", "space.head_channels=16"]
DATA = dict(num_train=48, num_val=16, image_size=[32, 64], crop_size=[32, 64], batch_size=8, val_batch_size=8)
CLI_SETS = [f"--set={s}" for s in TINY] + ["--set=data.num_train=48", "--set=data.num_val=16",
                                           "--set=data.image_size=[32,64]", "--set=data.crop_size=[32,64]",
                                           "--set=data.batch_size=8", "--set=train.threads=1"]


def tiny_space(aux: bool = False) -> SpaceConfig:
    return SpaceConfig.from_yaml(TINY_YAML, TINY + [f"space.aux_heads={'true' if aux else 'false'}"])


# --- losses and schedule ---------------------------------------------------------------------------

def test_loss_ignores_pixels_and_ohem_keeps_hard_ones():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8))
    target[:, 0] = 255
    logits = torch.randn(2, 4, 8, 8)
    logits.scatter_(1, target.clamp(max=3).unsqueeze(1), 6.0)  # most pixels easy ...
    logits[:, :, 4:] = torch.randn(2, 4, 4, 8)  # ... the lower half hard
    plain = segmentation_loss(logits, target)
    assert torch.allclose(plain, F.cross_entropy(logits, target, ignore_index=255))
    hard = segmentation_loss(logits, target, ohem_thresh=0.7, ohem_min_kept=1)
    assert hard > plain  # only the hard pixels count
    assert torch.allclose(segmentation_loss(logits, target, ohem_thresh=0.7, ohem_min_kept=10 ** 6), plain)
    empty = segmentation_loss(logits.requires_grad_(), torch.full_like(target, 255))
    assert empty.item() == 0.0 and empty.requires_grad


def test_distillation_loss():
    s = torch.randn(1, 5, 4, 4)
    y = torch.zeros(1, 4, 4, dtype=torch.long)
    assert distillation_loss(s, s.clone(), y).abs() < 1e-6
    assert distillation_loss(s, torch.randn(1, 5, 4, 4), y, temperature=2.0) > 0
    assert distillation_loss(s, torch.randn(1, 5, 4, 4), torch.full_like(y, 255)) == 0


def test_poly_schedule_with_warmup():
    assert poly_warmup_factor(0, 100, 10, 0.9) == pytest.approx(0.01)
    assert poly_warmup_factor(10, 100, 10, 0.9) == pytest.approx(1.0)
    assert poly_warmup_factor(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert poly_warmup_factor(100, 100, 10, 0.9) == 0.0
    assert poly_warmup_factor(0, 100, 0, 0.9) == 1.0


def test_train_config_errors():
    from nni_rspnet.errors import ConfigError
    from nni_rspnet.schema import load_section

    assert load_section(TrainConfig, TINY_YAML, "train").epochs >= 1
    with pytest.raises(ConfigError, match="optimizer"):
        load_section(TrainConfig, TINY_YAML, "train", ["train.optimizer=rmsprop"])
    with pytest.raises(ConfigError, match="teacher"):
        load_section(TrainConfig, TINY_YAML, "train", ["train.teacher=/no/such/model.pt"])


# --- the Lightning module --------------------------------------------------------------------------

def test_training_step_uses_aux_heads_and_optimises_only_the_model():
    torch.manual_seed(0)
    space = tiny_space(aux=True)
    net = build_network(space, random_arch(space, 0))
    x, y = torch.randn(2, 3, 32, 64), torch.randint(0, 11, (2, 32, 64))
    losses = {}
    for w in (0.0, 0.4):
        module = SegmentationModule(11, aux_weight=w, ema_decay=0.9, total_steps=10)
        module.set_model(net)
        module.setup("fit")
        loss = module.training_step((x, y), 0)
        assert loss.dim() == 0 and loss.requires_grad
        losses[w] = float(loss.detach())
        conf = module.configure_optimizers()
        opt_params = {id(p) for g in conf["optimizer"].param_groups for p in g["params"]}
        assert opt_params == {id(p) for p in net.parameters()}  # not the EMA copy, not the metric
        assert conf["lr_scheduler"]["interval"] == "step"
    main = float(segmentation_loss(net(x), y))
    assert losses[0.0] == pytest.approx(main, rel=1e-5) and losses[0.4] > losses[0.0]


def test_module_is_traced_with_plain_arguments():
    module = SegmentationModule(11, optimizer="adamw", lr=1e-3)
    assert module.trace_kwargs["optimizer"] == "adamw" and 11 in [*module.trace_args, *module.trace_kwargs.values()]
    import nni

    assert len(nni.dump(module)) < 2000  # what a multi-trial NNI run ships to each trial
    with pytest.raises(ValueError, match="optimizer"):
        SegmentationModule(11, optimizer="lamb")


# --- train_network and evaluation ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = str(tmp_path_factory.mktemp("run"))
    space = tiny_space()
    arch = random_arch(space, 0)
    net = build_network(space, arch)
    cfg = TrainConfig(epochs=2, lr=0.05, warmup_epochs=0.5, ema_decay=0.5, threads=1)
    result = train_network(net, DataConfig(**DATA), cfg, out, space=space.to_dict(), arch=arch, progress=False)
    return out, result


def test_train_network_writes_history_checkpoints_and_model(trained_run):
    out, result = trained_run
    for name in ("last.ckpt", "best.ckpt", "model.pt", "history.json", "history.csv", "curves.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "history.json")) as f:
        rows = json.load(f)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[-1]["lr"] < rows[0]["lr"]  # poly decay
    assert all(r["train_loss"] > 0 for r in rows) and 0 <= result["val_miou"] <= 1
    assert result["val_miou"] == pytest.approx(rows[-1]["val_miou"])
    assert load_checkpoint(result["model_path"])["meta"]["classes"][0] == "background"


def test_evaluation_of_model_pt_matches_the_training_metric(trained_run, tmp_path):
    """The saved model (the EMA weights) evaluated from model.pt gives the mIoU validation logged."""
    out, result = trained_run
    net = load_model(result["model_path"])
    _, val, classes = build_datasets(DataConfig(**DATA))
    report = evaluate_network(net, val, classes, str(tmp_path), save_images=2, progress=False)
    assert report["miou"] == pytest.approx(result["val_miou"], abs=1e-6)
    assert os.path.isfile(tmp_path / "iou.md") and os.path.isfile(tmp_path / "predictions" / "0001.png")
    with open(tmp_path / "iou.json") as f:
        assert set(json.load(f)["per_class"]) == set(classes)


def test_distillation_from_a_teacher_checkpoint(trained_run, tmp_path):
    """The teacher of a TrainConfig is loaded, frozen, and its logits enter the loss: the loss is the
    plain loss plus kd_weight times the distillation term towards exactly those logits."""
    _, result = trained_run
    space = tiny_space()
    torch.manual_seed(0)
    net = build_network(space, random_arch(space, 1))
    cfg = TrainConfig(epochs=1, teacher=result["model_path"], kd_weight=0.7, kd_temperature=2.0, threads=1)
    x, y = torch.randn(2, 3, 32, 64), torch.randint(0, 11, (2, 32, 64))
    plain = SegmentationModule(11)
    student = SegmentationModule.from_config(11, cfg)
    for module in (plain, student):
        module.set_model(net)
        module.setup("fit")
    assert plain.teacher is None and student.teacher is not None
    assert not any(p.requires_grad for p in student.teacher.parameters())
    with torch.no_grad():
        teacher_logits = load_model(result["model_path"])(x)
        expected = plain.training_step((x, y), 0) + 0.7 * distillation_loss(net(x), teacher_logits, y, 2.0)
        assert float(distillation_loss(net(x), teacher_logits, y, 2.0)) > 1e-3  # the teacher disagrees
        assert float(student.training_step((x, y), 0)) == pytest.approx(float(expected), rel=1e-5)
    res = train_network(net, DataConfig(**DATA), cfg, str(tmp_path), progress=False)
    assert res["epochs"] == 1 and res["history"][0]["train_loss"] > 0


def test_sliding_window_and_flip_inference():
    torch.manual_seed(0)
    space = tiny_space()
    net = build_network(space, random_arch(space, 0)).eval()
    x = torch.randn(2, 3, 32, 64)
    whole = infer(net, x)
    assert torch.allclose(infer(net, x, "slide", window=(32, 64)), whole, atol=1e-6)
    slid = infer(net, x, "slide", window=(32, 32), stride=(32, 16))
    assert slid.shape == whole.shape and not torch.allclose(slid, whole)
    assert infer(net, x, "slide", window=(48, 80)).shape == whole.shape  # window larger than the image
    flipped = infer(net, x, flip=True)
    assert torch.allclose(flipped, (whole + net(x.flip(-1)).flip(-1)) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        infer(net, x, "slide")


# --- end to end through the CLI --------------------------------------------------------------------

def _cli(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "nni_rspnet.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _arch_file(tmp_path) -> str:
    path = str(tmp_path / "arch.json")
    save_arch(random_arch(tiny_space(), 0), path)
    return path


def _history(out):
    try:
        with open(os.path.join(out, "history.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return []


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_last_epoch(tmp_path):
    arch, out = _arch_file(tmp_path), str(tmp_path / "run")
    args = ["train", "--arch", arch, "--config", TINY_YAML, *CLI_SETS, "--set=train.epochs=6", "--out", out,
            "--no-progress", "--set=data.num_train=96"]
    proc = _cli(args)
    deadline = time.time() + 240
    while len(_history(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.communicate()[0][-2000:]
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _history(out)
    ckpt = torch.load(os.path.join(out, "last.ckpt"), map_location="cpu", weights_only=True)
    done = ckpt["epoch"] + 1  # epochs finished in the checkpoint
    assert 1 <= done < 6
    resumed = _cli(args + ["--resume"])
    log = resumed.communicate(timeout=400)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert f"resumed from {out}/last.ckpt after epoch {done}" in log
    after = _history(out)
    assert [r["epoch"] for r in after] == list(range(6))
    # The epochs in the checkpoint were not run again: their rows are the ones written before the kill.
    assert after[:done] == before[:done]
    assert "trained 6 epochs" in log


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_matches_single_process(tmp_path):
    arch = _arch_file(tmp_path)
    common = ["train", "--arch", arch, "--config", TINY_YAML, *CLI_SETS, "--set=train.epochs=2", "--no-progress",
              "--set=data.augment=false", "--set=train.lr=0.02"]
    single = _cli(common + ["--out", str(tmp_path / "single")])
    log1 = single.communicate(timeout=400)[0]
    assert single.returncode == 0, log1[-3000:]
    # Two processes with half the batch each: the same effective batch as the single process.
    ddp = _cli(common + ["--out", str(tmp_path / "ddp"), "--set=train.devices=2", "--set=train.strategy=ddp",
                         "--set=data.batch_size=4", "--set=data.val_batch_size=4"])
    log2 = ddp.communicate(timeout=500)[0]
    assert ddp.returncode == 0, log2[-3000:]
    assert "on 2 processes (gloo)" in log2
    m1 = _history(str(tmp_path / "single"))[-1]["val_miou"]
    m2 = _history(str(tmp_path / "ddp"))[-1]["val_miou"]
    print(f"val mIoU after 2 epochs: single process {m1:.4f}, 2-process DDP {m2:.4f}")
    assert abs(m1 - m2) < 0.05, (m1, m2)
    # The mIoU synced over both processes equals a one-process evaluation of the saved weights.
    net = load_model(str(tmp_path / "ddp" / "model.pt"))
    _, val, classes = build_datasets(DataConfig(**dict(DATA, augment=False)))
    assert evaluate_network(net, val, classes, progress=False)["miou"] == pytest.approx(m2, abs=1e-6)


def test_cli_evaluate_on_a_cityscapes_tree(tmp_path, capsys):
    """evaluate reads a Cityscapes layout, writes the IoU table and Cityscapes-coloured predictions,
    and refuses a model whose class count does not fit the dataset."""
    from test_data import make_cityscapes

    from nni_rspnet.cli import main
    from nni_rspnet.seg.deploy import save_model

    root = make_cityscapes(str(tmp_path / "cs"))
    space = SpaceConfig.from_yaml(TINY_YAML, TINY + ["space.num_classes=19"])
    arch = random_arch(space, 0)
    model = str(tmp_path / "model.pt")
    save_model(build_network(space, arch).eval(), model, space.to_dict(), arch,
               {"classes": [f"c{i}" for i in range(19)], "dataset": f"cityscapes:{root}"})
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", model, "--data", f"cityscapes:{root}", "--out", str(out), "--flip",
            "--config", TINY_YAML]
    assert main(args) == 0
    assert "| road |" in capsys.readouterr().out and (out / "iou.md").is_file()
    with open(out / "iou.json") as f:
        report = json.load(f)
    assert report["flip"] and set(v for v in report["per_class"].values() if v is not None)  # road and car
    # Wall is absent from the ground truth: its IoU is 0 if predicted, else left out (None).
    assert report["per_class"]["wall"] in (None, 0.0)
    assert (out / "predictions" / "0000.png").is_file()
    assert main(args[:-2] + ["--config", TINY_YAML, "--data", "builtin"]) == 2  # 19-class model, 11-class data
    assert "19 classes" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_optimisers_use_multi_tensor_kernels_and_match_the_per_tensor_loop(name):
    """foreach (benchmarks/step_cost.py: AdamW's step about half as long on CPU) computes what the loop does."""
    import torch
    from torch import nn
    from nni_rspnet.seg.train import SegmentationModule

    def trained(foreach):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))
        module = SegmentationModule(3, optimizer=name, lr=0.05)
        module.set_model(net)
        opt = module.configure_optimizers()["optimizer"]
        assert opt.defaults["foreach"] is True
        opt.defaults["foreach"] = foreach
        for group in opt.param_groups:
            group["foreach"] = foreach
        x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2, 6, 6))
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(trained(True), trained(False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
