import pytest
import torch
from nni.retiarii import fixed_arch
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice

from nni_rspnet.space.cell import Cell, RSPBlock, make_block
from nni_rspnet.measure import count_macs, count_params

OPS3 = ["skip_connect", "sep_conv_3x3", "conv_3x3"]


def _labels(module):
    return [m.label for m in module.modules() if isinstance(m, (LayerChoice, InputChoice))]


def test_cell_labels_and_shape():
    cell = Cell(8, OPS3, num_nodes=3)
    labels = set(_labels(cell))
    assert labels == {"cell/node0/op0", "cell/node1/op0", "cell/node1/op1", "cell/node2/op0", "cell/node2/op1",
                      "cell/node2/op2", "cell/node2/in"}
    x = torch.randn(2, 8, 7, 9)
    assert cell(x).shape == (2, 8, 7, 9)


def test_every_cell_of_a_block_shares_one_genotype():
    block = make_block(16, 2, OPS3, num_nodes=2)
    cells = [m for m in block.modules() if isinstance(m, Cell)]
    assert len(cells) == 2  # widths 8 and 4
    assert _labels(cells[0]) == _labels(cells[1])


def test_fixed_cell_builds_only_the_chosen_edges():
    arch = {"cell/node0/op0": "conv_3x3", "cell/node1/op0": "skip_connect", "cell/node1/op1": "sep_conv_3x3",
            "cell/node2/op0": "conv_3x3", "cell/node2/op1": "conv_3x3", "cell/node2/op2": "sep_conv_3x3",
            "cell/node2/in": [0, 2]}
    with fixed_arch(arch, verbose=False):
        cell = Cell(8, OPS3, num_nodes=3)
    assert not _labels(cell)
    assert cell.sources == [[0], [0, 1], [0, 2]]
    assert len(cell.edges[2]) == 2
    out = torch.jit.script(cell.eval())(torch.randn(1, 8, 5, 5))
    assert out.shape == (1, 8, 5, 5)


def test_rsp_block_shapes_and_bad_arguments():
    x = torch.randn(2, 16, 9, 7)
    for depth in (0, 1, 2, 3):
        assert make_block(16, depth, OPS3, 2)(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible by 4"):
        make_block(18, 2, OPS3, 2)
    with pytest.raises(ValueError, match=">= 0"):
        make_block(16, -1, OPS3, 2)
    with pytest.raises(ValueError, match="depth 0"):
        RSPBlock(16, 0, OPS3, 2)


@pytest.mark.parametrize("op", ["conv_3x3", "sep_conv_3x3"])
def test_rsp_depth2_costs_at_most_055_of_the_plain_cell(op):
    """Same genotype, same width: RSP depth 2 against depth 0 (the issue's <= 0.55x goal)."""
    genotype = {"cell/node0/op0": op, "cell/node1/op0": op, "cell/node1/op1": "skip_connect",
                "cell/node2/op0": op, "cell/node2/op1": "skip_connect", "cell/node2/op2": op,
                "cell/node2/in": [1, 2], "cell/node3/op0": op, "cell/node3/op1": op, "cell/node3/op2": op,
                "cell/node3/op3": op, "cell/node3/in": [0, 3]}
    with fixed_arch(genotype, verbose=False):
        plain = make_block(64, 0, [op, "skip_connect"], 4)
        rsp = make_block(64, 2, [op, "skip_connect"], 4)

    class Wrap(torch.nn.Module):  # count_macs feeds 3-channel images; project to the block width first
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(x.repeat(1, 64 // 4, 1, 1)[:, :64])

    p0, p2 = count_params(plain), count_params(rsp)
    m0, m2 = count_macs(Wrap(plain), (32, 32), 4), count_macs(Wrap(rsp), (32, 32), 4)
    print(f"{op}: params depth0 {p0} depth2 {p2} ({p2 / p0:.3f}x); MACs depth0 {m0} depth2 {m2} ({m2 / m0:.3f}x)")
    assert p2 <= 0.55 * p0
    assert m2 <= 0.55 * m0
