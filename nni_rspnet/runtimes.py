"""Running a network in one of three runtimes: PyTorch eager, TorchScript (frozen) and onnxruntime.

- ``fold_batchnorm``: a copy of a network whose eval-mode BatchNorm layers are folded into the
  convolutions before them (``y = conv(x) * s + t`` becomes one convolution with scaled weights and a
  bias), so a deployed network runs one op where eager PyTorch runs two;
- ``OrtNetwork``: an ``.onnx`` file in an onnxruntime session, called like a network (tensor in,
  tensor out), so evaluation and prediction run it as they run a PyTorch network;
- ``prepare``: a zero-argument callable that runs a module on fixed inputs in a runtime, for timing
  (``measure.measure_latency`` and the cost table use it).

onnx and onnxruntime are imported only when an ONNX runtime is asked for.
"""
from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import ConfigError

RUNTIMES = ("eager", "torchscript", "onnxruntime")
RUNTIME_NAMES = {"eager": "PyTorch eager", "torchscript": "TorchScript (frozen)", "onnxruntime": "onnxruntime"}


def check_runtime(runtime: str, where: str = "runtime") -> str:
    """``runtime`` if it is one of ``RUNTIMES``; else a one-line ``ConfigError``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"{where}: unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
    return runtime


# --- BatchNorm folding -------------------------------------------------------------------------------

@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bias * scale + shift)
    return fused


def fold_batchnorm(net: nn.Module) -> Tuple[nn.Module, int]:
    """A copy of ``net`` (eval mode) in which every ``BatchNorm2d`` that directly follows a ``Conv2d`` in
    an ``nn.Sequential`` is folded into it (the BatchNorm becomes ``nn.Identity``, so module names and
    the rest of the graph stay as they are). Returns ``(folded copy, number of folds)``.

    Every conv-norm pair of this package's networks sits in a ``Sequential`` (``ConvBNAct``,
    ``SepConv``, the stem, the head); torchvision's MobileNetV3 blocks do too. A BatchNorm elsewhere
    is left as it is, which is correct, only not folded.
    """
    folded = copy.deepcopy(net).eval()
    count = 0
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                module._modules[a] = _fold(conv, bn)
                module._modules[b] = nn.Identity()
                count += 1
    return folded, count


@torch.no_grad()
def fold_checked(net: nn.Module, x: torch.Tensor, rtol: float = 1e-5) -> Tuple[nn.Module, float]:
    """``fold_batchnorm(net)``, checked on ``x``: returns ``(folded network, largest difference)``.

    Raises:
        ValueError: the folded network's output differs from ``net``'s by more than ``rtol`` times the
            output's largest magnitude (at least 1).
    """
    net = net.eval()
    folded, _ = fold_batchnorm(net)
    ref = net(x)
    diff = float((folded(x) - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not diff <= rtol * scale:
        raise ValueError(f"folding BatchNorm into the convolutions changed the output by {diff:.2e} "
                         f"(> {rtol:g} x {scale:.3g})")
    return folded, diff


# --- onnxruntime -------------------------------------------------------------------------------------

def ort_session(path: Union[str, bytes], threads: Optional[int] = None):
    """An onnxruntime CPU session of ``path`` (a file, or the model's bytes; ``threads``: intra-op
    threads, ``None``: onnxruntime's default), with every graph optimisation on."""
    import onnxruntime as ort  # only for ONNX files: eager and TorchScript never pay for it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OrtNetwork(nn.Module):
    """An ``.onnx`` file run by onnxruntime behind a network's interface: ``net(x)`` takes and returns
    CPU tensors (``float32``), ``.to()`` and ``.eval()`` are accepted.

    Args:
        path: the ONNX file (one image input, one logits output), or its bytes.
        threads: onnxruntime intra-op threads (``None``: its default).
    """

    def __init__(self, path: Union[str, bytes], threads: Optional[int] = None):
        super().__init__()
        self.session = ort_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        # Fixed height and width when the file was exported for one size, else None (any size).
        self.input_hw: Optional[Tuple[int, int]] = (
            (int(shape[2]), int(shape[3])) if len(shape) == 4 and all(isinstance(s, int) for s in shape[2:]) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def export_onnx_graph(module: nn.Module, inputs: Tuple[torch.Tensor, ...], path: str, opset: int = 17,
                      dynamic_hw: bool = False) -> None:
    """``torch.onnx.export`` (TorchScript-based exporter) of a copy of ``module`` for ``inputs``; with
    ``dynamic_hw`` the first input's batch, height and width are dynamic. ``module`` is left as it is."""
    names = [f"input{i}" for i in range(len(inputs))]
    axes = {names[0]: {0: "batch", 2: "height", 3: "width"}} if dynamic_hw else None
    # A copy: the exporter's eval-mode passes can fold BatchNorm into the module's own weights in place.
    torch.onnx.export(copy.deepcopy(module), inputs, path, dynamo=False, opset_version=opset, input_names=names,
                      dynamic_axes=axes)


# --- timing callables -----------------------------------------------------------------------------------

def prepare(module: nn.Module, inputs: Sequence[Any], runtime: str = "eager", threads: Optional[int] = None,
            workdir: Optional[str] = None) -> Callable[[], Any]:
    """A zero-argument callable that runs ``module(*inputs)`` in ``runtime`` (eval mode, no grad).

    ``eager``: the module as it is; ``torchscript``: ``torch.jit.freeze(torch.jit.script(module))``
    (freezing folds BatchNorm into convolutions); ``onnxruntime``: the module exported to ONNX in
    ``workdir`` (a temporary folder when ``None``) and run in a session with ``threads`` intra-op threads.
    Non-tensor inputs (sizes) are baked into the ONNX graph.
    """
    check_runtime(runtime)
    module = module.eval()
    args = tuple(inputs)
    if runtime == "eager":
        def run_eager() -> Any:
            with torch.inference_mode():
                return module(*args)
        return run_eager
    if runtime == "torchscript":
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.script(module))

        def run_script() -> Any:
            with torch.inference_mode():
                return frozen(*args)
        run_script()  # the first runs of a frozen module optimise its graph
        return run_script
    wrapped = _TensorArgs(module, args)
    tensors = wrapped.tensors(args)
    folder = workdir or tempfile.mkdtemp(prefix="nni_rspnet_ort_")
    fd, path = tempfile.mkstemp(suffix=".onnx", dir=folder)
    os.close(fd)
    with torch.no_grad():
        export_onnx_graph(wrapped, tuple(tensors), path)
    session = ort_session(path, threads)
    feed = {s.name: t.detach().cpu().numpy() for s, t in zip(session.get_inputs(), tensors)}
    if workdir is None:
        os.unlink(path)
        os.rmdir(folder)

    def run_ort() -> Any:
        return session.run(None, feed)
    return run_ort


class _TensorArgs(nn.Module):
    """``module(*args)`` taking only the tensors of ``args`` (those of lists of tensors flattened), the
    other arguments (sizes) fixed: what an exporter can trace."""

    def __init__(self, module: nn.Module, args: Tuple[Any, ...]):
        super().__init__()
        self.module = module
        self.template: List[Any] = list(args)
        # per argument: None (fixed), -1 (a tensor) or the length of a list of tensors
        self.layout: List[Optional[int]] = [
            -1 if torch.is_tensor(a) else (len(a) if isinstance(a, (list, tuple)) and a and all(torch.is_tensor(t)
                                                                                               for t in a) else None)
            for a in args]

    def tensors(self, args: Sequence[Any]) -> List[torch.Tensor]:
        flat: List[torch.Tensor] = []
        for a, kind in zip(args, self.layout):
            if kind == -1:
                flat.append(a)
            elif kind is not None:
                flat.extend(a)
        return flat

    def forward(self, *tensors: torch.Tensor) -> Any:
        args = list(self.template)
        i = 0
        for k, kind in enumerate(self.layout):
            if kind == -1:
                args[k] = tensors[i]
                i += 1
            elif kind is not None:
                args[k] = list(tensors[i:i + kind])
                i += kind
        return self.module(*args)


def quantize_onnx(fp32_path: str, int8_path: str, calibration: Sequence[torch.Tensor]) -> None:
    """Static int8 quantisation of an ONNX file (onnxruntime's QDQ format, per-channel int8 weights, uint8
    activations), with activation ranges calibrated on ``calibration`` (a few ``[1, C, H, W]`` images, as
    the network sees them: normalised).
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # only for ONNX
                                          quantize_static)

    name = ort_session(fp32_path).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: x.detach().cpu().float().numpy()} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    quantize_static(fp32_path, int8_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
