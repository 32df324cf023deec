"""The catalogue of bad inputs and faults, tried against the command line as a new user and as an attacker.

Each ``Case`` builds its input in a scratch folder, runs ``nni-rspnet`` (in this process, through
``cli.main``; in a subprocess only where a signal is sent) and is judged by ``judge``:

- ``clear``: the expected exit status (2, or 130 for Ctrl-C), exactly one line on stderr that names the
  culprit, no traceback, and the output folder unchanged (or still absent); a run that stopped after
  it had started keeps its checkpoints but writes no result;
- ``traceback``: an exception escaped, or stderr shows one;
- ``silent``: exit status 0 (a wrong result reported as success);
- ``hang``: no answer within the case's time limit;
- ``unclear``: any other failure (several lines, culprit not named, output changed, wrong status).

``tests/test_bad_inputs.py`` runs every case under pytest. ``python tests/bad_inputs.py`` runs them all
and prints the counts (rows, clear, traceback, silent, hang, unclear) and every row that is not clear.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "search_spaces" / "tiny.yaml")
# The issue's `T`: a tiny run of the tiny space.
T_SETS = ["space.layers=2", "data.num_train=16", "data.num_val=8", "data.batch_size=4", "data.image_size=[32,64]",
          "data.crop_size=[32,64]"]
QUICK = ["train.threads=1", "search.threads=1", "search.limit_batches=1"]


def sets(items: Sequence[str]) -> List[str]:
    return [arg for item in items for arg in ("--set", item)]


T = ["--config", TINY, *sets(T_SETS)]


class Evil:
    """Unpickling this runs ``touch MARKER``: every load path must refuse it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# --- assets shared by the cases ---------------------------------------------------------------------------

@dataclass
class Assets:
    """Files the cases start from: an architecture, model files (good, NaN, huge, evil), a training and a
    search checkpoint of real runs, a folder dataset. Built once per session by ``make_assets``."""

    root: Path
    arch: Path
    model: Path
    nan_model: Path
    huge_model: Path
    evil_zip: Path
    evil_pickle: Path
    torchscript: Path
    onnx: Path
    train_dir: Path
    search_dir: Path
    folder: Path
    marker: Path


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_folder_dataset(root: Path, classes: int = 11) -> Path:
    """``folder:`` layout, two 32x64 images per split, labels 0..classes-1."""
    rng = np.random.default_rng(0)
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(classes)) + "\n")
    for split in ("train", "val"):
        for i in range(2):
            _png(root / split / "images" / f"im{i}.png", rng.integers(0, 255, (32, 64, 3), dtype=np.uint8))
            _png(root / split / "masks" / f"im{i}.png", rng.integers(0, classes, (32, 64), dtype=np.uint8))
    return root


def make_assets(root: Path) -> Assets:
    """Builds the shared files (a few seconds: one epoch of training, one short search, one ONNX export)."""
    import torch

    from nni_rspnet.cli import main
    from nni_rspnet.config import RunConfig
    from nni_rspnet.seg.deploy import FORMAT, export_onnx, save_model
    from nni_rspnet.space.arch import build_network, random_arch, save_arch

    root.mkdir(parents=True, exist_ok=True)
    space = RunConfig.load(TINY, T_SETS).space
    arch = random_arch(space, 0)
    save_arch(arch, root / "arch.json", space)
    torch.manual_seed(0)
    net = build_network(space, arch).eval()
    meta = {"classes": ["background"] + [str(d) for d in range(10)], "dataset": "builtin"}
    save_model(net, str(root / "model.pt"), space.to_dict(), arch, meta)
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "space": space.to_dict(), "arch": arch, "state_dict": nan, "meta": meta},
               root / "nan.pt")
    huge = dict(space.to_dict(), channels=[4096, 8192, 12288])
    torch.save({"format": FORMAT, "space": huge, "arch": arch, "state_dict": {"w": torch.zeros(1)}, "meta": meta},
               root / "huge.pt")
    marker = root / "PWNED"
    torch.save({"format": FORMAT, "payload": Evil(marker)}, root / "evil.pt")
    (root / "evil.pkl").write_bytes(pickle.dumps(Evil(marker)))
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), str(root / "script.pt"))
    export_onnx(net, str(root / "model.onnx"), (32, 64), meta)
    main(["train", *T, "--arch", str(root / "arch.json"), "--out", str(root / "train"), "--no-progress",
          *sets(QUICK + ["train.epochs=1"])])
    main(["search", *T, "--out", str(root / "search"),
          *sets(QUICK + ["search.warmup_epochs=0", "search.stage1_epochs=1", "search.stage2_epochs=1"])])
    folder = make_folder_dataset(root / "folder")
    for path in (root / "train" / "last.ckpt", root / "search" / "checkpoint.pt"):
        assert path.is_file(), f"asset run did not write {path}"
    return Assets(root, root / "arch.json", root / "model.pt", root / "nan.pt", root / "huge.pt", root / "evil.pt",
                  root / "evil.pkl", root / "script.pt", root / "model.onnx", root / "train", root / "search", folder,
                  marker)


