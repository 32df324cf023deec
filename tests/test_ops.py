import pytest
import torch
from torch import nn

from nni_rspnet.space.ops import OPS, build_op


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("c_in,c_out", [(8, 8), (8, 12)])
def test_op_shapes_backward_and_script(name, stride, c_in, c_out):
    torch.manual_seed(0)
    op = build_op(name, c_in, c_out, stride)
    x = torch.randn(2, c_in, 13, 18, requires_grad=True)
    y = op(x)
    assert y.shape == (2, c_out, (13 + stride - 1) // stride, (18 + stride - 1) // stride)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    op.eval()
    scripted = torch.jit.script(op)
    torch.testing.assert_close(scripted(x), op(x), rtol=0, atol=0)


def test_norm_and_activation_are_injected():
    op = build_op("sep_conv_3x3", 4, 4, 1, norm_layer=lambda c: nn.GroupNorm(2, c), act_layer=nn.Hardswish)
    kinds = {type(m) for m in op.modules()}
    assert nn.GroupNorm in kinds and nn.Hardswish in kinds
    assert nn.BatchNorm2d not in kinds and nn.ReLU not in kinds


def test_unknown_op_names_the_op():
    with pytest.raises(KeyError, match="conv_7x7"):
        build_op("conv_7x7", 4, 4)


def test_zoomed_conv_works_at_quarter_resolution():
    op = OPS["zoomed_conv"](4, 4, 1)
    conv = op.conv[0]
    assert conv.stride == (2, 2)
    assert op(torch.randn(1, 4, 9, 11)).shape == (1, 4, 9, 11)
