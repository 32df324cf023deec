"""Candidate operations of the searchable cell.

One table, ``OPS``, maps an op name to a factory with one signature::

    factory(C_in, C_out, stride, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> nn.Module

Every op maps ``(N, C_in, H, W)`` to ``(N, C_out, ceil(H / stride), ceil(W / stride))`` for any H and
W (odd sizes included), and every op is ``torch.jit.script``-able. Norm and activation layers are
injected as callables (``norm_layer(C)``, ``act_layer()``), as in timm.

The set follows DARTS (Liu et al., 2019) plus FasterSeg's zoomed convolution (Chen et al., 2020).
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]
OpFactory = Callable[..., nn.Module]


def _out_size(size: List[int], stride: int) -> List[int]:
    return [(size[0] + stride - 1) // stride, (size[1] + stride - 1) // stride]


class ConvBNAct(nn.Sequential):
    """Conv2d -> norm -> activation (the activation is optional)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, groups: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
                 act_layer: ActLayer | None = nn.ReLU):
        padding = dilation * (kernel_size - 1) // 2
        layers: List[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
            norm_layer(c_out),
        ]
        if act_layer is not None:
            layers.append(act_layer())
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """Depthwise k x k (optionally dilated) convolution, then pointwise 1 x 1, norm, activation.

    One depthwise-separable stack rather than DARTS' two: the product searches light-weight networks
    and the second stack roughly doubles the cost of every edge.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, dilation: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            norm_layer(c_in),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            norm_layer(c_out),
            act_layer(),
        )


class Pool(nn.Module):
    """3 x 3 average or max pooling, followed by a 1 x 1 projection when the width changes."""

    def __init__(self, kind: str, c_in: int, c_out: int, stride: int,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        if kind == "avg":
            self.pool: nn.Module = nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(3, stride, 1)
        self.proj: nn.Module = (nn.Identity() if c_in == c_out
                                else ConvBNAct(c_in, c_out, 1, norm_layer=norm_layer, act_layer=act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class ZoomedConv(nn.Module):
    """FasterSeg's zoomed convolution: downsample x2, 3 x 3 conv, upsample back.

    The convolution runs at a quarter of the pixels, so it is cheap and sees a larger receptive field.
    The output is resized to exactly ``ceil(input / stride)``, which keeps odd sizes exact.
    """

    def __init__(self, c_in: int, c_out: int, stride: int,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        self.stride = stride
        self.conv = ConvBNAct(c_in, c_out, 3, stride=2, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = _out_size([x.shape[-2], x.shape[-1]], self.stride)
        return F.interpolate(self.conv(x), size=size, mode="bilinear", align_corners=False)


def skip_connect(c_in: int, c_out: int, stride: int, norm_layer: NormLayer = nn.BatchNorm2d,
                 act_layer: ActLayer = nn.ReLU) -> nn.Module:
    """Identity, or a strided 1 x 1 projection when the shape has to change."""
    if c_in == c_out and stride == 1:
        return nn.Identity()
    return ConvBNAct(c_in, c_out, 1, stride, norm_layer=norm_layer, act_layer=None)


OPS: Dict[str, OpFactory] = {
    "skip_connect": skip_connect,
    "conv_3x3": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        ConvBNAct(ci, co, 3, s, norm_layer=norm_layer, act_layer=act_layer),
    "sep_conv_3x3": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        SepConv(ci, co, 3, s, norm_layer=norm_layer, act_layer=act_layer),
    "sep_conv_5x5": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        SepConv(ci, co, 5, s, norm_layer=norm_layer, act_layer=act_layer),
    "dil_conv_3x3": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        SepConv(ci, co, 3, s, dilation=2, norm_layer=norm_layer, act_layer=act_layer),
    "dil_conv_5x5": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        SepConv(ci, co, 5, s, dilation=2, norm_layer=norm_layer, act_layer=act_layer),
    "avg_pool_3x3": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        Pool("avg", ci, co, s, norm_layer=norm_layer, act_layer=act_layer),
    "max_pool_3x3": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        Pool("max", ci, co, s, norm_layer=norm_layer, act_layer=act_layer),
    "zoomed_conv": lambda ci, co, s, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU:
        ZoomedConv(ci, co, s, norm_layer=norm_layer, act_layer=act_layer),
}


def build_op(name: str, c_in: int, c_out: int, stride: int = 1, norm_layer: NormLayer = nn.BatchNorm2d,
             act_layer: ActLayer = nn.ReLU) -> nn.Module:
    """Builds the op ``name``; an unknown name is a ``KeyError`` that lists the known ones."""
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; expected one of {sorted(OPS)}")
    return OPS[name](c_in, c_out, stride, norm_layer=norm_layer, act_layer=act_layer)