# --- cases -----------------------------------------------------------------------------------------------

# A Ctrl-C case runs the CLI in a subprocess: on a busy 2-core CI machine a fresh process may need minutes to
# import torch, NNI and Lightning and finish its first epoch (it takes about 13 s on an idle one).
INTERRUPT_TIMEOUT = 300.0

# (argv, culprit): the error line must name the culprit (a string, or a tuple of strings that must all appear)
Setup = Callable[[Path, Assets], Tuple[List[str], object]]


@dataclass
class Case:
    """One bad input: ``setup(tmp, assets)`` builds it and returns ``(argv, culprit)``.

    Attributes:
        status: the expected exit status (2; 130 for Ctrl-C).
        out: the output path (relative to ``tmp``) that must stay unchanged or absent.
        results: result files that must not exist in ``out`` after a run that had started (its
            checkpoints may stay); with ``results`` set, ``out`` need not be unchanged.
        signal_after: for Ctrl-C cases, the file (relative to ``tmp``) whose appearance triggers
            SIGINT; the command then runs in a subprocess.
        context: wraps the in-process run (for example a file-size limit that simulates a full disk).
        timeout: seconds before the case counts as a hang; a Ctrl-C case (``signal_after`` set) gets
            ``INTERRUPT_TIMEOUT`` when left at the default.
        slow: several seconds or more (a subprocess, a training run).
    """

    name: str
    setup: Setup
    status: int = 2
    out: str = "out"
    results: Tuple[str, ...] = ()
    signal_after: Optional[Callable[[Path], bool]] = None
    context: Optional[Callable[[Path], contextlib.AbstractContextManager]] = None
    timeout: float = 120.0
    slow: bool = False
    skip: Optional[Callable[[], Optional[str]]] = None

    def __post_init__(self) -> None:
        if self.signal_after is not None and self.timeout == Case.timeout:
            self.timeout = INTERRUPT_TIMEOUT


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def config_case(name: str, text, culprit: str = "c.yaml", command: str = "space") -> Case:
    """A bad config file given to ``command``."""
    def setup(tmp: Path, assets: Assets):
        path = _write(tmp / "c.yaml", text(tmp) if callable(text) else text)
        return [command, "--config", str(path), *(["--out", str(tmp / "out")] if command == "search" else [])], \
            culprit
    return Case(f"config: {name}", setup)


def set_case(name: str, items: Sequence[str], culprit: str, command: str = "space") -> Case:
    """A bad ``--set`` override on top of ``T``."""
    def setup(tmp: Path, assets: Assets):
        argv = [command, *T, *sets(items)]
        if command in ("search", "train"):
            argv += ["--out", str(tmp / "out")]
        if command == "train":
            argv += ["--arch", str(assets.arch)]
        return argv, culprit
    return Case(f"--set {' '.join(items)}"[:90], setup)


def arch_case(name: str, content: Callable[[Path, Assets], Path], culprit: str) -> Case:
    """A bad ``--arch`` file given to ``train``."""
    def setup(tmp: Path, assets: Assets):
        path = content(tmp, assets)
        return ["train", *T, "--arch", str(path), "--out", str(tmp / "out"), "--no-progress"], culprit
    return Case(f"arch: {name}", setup)


def _arch_edit(edit: Callable[[dict], None]) -> Callable[[Path, Assets], Path]:
    def content(tmp: Path, assets: Assets) -> Path:
        arch = json.loads(assets.arch.read_text())
        edit(arch)
        return _write(tmp / "a.json", json.dumps(arch))
    return content


def data_case(name: str, breaks: Callable[[Path], Path]) -> Case:
    """A broken folder dataset, read by ``data --verify`` (every file at construction)."""
    def setup(tmp: Path, assets: Assets):
        root = make_folder_dataset(tmp / "ds")
        culprit = breaks(root)
        return ["data", *T, "--data", f"folder:{root}", "--verify", "--preview", str(tmp / "out" / "p.png")], \
            str(culprit)
    return Case(f"data: {name}", setup)


