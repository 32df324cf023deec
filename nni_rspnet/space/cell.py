"""The searchable cell and the RSP (recursive stage partial) block.

Cell (after DARTS, Liu et al., 2019): node ``i`` of ``B`` sees the cell input and the nodes before it
(``i + 1`` candidates). Every candidate edge carries an op chosen by a ``LayerChoice`` labelled
``{prefix}/node{i}/op{j}``; an ``InputChoice`` labelled ``{prefix}/node{i}/in`` keeps two of the
edges (node 0 has one candidate and node 1 has exactly two, so they have no ``in`` label). The node
outputs are concatenated and projected back to the cell width. The labels carry no position in the
network, so every cell of a network shares one genotype and one set of architecture weights.

RSP block (after CSPNet, Wang et al., 2020, as used by RSPNet): split the channels in halves; one half
bypasses, the other goes through the cell; recursively, the cell's output is split again and only
its second half goes through the next (narrower) cell, to depth ``r``. The halves are concatenated
and fused by a 1 x 1 transition. The cell therefore sees C/2, C/4, ... channels.
"""

from collections import OrderedDict
from typing import List, Sequence

import torch
from torch import nn

from nni.retiarii.nn.pytorch import LayerChoice

from .choices import choose_inputs
from .ops import ActLayer, ConvBNAct, NormLayer, build_op


class Cell(nn.Module):
    """A DAG cell of ``num_nodes`` nodes at one resolution and width.

    Args:
        channels: width of the input, of every node and of the output.
        ops: candidate op names (keys of ``nni_rspnet.space.ops.OPS``).
        num_nodes: number of intermediate nodes ``B``.
        label: label prefix shared by every cell of a network (one genotype).
        norm_layer / act_layer: injected into every op.
    """

    sources: List[List[int]]  # per node: the state index feeding each built edge

    def __init__(self, channels: int, ops: Sequence[str], num_nodes: int = 4, label: str = "cell",
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        self.num_nodes = num_nodes
        self.sources = []
        self.edges = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(num_nodes):
            active, fuse = choose_inputs(i + 1, 2, f"{label}/node{i}/in")
            self.sources.append(active)
            self.edges.append(nn.ModuleList([
                LayerChoice(OrderedDict((name, build_op(name, channels, channels, 1, norm_layer, act_layer))
                                        for name in ops), label=f"{label}/node{i}/op{j}")
                if len(ops) > 1 else build_op(ops[0], channels, channels, 1, norm_layer, act_layer)
                for j in active]))
            self.fuse.append(fuse)
        self.project = ConvBNAct(channels * num_nodes, channels, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states: List[torch.Tensor] = [x]
        i = 0
        for edges, fuse in zip(self.edges, self.fuse):
            srcs = self.sources[i]
            outs: List[torch.Tensor] = []
            j = 0
            for edge in edges:
                outs.append(edge(states[srcs[j]]))
                j += 1
            states.append(fuse(outs))
            i += 1
        return self.project(torch.cat(states[1:], dim=1))


class RSPBlock(nn.Module):
    """Recursive stage partial block around shared-genotype cells (depth >= 1).

    Args:
        channels: block width ``C`` (divisible by ``2 ** depth``).
        depth: recursion depth ``r`` >= 1 (``make_block`` builds depth 0, the plain cell).
        other args: passed to every ``Cell``.
    """

    def __init__(self, channels: int, depth: int, ops: Sequence[str], num_nodes: int = 4, label: str = "cell",
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU):
        super().__init__()
        if depth < 1:
            raise ValueError(f"RSPBlock depth must be >= 1, got {depth}; use make_block for depth 0")
        if channels % (2 ** depth):
            raise ValueError(f"RSP depth {depth} needs a width divisible by {2 ** depth}, got {channels}")
        half = channels // 2
        self.split = channels - half
        self.cell = Cell(half, ops, num_nodes, label, norm_layer, act_layer)
        self.inner: nn.Module = (RSPBlock(half, depth - 1, ops, num_nodes, label, norm_layer, act_layer)
                                 if depth > 1 else nn.Identity())
        self.transition = ConvBNAct(channels, channels, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bypass, part = x[:, : self.split], x[:, self.split:]
        return self.transition(torch.cat([bypass, self.inner(self.cell(part))], dim=1))


def make_block(channels: int, depth: int, ops: Sequence[str], num_nodes: int = 4, label: str = "cell",
               norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU) -> nn.Module:
    """The block of one trellis node: an ``RSPBlock`` of depth ``depth``, or a plain ``Cell`` for 0."""
    if depth < 0:
        raise ValueError(f"RSP depth must be >= 0, got {depth}")
    if depth == 0:
        return Cell(channels, ops, num_nodes, label, norm_layer, act_layer)
    return RSPBlock(channels, depth, ops, num_nodes, label, norm_layer, act_layer)
