"""Shipping a trained network: self-describing checkpoints, TorchScript and ONNX export, prediction.

``model.pt`` is a plain dict ``{"format", "space", "arch", "state_dict", "meta"}`` (loadable with
``torch.load(..., weights_only=True)``): the space config and the architecture rebuild the network,
``meta`` holds the class names, the dataset and the normalisation. Exported TorchScript files carry
the same ``meta`` as an extra file, ONNX files as metadata properties, so ``predict`` works from any
of the three.
"""
from __future__ import annotations

import copy
import io
import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import ArchError, ConfigError, DataError, ModelFileError
from ..fileio import MAX_TORCH_BYTES, atomic_path, atomic_write_bytes, check_file, human_size, read_bytes, save_torch, \
    short, torch_from_bytes
from ..space.arch import build_network
from ..runtimes import OrtNetwork, fold_checked
from ..space.model import SpaceConfig
from .cityscapes import check_cityscapes_classes, find_images, prediction_name, predictions_to_label_ids, save_label_ids
from .datasets import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES, read_image
from .guard import count_nonfinite
from .progress import iterate
from .transforms import IMAGENET_MEAN, IMAGENET_STD
from .visual import colourise, palette

FORMAT = "nni-rspnet-model/1"


def save_model(net: nn.Module, path: str, space: Optional[Dict[str, Any]] = None,
               arch: Optional[Dict[str, Any]] = None, meta: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``net``'s weights with everything needed to rebuild it (atomically).

    Args:
        net: the trained network.
        path: output file, conventionally ``model.pt``.
        space: ``SpaceConfig.to_dict()``; ``None`` takes ``net.config`` when the network has one.
        arch: the architecture dict ``build_network`` was given.
        meta: class names, dataset, normalisation, metrics (JSON-able values).
    """
    if space is None and hasattr(net, "config"):
        space = net.config.to_dict()
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "space": space, "arch": arch, "state_dict": state,
               "meta": json.loads(json.dumps(meta or {}))}
    save_torch(payload, path)


MODEL_KINDS = ("model.pt", "torchscript", "onnx")


def read_model_file(path: str) -> Tuple[str, bytes]:
    """``(kind, bytes)`` of a model file, ``kind`` one of ``MODEL_KINDS``, told by the content (not the name).

    Read through ``fileio.read_bytes``: a regular file of bounded size only.

    Raises:
        ModelFileError: missing, not a regular file, too large, or none of the three kinds.
    """
    data = read_bytes(path, "model file", ModelFileError, MAX_TORCH_BYTES)
    if data[:4] == b"PK\x03\x04":  # torch.save and torch.jit.save both write zip archives
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise ModelFileError(f"{path}: a damaged zip archive ({err}); expected a model.pt, TorchScript or "
                                 f"ONNX file") from None
        return ("torchscript" if any("/code/" in name for name in names) else "model.pt"), data
    if _parse_onnx(data) is not None:
        return "onnx", data
    raise ModelFileError(f"{path}: not a model.pt, TorchScript or ONNX file ({human_size(len(data))} of something "
                         f"else)")


def _parse_onnx(data: bytes):
    """The ``onnx.ModelProto`` in ``data``, or ``None`` when it is not an ONNX model with a graph."""
    if not data:
        return None
    import onnx  # onnx and onnxruntime load only for ONNX files: training and TorchScript never pay for them
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError, TypeError):
        return None
    if model.ir_version < 1 or not model.graph.node or not model.graph.input:
        return None
    return model


def is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/``) rather than a ``model.pt``."""
    try:
        return read_model_file(path)[0] == "torchscript"
    except ModelFileError:
        return False


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Reads a ``model.pt`` written by ``save_model`` (``weights_only=True``) and checks it before anything
    is built: its keys, its space config (with the space's upper bounds) and that every weight is finite.

    Raises:
        ModelFileError: naming the file and what is wrong.
    """
    kind, data = read_model_file(path)
    if kind != "model.pt":
        raise ModelFileError(f"{path}: a{'n' if kind == 'onnx' else ''} {kind if kind == 'onnx' else 'TorchScript'} "
                             f"file, not a model.pt (use it with evaluate or predict)")
    payload = torch_from_bytes(data, path, "model.pt written by nni-rspnet train", ModelFileError)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a model.pt written by nni-rspnet train (no {FORMAT!r} marker)")
    for key in ("space", "arch", "state_dict"):
        if not payload.get(key):
            raise ModelFileError(f"{path}: missing {key!r}; cannot rebuild the network")
    weights = payload["state_dict"]
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise ModelFileError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    try:  # the bounds of the space are checked here, before a network of the stored size is built
        payload["space"] = SpaceConfig.from_dict(payload["space"], where="stored space config").to_dict()
    except ConfigError as err:
        raise ModelFileError(f"{path}: {err}") from None
    bad = count_nonfinite(payload["state_dict"].values())
    if bad:
        raise ModelFileError(f"{path}: {bad:,} weights are NaN or infinite; the training that wrote it diverged")
    return payload


def load_model(path: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Rebuilds the network of a ``model.pt`` and loads its weights (eval mode, on ``device``)."""
    payload = load_checkpoint(path)
    try:
        net = build_network(payload["space"], payload["arch"])
    except (ArchError, ConfigError) as err:
        raise ModelFileError(f"{path}: {err}") from None
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ModelFileError(f"{path}: weights do not fit the stored architecture ({short(str(err), 300)})") from None
    return net.to(device).eval()


def model_meta(path: str) -> Dict[str, Any]:
    """The ``meta`` dict of a ``model.pt``, TorchScript or ONNX file written by this module."""
    kind, data = read_model_file(path)
    if kind == "onnx":
        props = {p.key: p.value for p in _parse_onnx(data).metadata_props}
        return _meta_json(props.get("nni_rspnet_meta", "{}"), path)
    if kind == "model.pt":
        return load_checkpoint(path).get("meta") or {}
    extra = {"meta.json": ""}
    _load_torchscript(data, path, "cpu", extra)
    return _meta_json(extra["meta.json"] or "{}", path)


def _meta_json(text: str, path: str) -> Dict[str, Any]:
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: its metadata is not a JSON object")
    return meta


def _load_torchscript(data: bytes, path: str, device: Union[str, torch.device] = "cpu",
                      extra: Optional[Dict[str, str]] = None) -> torch.jit.ScriptModule:
    try:
        return torch.jit.load(io.BytesIO(data), map_location=device, _extra_files=extra or {})
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError and others for a damaged archive
        raise ModelFileError(f"{path}: cannot load the TorchScript file ({short(' '.join(str(err).split()), 160)})") \
            from None


def export_torchscript(net: nn.Module, path: str, meta: Optional[Dict[str, Any]] = None,
                       check_input: Optional[torch.Tensor] = None, fold: bool = True) -> torch.jit.ScriptModule:
    """Scripts ``net`` (``torch.jit.script``, so any input size works), saves it atomically with
    ``meta`` as the extra file ``meta.json``, and returns the scripted module.

    With ``fold``, BatchNorm is folded into the convolutions first (``runtimes.fold_checked``: checked
    on ``check_input`` or a random image). With ``check_input``, the serialised module is loaded back
    and its output compared to ``net``'s before anything is written (``ModelFileError`` beyond 1e-4, or
    NaN: see ``check_parity``).
    """
    net = net.cpu().eval()
    scripted = torch.jit.script(_folded(net, check_input, path) if fold else net)
    buf = io.BytesIO()  # in memory first: torch's own file writer derives a name from the file's
    torch.jit.save(scripted, buf, _extra_files={"meta.json": json.dumps(meta or {})})
    if check_input is not None:
        with torch.no_grad():
            diff = (torch.jit.load(io.BytesIO(buf.getvalue()))(check_input) - net(check_input)).abs().max().item()
        check_parity(diff, path, "TorchScript")
    atomic_write_bytes(path, buf.getvalue())
    return scripted


def check_parity(diff: float, path: str, what: str, tolerance: float = 1e-4) -> float:
    """``diff`` (largest difference of an exported file's output from PyTorch's) if within ``tolerance``.

    Written so that NaN fails (``nan > 1e-4`` is False, and so is ``nan <= 1e-4``).

    Raises:
        ModelFileError: naming the file and the difference.
    """
    if not diff <= tolerance:
        raise ModelFileError(f"{path}: {what} output differs from PyTorch by {diff:.2e} (more than {tolerance:g}); "
                             f"no file was written")
    return diff


def export_onnx(net: nn.Module, path: str, input_size: Sequence[int], meta: Optional[Dict[str, Any]] = None,
                opset: int = 17, check: bool = True, fold: bool = True, dynamic_size: bool = True) -> float:
    """Exports ``net`` to ONNX (TorchScript-based exporter, ``dynamo=False``), traced on ``[2, C, H, W]``
    inputs of ``input_size = (H, W)``; the batch is dynamic, and with ``dynamic_size`` (the default) so
    are the height and width, so ``evaluate`` and ``predict`` run the file at any image size. With
    ``fold``, BatchNorm is folded into the convolutions first (checked, ``runtimes.fold_checked``).
    Adds ``meta`` as metadata and, with ``check``, runs the file in onnxruntime and returns the largest
    difference from ``net`` (unfolded).

    Raises:
        ModelFileError: the folded network or the onnxruntime output differs from PyTorch by more than
            1e-4 (or is NaN); nothing is written then.
    """
    import onnx  # only for ONNX, see model_meta

    net = net.cpu().eval()
    h, w = int(input_size[0]), int(input_size[1])
    c = _in_channels(net)
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    # Always a copy: the exporter's eval-mode passes can change the exported module's weights in place.
    exported = _folded(net, x, path) if fold else copy.deepcopy(net)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with atomic_path(path) as tmp:  # checked before it is renamed into place: a failed check writes nothing
        torch.onnx.export(exported, (x,), tmp, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": axes, "logits": axes})
        model = onnx.load(tmp)
        onnx.checker.check_model(model)
        entry = model.metadata_props.add()
        entry.key, entry.value = "nni_rspnet_meta", json.dumps(meta or {})
        onnx.save(model, tmp)
        if not check:
            return float("nan")
        import onnxruntime as ort  # only for ONNX, see _parse_onnx

        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        out = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = net(x).numpy()
        diff = check_parity(float(np.abs(out - ref).max()), path, "onnxruntime")
    return diff


def _folded(net: nn.Module, x: Optional[torch.Tensor], path: str) -> nn.Module:
    """``net`` with BatchNorm folded into its convolutions, checked on ``x`` (default: a random image)."""
    if x is None:
        x = torch.randn(1, _in_channels(net), 64, 128, generator=torch.Generator().manual_seed(0))
    try:
        return fold_checked(net, x)[0]
    except ValueError as err:
        raise ModelFileError(f"{path}: {err}; no file was written (export with fold=False / --no-fold)") from None


def _in_channels(net: nn.Module) -> int:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


class Predictor:
    """Runs a ``model.pt``, TorchScript ``.pt`` or ``.onnx`` file on RGB uint8 images.

    Args:
        model_path: the model file.
        device: torch device for ``model.pt`` and TorchScript files.
    """

    def __init__(self, model_path: str, device: str = "cpu"):
        self.path, self.device = model_path, device
        kind, data = read_model_file(model_path)  # by content: an ONNX file need not end in .onnx
        self.meta = model_meta(model_path)
        self.mean = self.meta.get("mean", IMAGENET_MEAN)
        self.std = self.meta.get("std", IMAGENET_STD)
        self.session = None
        self.input_hw: Optional[Tuple[int, int]] = None
        if kind == "onnx":
            import onnxruntime as ort  # only for ONNX, see _parse_onnx

            try:
                self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                shape = self.session.get_inputs()[0].shape
                # None: exported with a dynamic size (runs at the image's own size)
                self.input_hw = (int(shape[2]), int(shape[3])) if all(isinstance(d, int) for d in shape[2:4]) else None
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
                raise ModelFileError(f"{model_path}: onnxruntime cannot run this ONNX file "
                                     f"({short(' '.join(str(err).split()), 160)})") from None
        elif kind == "torchscript":
            self.net = _load_torchscript(data, model_path, device).eval()
        else:
            self.net = load_model(model_path, device)

    @torch.no_grad()
    def logits(self, image: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` logits for one ``H x W x 3`` uint8 image (ONNX inputs are resized to the
        exported size and the logits resized back)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
        x = ((x - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)).unsqueeze(0)
        h, w = x.shape[-2:]
        if self.session is not None:
            size = self.input_hw or (h, w)
            xin = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False) \
                if tuple(size) != (h, w) else x
            out = torch.from_numpy(self.session.run(None, {"image": xin.numpy()})[0])
            if tuple(size) != (h, w):
                out = torch.nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            return out[0].numpy()
        return self.net(x.to(self.device))[0].cpu().numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``H x W`` uint8 class indices."""
        return self.logits(image).argmax(0).astype(np.uint8)


def save_mask_png(mask: np.ndarray, path: str, colours: Optional[np.ndarray] = None) -> None:
    """Writes class indices as a palette PNG: pixel values are the indices, the palette colours them."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    if colours is not None:
        im.putpalette(colours.astype(np.uint8).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


PREDICTION_FORMATS = ("palette", "cityscapes")


def predict_folder(model_path: str, in_dir: str, out_dir: str, device: str = "cpu",
                   overlay: bool = False, fmt: str = "palette") -> List[str]:
    """Predicts the images of ``in_dir`` into ``out_dir``; returns the mask paths.

    Args:
        model_path: a ``model.pt``, TorchScript or ONNX file.
        in_dir: the images; with ``fmt="cityscapes"``, every ``*_leftImg8bit.png`` below it (city
            sub-folders included, as in ``leftImg8bit/val``).
        out_dir: where the masks go (created).
        device: torch device.
        overlay: also write ``<stem>_overlay.jpg``, the mask blended over the image.
        fmt: ``palette``: ``<stem>.png``, palette PNGs whose values are class indices; ``cityscapes``:
            one flat folder of single-channel Cityscapes label-id PNGs named as the input images, what
            the benchmark server and the official evaluator read (the model must predict the 19
            Cityscapes classes).

    Raises:
        DataError: ``in_dir`` is missing, holds no image, or an image cannot be read (names the file);
            a Cityscapes format for a model of other classes.
    """
    if fmt not in PREDICTION_FORMATS:
        raise ValueError(f"fmt must be one of {list(PREDICTION_FORMATS)}, got {fmt!r}")
    if fmt == "cityscapes":
        paths = find_images(in_dir)
    else:
        if not os.path.isdir(in_dir):
            raise DataError(f"{in_dir}: input folder not found")
        paths = [os.path.join(in_dir, f) for f in sorted(os.listdir(in_dir)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not paths:
            raise DataError(f"{in_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    for path in paths:  # every input checked before anything is written (a FIFO named x.png, a folder, ...)
        check_file(path, "image file", DataError, MAX_IMAGE_BYTES)
    predictor = Predictor(model_path, device)
    classes = predictor.meta.get("classes", [])
    if fmt == "cityscapes":
        check_cityscapes_classes(classes, model_path)
    colours = palette(len(classes) or 256, predictor.meta.get("dataset", "builtin"))
    written = []
    for path in iterate(paths, "predict", enabled=len(paths) >= 5, unit="images"):
        image = read_image(path)
        mask = predictor.predict(image)
        stem = os.path.splitext(os.path.basename(path))[0]
        if fmt == "cityscapes":
            out = os.path.join(out_dir, prediction_name(path))
            save_label_ids(predictions_to_label_ids(mask), out)
        else:
            out = os.path.join(out_dir, stem + ".png")
            save_mask_png(mask, out, colours)
        if overlay:
            blend = (0.5 * image + 0.5 * colourise(mask, colours)).astype(np.uint8)
            with atomic_path(os.path.join(out_dir, stem + "_overlay.jpg")) as tmp:
                Image.fromarray(blend).save(tmp, format="JPEG")
        written.append(out)
    return written


class _AtSize(nn.Module):
    """Runs ``net`` at the fixed input size of its file: the image is resized to it and the logits back
    (what ``Predictor`` does for fixed-size ONNX files)."""

    def __init__(self, net: nn.Module, size: Tuple[int, int]):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == tuple(self.size):
            return self.net(x)
        out = self.net(torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False))
        return torch.nn.functional.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)


def load_network(path: str, device: str = "cpu", threads: Optional[int] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """The network of a ``model.pt``, TorchScript or ONNX file (told by content), ready for
    ``evaluate_network``, and its ``meta``. An ONNX file runs in onnxruntime (``threads`` intra-op
    threads, on the CPU whatever ``device`` says); one exported for a fixed size runs at that size, its
    logits resized back.
    """
    kind, data = read_model_file(path)
    meta = model_meta(path)
    if kind == "onnx":
        try:
            net = OrtNetwork(data, threads)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
            raise ModelFileError(f"{path}: onnxruntime cannot run this ONNX file "
                                 f"({short(' '.join(str(err).split()), 160)})") from None
        return (_AtSize(net, net.input_hw) if net.input_hw else net), meta
    if kind == "torchscript":
        return _load_torchscript(data, path, device).eval(), meta
    return load_model(path, device), meta