def model_case(name: str, command: str, model: Callable[[Path, Assets], Path], culprit: Optional[str] = None,
               extra: Sequence[str] = ()) -> Case:
    """A bad model file given to ``export``, ``evaluate`` or ``predict``."""
    def setup(tmp: Path, assets: Assets):
        path = model(tmp, assets)
        out = str(tmp / "out" / "m.onnx")
        if command == "export":
            argv = ["export", "--checkpoint", str(path), "--format", "onnx", "--out", out]
        elif command == "evaluate":
            argv = ["evaluate", *T, "--checkpoint", str(path), "--out", str(tmp / "out")]
        else:
            images = tmp / "images"
            _png(images / "x.png", np.zeros((32, 64, 3), np.uint8))
            argv = ["predict", "--model", str(path), "--input", str(images), "--out", str(tmp / "out")]
        return argv + list(extra), culprit or str(path)
    return Case(f"{command}: {name}", setup)


def _copy(src: Path, dst: Path, cut: Optional[int] = None) -> Path:
    data = src.read_bytes()
    return _write(dst, data[:cut] if cut else data)


def resume_case(name: str, command: str, prepare: Callable[[Path, Assets], None], culprit: str,
                extra: Sequence[str] = ()) -> Case:
    """``--resume`` of a damaged, foreign or mismatched checkpoint in ``tmp/out``."""
    def setup(tmp: Path, assets: Assets):
        (tmp / "out").mkdir()
        prepare(tmp / "out", assets)
        if command == "train":
            argv = ["train", *T, "--arch", str(assets.arch), "--no-progress", *sets(QUICK + ["train.epochs=1"])]
        else:
            argv = ["search", *T, *sets(QUICK + ["search.warmup_epochs=0", "search.stage1_epochs=1",
                                                 "search.stage2_epochs=1"])]
        return argv + ["--out", str(tmp / "out"), "--resume", *extra], culprit
    return Case(f"{command} --resume: {name}", setup)


