"""Cityscapes' formats: the built-in set written in Cityscapes' layout, a network trained on it, its
predictions as label-id PNGs, and the official evaluator agreeing with ``nni-rspnet evaluate``."""
from __future__ import annotations

import glob
import importlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from nni_rspnet.cli import main
from nni_rspnet.config import RunConfig
from nni_rspnet.errors import DataError
from nni_rspnet.seg.cityscapes import TRAIN_TO_LABEL, find_images, predictions_to_label_ids
from nni_rspnet.seg.datasets import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN
from nni_rspnet.space.arch import random_arch, save_arch

SMALL = ["space.resolutions=[4, 8]", "space.channels=[8, 16]", "space.layers=2", "space.cell_nodes=2",
         "space.stem_channels=8", "space.head_channels=8", "space.ops=[skip_connect, conv_3x3, sep_conv_3x3]",
         "space.num_classes=19"]
DATA = ["data.num_train=24", "data.num_val=6", "data.image_size=[32, 64]", "data.crop_size=[32, 64]",
        "data.batch_size=8", "data.val_batch_size=6"]


def sets(items):
    return [a for s in items for a in ("--set", s)]


def test_train_ids_map_to_the_official_label_ids():
    from cityscapesscripts.helpers.labels import labels

    official = {label.trainId: label.id for label in labels if 0 <= label.trainId < 19}
    assert {t: int(TRAIN_TO_LABEL[t]) for t in range(19)} == official
    assert {v: k for k, v in CITYSCAPES_LABEL_TO_TRAIN.items()} == official
    assert [label.name for label in sorted((l for l in labels if 0 <= l.trainId < 19), key=lambda l: l.trainId)] \
        == CITYSCAPES_CLASSES
    assert predictions_to_label_ids(np.array([[0, 18, 255]])).tolist() == [[7, 33, 0]]


def test_find_images_names_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="input folder not found"):
        find_images(str(tmp_path / "none"))
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no Cityscapes images"):
        find_images(str(tmp_path / "a"))
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "berlin_12_000019_leftImg8bit.png")
    with pytest.raises(DataError, match="berlin_12_000019_leftImg8bit.png: expected a Cityscapes name"):
        find_images(str(tmp_path / "a"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The built-in set in Cityscapes' layout and a small network trained on it."""
    tmp = tmp_path_factory.mktemp("cityscapes")
    root = tmp / "cityscapes"
    assert main(["data", "--export-cityscapes", str(root), *sets(DATA)]) == 0
    cfg = RunConfig.load("tiny", SMALL)
    save_arch(random_arch(cfg.space, 0), tmp / "arch.json", cfg.space)
    # A few seconds of training: enough for the network to predict road where the digits are not.
    recipe = ["train.epochs=6", "train.optimizer=adamw", "train.lr=0.02", "train.warmup_epochs=0"]
    assert main(["train", "--arch", str(tmp / "arch.json"), "--data", f"cityscapes:{root}", "--out", str(tmp / "run"),
                 *sets(SMALL + DATA + recipe)]) == 0
    return tmp, root, tmp / "run" / "model.pt"


@pytest.mark.slow
def test_export_writes_cityscapes_layout(trained):
    _, root, _ = trained
    images = sorted(glob.glob(str(root / "leftImg8bit" / "val" / "*" / "*_leftImg8bit.png")))
    labels = sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")))
    assert len(images) == len(labels) == 6
    assert len(glob.glob(str(root / "leftImg8bit" / "train" / "*" / "*.png"))) == 24
    gt = np.array(Image.open(labels[0]))
    assert gt.ndim == 2 and set(np.unique(gt)) <= {0, *CITYSCAPES_LABEL_TO_TRAIN}  # label ids, 0 = unlabeled
    assert 7 in gt  # the background became road
    assert Image.open(images[0]).size == (64, 32)


@pytest.mark.slow
def test_official_evaluator_equals_evaluate(trained, tmp_path, monkeypatch, capsys):
    tmp, root, model = trained
    results = tmp_path / "results"
    assert main(["predict", "--model", str(model), "--input", str(root / "leftImg8bit" / "val"),
                 "--out", str(results), "--format", "cityscapes"]) == 0
    assert "6 Cityscapes label-id masks written" in capsys.readouterr().out
    names = sorted(p.name for p in results.iterdir())
    assert names == sorted(p.split("/")[-1] for p in glob.glob(str(root / "leftImg8bit/val/*/*.png")))
    pred = np.array(Image.open(results / names[0]))
    assert pred.ndim == 2 and set(np.unique(pred)) <= set(CITYSCAPES_LABEL_TO_TRAIN)  # label ids, not train ids

    assert main(["evaluate", "--checkpoint", str(model), "--data", f"cityscapes:{root}", "--out", str(tmp_path / "ev"),
                 "--save-images", "0", *sets(DATA)]) == 0
    ours = json.loads((tmp_path / "ev" / "iou.json").read_text())

    # The official evaluator, called from Python (its command line breaks on numpy >= 2.4); it reads
    # its folders from the environment when it is imported.
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(results))
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(tmp_path))
    ev = importlib.reload(importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"))
    ev.args.evalInstLevelScore = False
    ev.args.quiet = True
    ground_truth = sorted(glob.glob(ev.args.groundTruthSearch))
    assert len(ground_truth) == 6
    predictions = [ev.getPrediction(ev.args, gt) for gt in ground_truth]
    official = ev.evaluateImgLists(predictions, ground_truth, ev.args)

    print(f"official class-average IoU {official['averageScoreClasses']:.8f}, evaluate mIoU {ours['miou']:.8f}")
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    for name in CITYSCAPES_CLASSES:  # class by class, absent classes (NaN there, None here) included
        theirs, mine = official["classScores"][name], ours["per_class"][name]
        assert (mine is None) == math.isnan(theirs), name
        if mine is not None:
            assert mine == pytest.approx(theirs, abs=1e-9), name
    scored = [v for v in ours["per_class"].values() if v is not None]
    assert len(scored) >= 5 and any(0 < v < 1 for v in scored)  # a comparison with something in it


@pytest.mark.slow
def test_cityscapes_format_needs_a_cityscapes_model(trained, tmp_path, capsys):
    """A model of the built-in classes cannot write Cityscapes label ids: one line, exit status 2."""
    tmp, root, _ = trained
    cfg = RunConfig.load("tiny", SMALL[:-1])
    save_arch(random_arch(cfg.space, 1), tmp_path / "arch.json", cfg.space)
    assert main(["train", "--arch", str(tmp_path / "arch.json"), "--out", str(tmp_path / "run"),
                 *sets(SMALL[:-1] + DATA + ["train.epochs=1"])]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "run" / "model.pt"), "--input", str(root / "leftImg8bit" / "val"),
                 "--out", str(tmp_path / "out"), "--format", "cityscapes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicts 11 classes (background, digit_0" in err[0] and "19 Cityscapes classes" in err[0]
