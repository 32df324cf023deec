"""The searchable cell and the RSP (recursive stage partial) block.

Cell (after DARTS, Liu et al., 2019): node ``i`` of ``B`` sees the cell input and the nodes before it
(``i + 1`` candidates). Every candidate edge carries an op chosen by a ``LayerChoice`` labelled
``{prefix}/node{i}/op{j}``; an ``InputChoice`` labelled ``{prefix}/node{i}/in`` keeps two of the
edges (node 0 has one candidate and node 1 has exactly two, so they have no ``in`` label). The node
outputs are concatenated and projected back to the cell width. The labels carry no position in the
network, so every cell of a network shares one genotype and one set of architecture weights.

RSP block (after CSPNet, Wang et al., 2020, as used by RSPNet): split the channels in halves; one half
bypasses, the other goes on; the halves are concatenated and fused by a 1 x 1 transition. Two forms
recurse to depth ``r``:

- ``nested``: the cell runs on the half that goes on, and the cell's output is split again and only
  its second half goes through the next (narrower) cell: cells at C/2, C/4, ... (``r`` cells per node);
- ``single``: the recursion only splits channels; one cell runs on the innermost C/2^r channels, and
  every level adds its bypass and 1 x 1 transition (one cell per node).

The default (``tiny.yaml``, ``cityscapes_light.yaml``) is ``single`` at depth 1, with PC-DARTS' partial
channels (K = 2, ``search/supermodules.py``) in the search. Measured against the full-channel supernet
(``benchmarks/search_cost.md``, tiny space, 48x96, batch 16, one CPU thread), stage-1 step time / peak
memory: nested depth 2 1.10x / 0.84x (twice the cells, each narrower: a CPU pays per op), single depth 2
0.48x / 0.39x, depth 1 0.63x / 0.59x, depth 1 + K = 2 0.47x / 0.40x (Cityscapes-scale widths: 0.48x /
0.20x). A warm-up step (one sampled op per edge) saves less, 0.56x / 0.70x at depth 1 + K = 2 (64x128,
batch 8, 2026-11-27; 0.47x / 0.59x at Cityscapes-scale widths and 128x256), and a stage-2 step 0.63x / 0.72x
(0.55x / 0.64x): with one op per edge the cell is a small part of a step whose stem, resamplers, transitions
and head are the same at every depth. The default search also finds better networks than the full-channel one: 0.622
against 0.585 mean val mIoU under the quality protocol (digits, 3 searches x 2 training seeds, BENCHMARKS.md).
Depth 2 networks learned worse than depth 1 at equal widths (0.09-0.21 against 0.13-0.36 val
mIoU after 600 steps, the same draws), so the default keeps depth 1 and gets its cheapness from K = 2.
"""

from collections import OrderedDict
from typing import List, Sequence

import torch
from torch import nn

from .choices import OpChoice, choose_inputs
from .ops import ActLayer, ConvBNAct, NormLayer, build_op


RSP_FORMS = ("nested", "single")


class _OpBuilder:
    """``build(name, channels)``: a stride-1 cell op of ``channels`` in and out with the cell's layers."""

    def __init__(self, norm_layer: NormLayer, act_layer: ActLayer):
        self.norm_layer, self.act_layer = norm_layer, act_layer

    def __call__(self, name: str, channels: int) -> nn.Module:
        return build_op(name, channels, channels, 1, self.norm_layer, self.act_layer)


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
        build = _OpBuilder(norm_layer, act_layer)
        self.sources = []
        self.edges = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(num_nodes):
            active, fuse = choose_inputs(i + 1, 2, f"{label}/node{i}/in")
            self.sources.append(active)
            self.edges.append(nn.ModuleList([
                OpChoice(OrderedDict((name, build(name, channels)) for name in ops), label=f"{label}/node{i}/op{j}",
                         channels=channels, build=build)
                if len(ops) > 1 else build(ops[0], channels)
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
        form: ``nested`` (a cell at every level) or ``single`` (one cell, at the innermost level).
        other args: passed to every ``Cell``.
    """

    def __init__(self, channels: int, depth: int, ops: Sequence[str], num_nodes: int = 4, label: str = "cell",
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU, form: str = "nested"):
        super().__init__()
        if depth < 1:
            raise ValueError(f"RSPBlock depth must be >= 1, got {depth}; use make_block for depth 0")
        if channels % (2 ** depth):
            raise ValueError(f"RSP depth {depth} needs a width divisible by {2 ** depth}, got {channels}")
        if form not in RSP_FORMS:
            raise ValueError(f"RSP form must be one of {list(RSP_FORMS)}, got {form!r}")
        half = channels // 2
        self.split = channels - half
        inner_block = (RSPBlock(half, depth - 1, ops, num_nodes, label, norm_layer, act_layer, form)
                       if depth > 1 else None)
        if form == "nested" or inner_block is None:
            self.cell: nn.Module = Cell(half, ops, num_nodes, label, norm_layer, act_layer)
            self.inner: nn.Module = inner_block if inner_block is not None else nn.Identity()
        else:  # single: no cell at this level, the recursion carries on to the innermost one
            self.cell = nn.Identity()
            self.inner = inner_block
        self.transition = ConvBNAct(channels, channels, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bypass, part = x[:, : self.split], x[:, self.split:]
        return self.transition(torch.cat([bypass, self.inner(self.cell(part))], dim=1))


def make_block(channels: int, depth: int, ops: Sequence[str], num_nodes: int = 4, label: str = "cell",
               norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU, form: str = "nested") -> nn.Module:
    """The block of one trellis node: an ``RSPBlock`` of depth ``depth`` and form ``form``, or a plain
    ``Cell`` for depth 0."""
    if depth < 0:
        raise ValueError(f"RSP depth must be >= 0, got {depth}")
    if depth == 0:
        return Cell(channels, ops, num_nodes, label, norm_layer, act_layer)
    return RSPBlock(channels, depth, ops, num_nodes, label, norm_layer, act_layer, form)