@contextlib.contextmanager
def file_size_limit(tmp: Path, limit: int = 4096) -> Iterator[None]:
    """Writes past ``limit`` bytes fail (EFBIG), as on a full disk; SIGXFSZ is ignored meanwhile."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def _no_cuda() -> Optional[str]:
    import torch

    return "this machine has CUDA" if torch.cuda.is_available() else None


def _history_len(path: Path, n: int) -> Callable[[Path], bool]:
    def ready(tmp: Path) -> bool:
        try:
            return len(json.loads((tmp / path).read_text())) >= n
        except (OSError, ValueError):
            return False
    return ready


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")) \
    + "space: {name: *i}\n"


def cases() -> List[Case]:
    """Every row of the catalogue."""
    from nni_rspnet.config import RunConfig

    defaults = RunConfig.load(TINY, T_SETS)  # the settings the checkpoints of the assets were written with
    rows: List[Case] = [
        # --- config files -------------------------------------------------------------------------------
        Case("config: missing file", lambda tmp, a: (["space", "--config", str(tmp / "none.yaml")],
                                                     "none.yaml: config file not found")),
        Case("config: a directory", lambda tmp, a: (["space", "--config", str(tmp)], "the config file is a folder")),
        Case("config: a FIFO", lambda tmp, a: (["space", "--config", str(_fifo(tmp / "c.yaml"))],
                                               "c.yaml: the config file is not a regular file"), timeout=20),
        config_case("not UTF-8", b"space:\n  name: \xff\xfe tiny\n", "c.yaml: the config file is not UTF-8"),
        config_case("not YAML", "space: [1,\n", "c.yaml: not valid YAML"),
        config_case("a list", "- 1\n- 2\n", "c.yaml: expected a mapping of sections"),
        config_case("space: [1, 2]", "space: [1, 2]\n", "section 'space' must be a mapping"),
        config_case("space: layers=2", "space: layers=2\n", "section 'space' must be a mapping"),
        config_case("unknown section", "spaec:\n  layers: 2\n", "unknown section 'spaec'"),
        config_case("unknown key", "space:\n  layrs: 2\n", "unknown key 'layrs'"),
        config_case("wrong type", "space:\n  layers: two\n", "layers: expected an integer, got 'two'"),
        config_case("python tag", lambda tmp: f"space: !!python/object/apply:os.system ['touch {tmp}/PWNED']\n",
                    "c.yaml: not valid YAML"),
        config_case("alias bomb (466 bytes)", BILLION_LAUGHS, "more than 1,000,000 values"),
        config_case("100k-deep JSON", "[" * 100_000 + "]" * 100_000, "c.yaml: nested"),
        config_case("20 MB", "#" * (20 << 20), "c.yaml: the config file is 21.0 MB, more than the limit"),
        config_case("lr: .nan", "train:\n  lr: .nan\n", "[train]: lr: expected a finite number, got nan"),
        config_case("lr: .inf", "search:\n  lr: .inf\n", "[search]: lr: expected a finite number, got inf"),
        # --- --set overrides ----------------------------------------------------------------------------
        set_case("unclosed", ["space.layers=["], "override 'space.layers=[': not valid YAML"),
        Case("--set python tag", lambda tmp, a: (["space", *T, "--set",
                                                  f"space.name=!!python/object/apply:os.system ['touch {tmp}/PWNED']"],
                                                 "not valid YAML")),
        set_case("unknown section", ["nosuch.key=1"], "override 'nosuch.key=1': expected SECTION.KEY=VALUE"),
        set_case("no value", ["space.layers"], "override 'space.layers': expected SECTION.KEY=VALUE"),
        set_case("layers 5000", ["space.layers=5000"], "layers must be at most 64, got 5000"),
        set_case("huge channels", ["space.channels=[4096,8192,12288]"], "channels must be at most 2048"),
        set_case("supernet too big", ["space.layers=40", "space.channels=[1024,2048,2048]"],
                 "the supernet would hold about"),
        set_case("num_train 1e8", ["data.num_train=100000000"], "num_train must be at most 1e+06, got 100000000"),
        set_case("builtin too big", ["data.num_train=900000", "data.image_size=[512,1024]"],
                 "the built-in dataset of num_train=900000"),
        set_case("lr nan", ["train.lr=.nan"], "lr: expected a finite number, got nan"),
        set_case("lr negative", ["train.lr=-1"], "lr must be > 0, got -1"),
        set_case("paths_per_node 5", ["space.paths_per_node=5"], "paths_per_node=5 is more than the incoming paths"),
        set_case("batch 0", ["data.batch_size=0"], "batch_size must be >= 1, got 0"),
        set_case("dataset spec", ["data.dataset=foo"], "dataset 'foo': expected builtin"),
        set_case("layers 2.5", ["space.layers=2.5"], "layers: expected an integer, got 2.5"),
        set_case("epochs huge", ["train.epochs=10000000"], "epochs must be at most", command="train"),
        # --- architecture files -------------------------------------------------------------------------
        arch_case("missing", lambda tmp, a: tmp / "none.json", "none.json: architecture file not found"),
        arch_case("not JSON", lambda tmp, a: _write(tmp / "a.json", "{nope"), "a.json: not valid JSON"),
        arch_case("a list", lambda tmp, a: _write(tmp / "a.json", "[1, 2]"), "a.json: expected a JSON object"),
        arch_case("unknown label", _arch_edit(lambda x: x.update({"cell/node9/op0": "conv_3x3"})),
                  "unknown label 'cell/node9/op0'"),
        arch_case("missing label", _arch_edit(lambda x: x.pop("cell/node0/op0")), "missing label 'cell/node0/op0'"),
        arch_case("unknown op", _arch_edit(lambda x: x.update({"cell/node0/op0": "conv_99x99"})),
                  "'cell/node0/op0' has unknown op 'conv_99x99'"),
        arch_case("index out of range", _arch_edit(lambda x: x.update({k: [0, 9] for k in x if k.endswith("/paths")})),
                  "index 9 out of range"),
        arch_case("17 MB", lambda tmp, a: _write(tmp / "a.json", json.dumps({"x": "y" * (17 << 20)})),
                  "a.json: the architecture file is 17.8 MB, more than the limit"),
        arch_case("100k-deep JSON", lambda tmp, a: _write(tmp / "a.json", "[" * 100_000 + "]" * 100_000),
                  "a.json: nested too deeply"),
        arch_case("a FIFO", lambda tmp, a: _fifo(tmp / "a.json"),
                  "a.json: the architecture file is not a regular file"),
        # --- data ----------------------------------------------------------------------------------------
        Case("data: folder missing", lambda tmp, a: (["data", *T, "--data", f"folder:{tmp / 'none'}"],
                                                     "none: dataset root folder not found")),
        data_case("image is a FIFO", lambda r: (os.remove(r / "train/images/im0.png"),
                                                _fifo(r / "train/images/im0.png"))[1]),
        data_case("mask of another size", lambda r: (_png(r / "train/masks/im1.png", np.zeros((16, 16), np.uint8)),
                                                     r / "train/masks/im1.png")[1]),
        data_case("labels outside the classes", lambda r: (_png(r / "val/masks/im0.png",
                                                                np.full((32, 64), 77, np.uint8)),
                                                           r / "val/masks/im0.png")[1]),
        data_case("corrupt image", lambda r: _write(r / "train/images/im1.png", b"\x89PNG garbage")),
        data_case("image without mask",
                  lambda r: (os.remove(r / "train/masks/im0.png"), r / "train/images/im0.png")[1]),
        Case("data: classes differ from the space", lambda tmp, a: (
            ["train", *T, "--arch", str(a.arch), "--data", f"folder:{make_folder_dataset(tmp / 'ds', 3)}",
             "--out", str(tmp / "out")], "space.num_classes is 11 but dataset folder:")),
        # --- model files -----------------------------------------------------------------------------------
        model_case("missing", "export", lambda tmp, a: tmp / "none.pt", "none.pt: model file not found"),
        model_case("garbage", "export", lambda tmp, a: _write(tmp / "m.pt", b"not a model"),
                   "m.pt: not a model.pt, TorchScript or ONNX file"),
        model_case("malicious pickle", "export", lambda tmp, a: a.evil_zip, "cannot load the model.pt"),
        model_case("a FIFO", "export", lambda tmp, a: _fifo(tmp / "m.pt"),
                   "m.pt: the model file is not a regular file"),
        model_case("NaN weights", "export", lambda tmp, a: a.nan_model, "weights are NaN or infinite"),
        model_case("NaN weights", "evaluate", lambda tmp, a: a.nan_model, "weights are NaN or infinite"),
        model_case("channels [4096, 8192, 12288]", "evaluate", lambda tmp, a: a.huge_model,
                   "channels must be at most 2048"),
        # evaluate and predict run TorchScript and ONNX files; export needs the model.pt
        model_case("a TorchScript file", "export", lambda tmp, a: a.torchscript,
                   "a TorchScript file, not a model.pt (use it with evaluate or predict)"),
        model_case("an ONNX file", "export", lambda tmp, a: a.onnx,
                   "an onnx file, not a model.pt (use it with evaluate or predict)"),
        model_case("garbage .onnx", "evaluate", lambda tmp, a: _write(tmp / "m.onnx", b"\x08\x01garbage"),
                   "m.onnx: not a model.pt, TorchScript or ONNX file"),
        model_case("garbage .onnx", "predict", lambda tmp, a: _write(tmp / "m.onnx", b"\x08\x01garbage"),
                   "m.onnx: not a model.pt, TorchScript or ONNX file"),
        model_case("empty .onnx", "predict", lambda tmp, a: _write(tmp / "m.onnx", b""),
                   "m.onnx: not a model.pt, TorchScript or ONNX file"),
        model_case("truncated .onnx", "predict", lambda tmp, a: _copy(a.onnx, tmp / "m.onnx", 300),
                   "m.onnx: not a model.pt, TorchScript or ONNX file"),
        Case("predict: image is a FIFO", lambda tmp, a: (
            ["predict", "--model", str(a.model), "--input", str(_fifo(tmp / "in" / "x.png").parent), "--out",
             str(tmp / "out")], "x.png: the image file is not a regular file"), timeout=30),
        Case("predict: input folder missing", lambda tmp, a: (
            ["predict", "--model", str(a.model), "--input", str(tmp / "none"), "--out", str(tmp / "out")],
            "none: input folder not found")),
        # --- resume ---------------------------------------------------------------------------------------
        resume_case("truncated", "train", lambda out, a: _copy(a.train_dir / "last.ckpt", out / "last.ckpt", 2000),
                    "last.ckpt: cannot load the training checkpoint"),
        resume_case("malicious pickle", "train", lambda out, a: _copy(a.evil_pickle, out / "last.ckpt"),
                    "last.ckpt: cannot load the training checkpoint"),
        resume_case("another architecture", "train", lambda out, a: _copy(a.train_dir / "last.ckpt", out / "last.ckpt"),
                    "--resume with a different architecture", extra=["--arch", "ARCH2"]),
        resume_case("another config", "train", lambda out, a: _copy(a.train_dir / "last.ckpt", out / "last.ckpt"),
                    f"different config (train.lr is {defaults.train.lr:g} in the checkpoint, 0.0123 now)",
                    extra=["--set", "train.lr=0.0123"]),
        resume_case("truncated", "search", lambda out, a: _copy(a.search_dir / "checkpoint.pt", out / "checkpoint.pt",
                                                                 3000),
                    "checkpoint.pt: cannot load the search checkpoint"),
        resume_case("malicious pickle", "search", lambda out, a: _copy(a.evil_zip, out / "checkpoint.pt"),
                    "checkpoint.pt: cannot load the search checkpoint"),
        resume_case("another config", "search", lambda out, a: _copy(a.search_dir / "checkpoint.pt",
                                                                     out / "checkpoint.pt"),
                    f"different config (search.arc_lr is {defaults.search.arc_lr:g} in the checkpoint, 0.0123 now)",
                    extra=["--set", "search.arc_lr=0.0123"]),
        # --- cost tables ---------------------------------------------------------------------------------------
        Case("search: cost table is a pickle", lambda tmp, a: (
            ["search", *T, "--out", str(tmp / "out"), "--set", f"search.lut={_copy(a.evil_pickle, tmp / 'lut.json')}",
             "--set", "search.target_latency_ms=3"], "lut.json: the cost table is not UTF-8")),
        Case("search: cost table not an object", lambda tmp, a: (
            ["search", *T, "--out", str(tmp / "out"), "--set", f"search.lut={_write(tmp / 'lut.json', '[1]')}",
             "--set", "search.target_latency_ms=3"], "lut.json: expected a JSON object")),
        # --- outputs --------------------------------------------------------------------------------------------
        Case("search: --out is a file", lambda tmp, a: (["search", *T, "--out", str(_write(tmp / "out", "x"))],
                                                        "out: expected a folder for the output folder, found a file")),
        Case("train: --out is a file", lambda tmp, a: (["train", *T, "--arch", str(a.arch), "--out",
                                                        str(_write(tmp / "out", "x"))], "out: expected a folder")),
        Case("export: --out in a read-only place", lambda tmp, a: (
            ["export", "--checkpoint", str(a.model), "--format", "torchscript", "--out", "/proc/nni-rspnet/m.pt"],
            "/proc/nni-rspnet: cannot create the output folder")),
        Case("export: --out is a folder", lambda tmp, a: (
            ["export", "--checkpoint", str(a.model), "--format", "torchscript", "--out", str((tmp / "out").mkdir()
                                                                                            or tmp / "out")],
            "out: is a folder; expected the path of a file")),
        Case("export: disk full", lambda tmp, a: (
            ["export", "--checkpoint", str(a.model), "--format", "torchscript", "--out", str(tmp / "out" / "m.pt")],
            "m.pt: cannot write (File too large)"), context=file_size_limit),
        # --- command-line arguments ---------------------------------------------------------------------------------
        Case("train: --device cuda without CUDA", lambda tmp, a: (
            ["train", *T, "--arch", str(a.arch), "--out", str(tmp / "out"), "--device", "cuda"],
            "--device cuda: CUDA is not available"), skip=_no_cuda),
        Case("train: --device nonsense", lambda tmp, a: (
            ["train", *T, "--arch", str(a.arch), "--out", str(tmp / "out"), "--device", "gpu9"],
            "--device 'gpu9': not a device")),
        Case("evaluate: --stride 0 0", lambda tmp, a: (
            ["evaluate", *T, "--checkpoint", str(a.model), "--mode", "slide", "--window", "16", "16", "--stride", "0",
             "0", "--out", str(tmp / "out")], "argument --stride: expected an integer in [1, 16384], got 0")),
        Case("evaluate: --window 0 0", lambda tmp, a: (
            ["evaluate", *T, "--checkpoint", str(a.model), "--mode", "slide", "--window", "0", "0",
             "--out", str(tmp / "out")], "argument --window: expected an integer in [1, 16384], got 0")),
        Case("evaluate: slide without --window", lambda tmp, a: (
            ["evaluate", *T, "--checkpoint", str(a.model), "--mode", "slide", "--out", str(tmp / "out")],
            "--mode slide needs --window H W")),
        Case("export-search-space: --extra [1,2]", lambda tmp, a: (
            ["export-search-space", *T, "--out", str(tmp / "out" / "s.json"), "--extra", "[1,2]"],
            "expected a JSON object of SECTION.KEY -> {_type, _value}, got list")),
        Case("export-search-space: --extra not JSON", lambda tmp, a: (
            ["export-search-space", *T, "--out", str(tmp / "out" / "s.json"), "--extra", "{nope"],
            "--extra: not valid JSON")),
        Case("export: --input-size 0 0", lambda tmp, a: (
            ["export", "--checkpoint", str(a.model), "--format", "onnx", "--out", str(tmp / "out" / "m.onnx"),
             "--input-size", "0", "0"], "argument --input-size: expected an integer in [1, 16384], got 0")),
        Case("latency-table: --repeats 0", lambda tmp, a: (
            ["latency-table", *T, "--out", str(tmp / "out" / "lut.json"), "--repeats", "0"],
            "argument --repeats: expected an integer in [1, 1000], got 0")),
        Case("experiment: --host not an address", lambda tmp, a: (
            ["experiment", "create", "--config", str(ROOT / "experiment_configs" / "macro.yml"), "--host",
             "example.com", "--port", "1"], "--host 'example.com': not an IP address")),
        Case("experiment: --host another machine", lambda tmp, a: (
            ["experiment", "create", "--config", str(ROOT / "experiment_configs" / "macro.yml"), "--host",
             "192.0.2.10", "--port", "1"], "--host 192.0.2.10: nnictl looks for its manager on localhost")),
        Case("experiment: config missing", lambda tmp, a: (
            ["experiment", "create", "--config", str(tmp / "none.yml")], "none.yml: experiment config not found")),
        Case("report: no such experiment", lambda tmp, a: (["report", str(tmp / "none"), "--out", str(tmp / "out")],
                                                           "none: no such experiment folder")),
        # --- divergence ---------------------------------------------------------------------------------------------
        Case("train: lr 1e6 diverges", lambda tmp, a: (
            ["train", *T, "--arch", str(a.arch), "--out", str(tmp / "out"), "--no-progress",
             *sets(["train.epochs=2", "train.lr=1e6", "train.threads=1"])], "the training diverged"),
            results=("model.pt",), slow=True),
        Case("search: lr 1e6 diverges", lambda tmp, a: (
            ["search", *T, "--out", str(tmp / "out"), *sets(QUICK + ["search.lr=1e6"])], "the search diverged"),
            results=("arch.json", "probs.json", "result.json"), slow=True),
        # --- Ctrl-C -----------------------------------------------------------------------------------------------
        Case("train: Ctrl-C in epoch 2", lambda tmp, a: (
            ["train", *T, "--arch", str(a.arch), "--out", str(tmp / "out"), "--no-progress",
             *sets(["train.epochs=200", "train.threads=1"])],
            (f"interrupted (Ctrl-C); the last good checkpoint is {tmp / 'out'}/last.ckpt (after epoch ",
             " of 200); run the same command with --resume to continue; no result was written")),
            status=130, results=("model.pt",), signal_after=lambda tmp: (tmp / "out" / "last.ckpt").exists(),
            slow=True),
        Case("search: Ctrl-C in stage 1", lambda tmp, a: (
            ["search", *T, "--out", str(tmp / "out"),
             *sets(QUICK + ["search.warmup_epochs=1", "search.stage1_epochs=200"])],
            (f"interrupted (Ctrl-C); the last good checkpoint is {tmp / 'out'}/checkpoint.pt (stage 1, epoch ",
             " of 201); run the same command with --resume to continue; no result was written")),
            status=130, results=("arch.json", "probs.json", "result.json"),
            signal_after=_history_len(Path("out/history.json"), 1), slow=True),
        Case("search: Ctrl-C in stage 2", lambda tmp, a: (
            ["search", *T, "--out", str(tmp / "out"),
             *sets(QUICK + ["search.warmup_epochs=0", "search.stage1_epochs=1", "search.stage2_epochs=200"])],
            (f"interrupted (Ctrl-C); the last good checkpoint is {tmp / 'out'}/checkpoint.pt (stage 2, epoch ",
             " of 200); run the same command with --resume to continue; no result was written")),
            status=130, results=("arch.json", "probs.json", "result.json"),
            signal_after=_history_len(Path("out/history.json"), 2), slow=True),
    ]
    return rows


# --- running and judging -------------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: Optional[int]
    stderr: str
    stdout: str = ""
    error: Optional[str] = None      # an exception that escaped (its traceback)
    hung: bool = False
    seconds: float = 0.0


class _Hang(BaseException):
    pass


def snapshot(path: Path) -> Optional[Dict[str, Tuple[int, int]]]:
    """Every file below ``path`` with its size and modification time (``None``: absent)."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_dir():
        st = path.stat()
        return {".": (st.st_size, st.st_mtime_ns)}
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_size, st.st_mtime_ns)
    return out


def _replace(argv: List[str], tmp: Path, assets: Assets) -> List[str]:
    if "ARCH2" in argv:  # another architecture of the same space
        from nni_rspnet.config import RunConfig
        from nni_rspnet.space.arch import random_arch, save_arch

        space = RunConfig.load(TINY, T_SETS).space
        other = tmp / "arch2.json"
        save_arch(random_arch(space, 7), other, space)
        argv = [str(other) if a == "ARCH2" else a for a in argv]
    return argv


@contextlib.contextmanager
def captured_fds() -> Iterator[List[io.BytesIO]]:
    """Captures file descriptors 1 and 2 too: what logging handlers bound to the original streams, and
    C code, write (``redirect_stderr`` alone would miss it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    texts: List[io.BytesIO] = [io.BytesIO(), io.BytesIO()]
    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        yield texts
    finally:
        for fd, keep in zip((1, 2), saved):
            os.dup2(keep, fd)
            os.close(keep)
        for f, text in zip(files, texts):
            f.seek(0)
            text.write(f.read())
            f.close()


def run_in_process(argv: List[str], timeout: float, context=None, tmp: Optional[Path] = None) -> Outcome:
    from nni_rspnet.cli import main

    err, out = io.StringIO(), io.StringIO()
    status, error, hung = None, None, False
    fds: List[io.BytesIO] = []

    def alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.time()
    try:
        with captured_fds() as fds, contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), \
                (context(tmp) if context else contextlib.nullcontext()):
            status = main(argv)
    except _Hang:
        hung = True
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - an escaped exception is the finding
        error = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    fd_out, fd_err = (f.getvalue().decode("utf-8", "replace") for f in fds) if fds else ("", "")
    return Outcome(status, fd_err + err.getvalue(), fd_out + out.getvalue(), error, hung, time.time() - start)


def run_interrupted(argv: List[str], tmp: Path, ready: Callable[[Path], bool], timeout: float) -> Outcome:
    """Runs the CLI in a subprocess, sends SIGINT once ``ready(tmp)`` holds, and waits for it to stop.

    Its output goes to files, not pipes: a pipe nobody reads while we wait could fill and block the
    command before it gets to its first checkpoint. A command still running at ``timeout`` is a hang;
    it gets SIGABRT first, so Python's faulthandler writes every thread's stack to its stderr, and the
    failure shows where it hung.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.time()
    hung = False
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        # A shell starts background jobs with SIGINT ignored, and the child would inherit that (Python keeps
        # an ignored SIGINT ignored): the command gets Ctrl-C's default, as in a terminal, wherever it runs.
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "nni_rspnet.cli", *argv], cwd=ROOT,
                                env=env, stdout=out_file, stderr=err_file, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            while proc.poll() is None and not ready(tmp) and time.time() - start < timeout:
                time.sleep(0.05)
            if proc.poll() is None and ready(tmp):
                time.sleep(0.3)  # into the next epoch
                proc.send_signal(signal.SIGINT)
            proc.wait(timeout=max(5.0, timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            hung = True
            proc.send_signal(signal.SIGABRT)  # faulthandler: the stacks to stderr
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    return Outcome(None if hung else proc.returncode, err, out, hung=hung, seconds=time.time() - start)


def run_case(case: Case, tmp: Path, assets: Assets) -> Tuple[Outcome, List[str], str, Path, object]:
    argv, culprit = case.setup(tmp, assets)
    argv = _replace([str(a) for a in argv], tmp, assets)
    out = tmp / case.out
    before = snapshot(out)
    if case.signal_after is not None:
        outcome = run_interrupted(argv, tmp, case.signal_after, case.timeout)
    else:
        outcome = run_in_process(argv, case.timeout, case.context, tmp)
    return outcome, argv, culprit, out, before


def judge(case: Case, outcome: Outcome, culprit: str, out: Path, before, marker: Optional[Path] = None,
          tmp: Optional[Path] = None) -> Tuple[str, str]:
    """``(verdict, why)``: verdict one of clear, traceback, silent, hang, unclear."""
    if outcome.hung:
        stacks = outcome.stderr.split("\nExtension modules:")[0]  # faulthandler's stacks, without its module list
        return "hang", f"no answer within {case.timeout:.0f} s; the end of its stderr: {stacks[-3000:]}"
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.error or any(line.startswith("Traceback") for line in lines):
        return "traceback", (outcome.error or outcome.stderr).strip().splitlines()[-1][:300]
    if outcome.status == 0:
        return "silent", "exit status 0"
    for m in filter(None, [marker, tmp / "PWNED" if tmp else None]):
        if m.exists():
            return "unclear", f"a pickle or YAML tag ran code: {m} exists"
    if outcome.status != case.status:
        return "unclear", f"exit status {outcome.status}, expected {case.status}: {lines[-1:]}"
    if len(lines) != 1:
        return "unclear", f"{len(lines)} lines on stderr: {lines[:3]}"
    for part in (culprit,) if isinstance(culprit, str) else culprit:
        if part not in lines[0]:
            return "unclear", f"the line does not name {part!r}: {lines[0][:300]}"
    if case.results:
        left = [name for name in case.results if (out / name).exists()]
        if left:
            return "unclear", f"results written: {left}"
    elif snapshot(out) != before:
        return "unclear", f"{out} changed"
    return "clear", lines[0]


def main(argv: Optional[List[str]] = None) -> int:
    """Runs every case and prints the counts and each row that is not clear."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    counts = {k: 0 for k in ("clear", "traceback", "silent", "hang", "unclear", "skipped")}
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as scratch:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assets = make_assets(Path(scratch) / "assets")
        for i, case in enumerate(cases()):
            why_skip = case.skip() if case.skip else None
            if why_skip:
                counts["skipped"] += 1
                print(f"  skipped  {case.name}: {why_skip}")
                continue
            tmp = Path(scratch) / f"case{i}"
            tmp.mkdir()
            outcome, _, culprit, out, before = run_case(case, tmp, assets)
            verdict, why = judge(case, outcome, culprit, out, before, assets.marker, tmp)
            counts[verdict] += 1
            print(f"  {verdict:<9} {case.name}  ({outcome.seconds:.1f} s)" + ("" if verdict == "clear" else f": {why}"))
    rows = sum(counts.values())
    print(f"rows {rows}: clear {counts['clear']}, traceback {counts['traceback']}, silent {counts['silent']}, "
          f"hang {counts['hang']}, unclear {counts['unclear']}, skipped {counts['skipped']}")
    return 0 if counts["clear"] + counts["skipped"] == rows else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
