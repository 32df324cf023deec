"""The multi-resolution macro trellis and the segmentation head.

A trellis of ``L`` layers over resolutions 1/4 ... 1/32 (after Auto-DeepLab, Liu et al., 2019, and
HRNet). Layer 0 is the stem at 1/4; node ``(l, s)`` exists once resolution ``s`` is reachable from the
stem. Its candidate incoming paths come from layer ``l - 1`` at ``s/2`` (downsampled), ``s`` and
``2s`` (upsampled), in that order, and optionally from layer ``l - 2`` at ``s``; each path has its
own resampler so every candidate arrives at the node's width and size. One
``PathChoice(n_candidates, n_chosen=k, reduction='sum')`` labelled ``macro/l{l}_s{s}/paths`` fuses
them, then the node runs an RSP block. The head fuses every resolution of the last layer.

In a fixed network (built under ``fixed_arch``) only the chosen paths are built, and nodes whose
output cannot reach the head are pruned, so they cost neither parameters nor time.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .cell import make_block
from .choices import PathChoice, choose_inputs
from .decode import live_nodes
from .ops import ActLayer, ConvBNAct, NormLayer, SepConv

RESOLUTIONS = (4, 8, 16, 32)
RESAMPLERS = ("conv", "sep")
STEM_LAYERS = (2, 3, 4)
HEADS = ("conv", "sep")


@dataclass(frozen=True)
class NodeSpec:
    """One trellis node: layer, resolution index and its candidate sources ``(layer, res_index)``."""

    layer: int
    res: int
    candidates: Tuple[Tuple[int, int], ...]

    def label(self, resolutions: Sequence[int]) -> str:
        return f"macro/l{self.layer}_s{resolutions[self.res]}/paths"


def trellis_nodes(num_layers: int, num_res: int, skip_paths: bool = False) -> List[NodeSpec]:
    """The nodes of the trellis in computation order (layer by layer, fine to coarse)."""
    exists = lambda l, r: l >= 0 and 0 <= r < num_res and r <= l  # noqa: E731
    nodes = []
    for l in range(1, num_layers + 1):
        for r in range(num_res):
            if not exists(l, r):
                continue
            cands = [(l - 1, rr) for rr in (r - 1, r, r + 1) if exists(l - 1, rr)]
            if skip_paths and l >= 2 and exists(l - 2, r):
                cands.append((l - 2, r))
            nodes.append(NodeSpec(l, r, tuple(cands)))
    return nodes


def head_inputs(num_layers: int, num_res: int) -> List[Tuple[int, int]]:
    """The nodes ``(layer, res_index)`` the head reads: every resolution of the last layer, fine to coarse."""
    return [(num_layers, r) for r in range(num_res) if r <= num_layers]


class Resample(nn.Module):
    """Brings a feature map from one resolution to a neighbouring one and to the target width.

    Down (``step=1``): a stride-2 3 x 3 conv-norm-act (``kind="conv"``) or a stride-2 depthwise 3 x 3
    followed by a 1 x 1 (``kind="sep"``: about ``1/9`` of the weights and MACs, for light spaces). Up
    (``step=-1``): a 1 x 1 conv-norm-act at the coarse size, then bilinear upsampling. Same resolution:
    a 1 x 1 conv-norm-act when the width changes, else nothing.
    """

    def __init__(self, c_in: int, c_out: int, step: int, norm_layer: NormLayer, act_layer: ActLayer,
                 kind: str = "conv"):
        super().__init__()
        if step not in (-1, 0, 1):
            raise ValueError(f"step must be -1 (up), 0 or 1 (down), got {step}")
        if kind not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {list(RESAMPLERS)}, got {kind!r}")
        self.up = step == -1
        if step == 1 and kind == "sep":
            self.proj: nn.Module = SepConv(c_in, c_out, 3, 2, norm_layer=norm_layer, act_layer=act_layer)
        elif step == 1:
            self.proj = ConvBNAct(c_in, c_out, 3, 2, norm_layer=norm_layer, act_layer=act_layer)
        elif c_in != c_out or self.up:
            self.proj = ConvBNAct(c_in, c_out, 1, norm_layer=norm_layer, act_layer=act_layer)
        else:
            self.proj = nn.Identity()

    def forward(self, x: torch.Tensor, size: List[int]) -> torch.Tensor:
        x = self.proj(x)
        if self.up:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class TrellisNode(nn.Module):
    """Resamples the active incoming paths, fuses them (the path choice), runs the RSP block."""

    def __init__(self, paths: List[nn.Module], fuse: nn.Module, block: nn.Module):
        super().__init__()
        self.paths = nn.ModuleList(paths)
        self.fuse = fuse
        self.block = block

    def forward(self, inputs: List[torch.Tensor], size: List[int]) -> torch.Tensor:
        outs: List[torch.Tensor] = []
        i = 0
        for path in self.paths:
            outs.append(path(inputs[i], size))
            i += 1
        return self.block(self.fuse(outs))


def head_block(c_in: int, c_out: int, kind: str, norm_layer: NormLayer, act_layer: ActLayer) -> nn.Module:
    """The 3 x 3 block in front of a classifier: a conv-norm-act (``conv``) or a depthwise-separable
    one (``sep``)."""
    if kind == "sep":
        return SepConv(c_in, c_out, 3, 1, norm_layer=norm_layer, act_layer=act_layer)
    return ConvBNAct(c_in, c_out, 3, norm_layer=norm_layer, act_layer=act_layer)


class SegHead(nn.Module):
    """Scores every last-layer resolution and sums the scores at the finest one (FCN-style skips, Long
    et al., 2015): per resolution a 3 x 3 conv-norm-act to the head width and a 1 x 1 classifier.

    Every resolution speaks for itself, so the coarse rows' context reaches the logits directly. It
    replaced a head that summed 1 x 1 projections of the rows before one shared 3 x 3 conv and
    classifier: with that head random networks of the tiny space fitted the built-in training data
    far slower (training mIoU 0.54 against 0.73-0.76 after 1200 steps) and reached 0.35 / 0.42
    validation mIoU where this head reaches 0.44 / 0.47 (the same two architectures, 48 x 96 images).
    """

    def __init__(self, in_channels: Sequence[int], head_channels: int, num_classes: int,
                 norm_layer: NormLayer, act_layer: ActLayer, kind: str = "conv"):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {kind!r}")
        self.scores = nn.ModuleList([
            nn.Sequential(head_block(c, head_channels, kind, norm_layer, act_layer),
                          nn.Conv2d(head_channels, num_classes, 1))
            for c in in_channels])

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        size = [feats[0].shape[-2], feats[0].shape[-1]]
        out = torch.zeros(1, device=feats[0].device, dtype=feats[0].dtype)
        i = 0
        for score in self.scores:
            y = score(feats[i])
            if i > 0:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = out + y
            i += 1
        return out


class Trellis(nn.Module):
    """Stem, trellis nodes and head; returns logits at input resolution.

    Args:
        in_channels, num_classes: image channels and number of classes.
        stem_channels: width inside the stem.
        resolutions: downsampling factors used, a prefix of (4, 8, 16, 32).
        channels: width at each resolution.
        num_layers: trellis layers ``L``.
        paths_per_node: ``k``, the number of incoming paths each node keeps.
        skip_paths: also offer paths from layer ``l - 2`` at the same resolution.
        cell_ops, cell_nodes, rsp_depth: the cell and its RSP block.
        rsp_form: ``nested`` or ``single`` (see ``cell.RSPBlock``).
        head_channels: width of the head.
        aux_heads: add a classifier on every coarser last-layer resolution (deep supervision); it
            runs only in ``forward_aux``, which training uses.
        stem_layers: 3 (conv stride 2, conv at 1/2, conv stride 2), 2 (no conv at 1/2) or 4 (a conv at
            full resolution first, then the 3 of ``stem_layers=3``).
        resampler: ``conv`` or ``sep``, the downsampling paths (see ``Resample``).
        head: ``conv`` or ``sep``, the 3 x 3 block of each head branch (see ``head_block``).
    """

    sources: List[List[int]]  # per built node: positions of its active inputs among computed outputs
    node_res: List[int]  # per built node: its resolution index
    outputs: List[int]  # positions of the last layer's outputs, fine to coarse

    def __init__(self, in_channels: int, num_classes: int, stem_channels: int, resolutions: Sequence[int],
                 channels: Sequence[int], num_layers: int, paths_per_node: int, skip_paths: bool,
                 cell_ops: Sequence[str], cell_nodes: int, rsp_depth: int, head_channels: int,
                 aux_heads: bool = False, rsp_form: str = "nested", norm_layer: NormLayer = nn.BatchNorm2d,
                 act_layer: ActLayer = nn.ReLU, stem_layers: int = 3, resampler: str = "conv", head: str = "conv"):
        super().__init__()
        resolutions = list(resolutions)
        self.num_res = len(resolutions)
        if stem_layers not in STEM_LAYERS:
            raise ValueError(f"stem_layers must be one of {list(STEM_LAYERS)}, got {stem_layers}")
        stem: List[nn.Module] = []
        if stem_layers == 4:  # a stride-1 conv at full resolution: cheap (3 input channels), sees fine texture
            stem.append(ConvBNAct(in_channels, stem_channels, 3, 1, norm_layer=norm_layer, act_layer=act_layer))
        stem.append(ConvBNAct(stem_channels if stem_layers == 4 else in_channels, stem_channels, 3, 2,
                              norm_layer=norm_layer, act_layer=act_layer))
        if stem_layers >= 3:  # a stride-1 conv at 1/2: the dearest layer of a light network at large inputs
            stem.append(ConvBNAct(stem_channels, stem_channels, 3, 1, norm_layer=norm_layer, act_layer=act_layer))
        stem.append(ConvBNAct(stem_channels, channels[0], 3, 2, norm_layer=norm_layer, act_layer=act_layer))
        self.stem = nn.Sequential(*stem)
        specs = trellis_nodes(num_layers, self.num_res, skip_paths)
        # Pass 1: every path choice (in a fixed network these already know the chosen paths).
        choices: Dict[Tuple[int, int], Tuple[List[int], nn.Module]] = {}
        for spec in specs:
            k = min(paths_per_node, len(spec.candidates))
            choices[(spec.layer, spec.res)] = choose_inputs(len(spec.candidates), k, spec.label(resolutions), PathChoice,
                                                            channels=channels[spec.res])
        # Pass 2: keep the nodes that can reach the head (all of them in a supernet).
        live = live_nodes({(s.layer, s.res): [s.candidates[j] for j in choices[(s.layer, s.res)][0]] for s in specs},
                          head_inputs(num_layers, self.num_res))
        # Pass 3: build the live nodes; ``sources`` index the list of computed outputs (stem = 0).
        position = {(0, 0): 0}
        self.nodes = nn.ModuleList()
        self.sources = []
        self.node_res = []
        for spec in specs:
            key = (spec.layer, spec.res)
            if key not in live:
                continue
            active, fuse = choices[key]
            paths = [Resample(channels[spec.candidates[j][1]], channels[spec.res], spec.res - spec.candidates[j][1],
                              norm_layer, act_layer, resampler) for j in active]
            self.nodes.append(TrellisNode(paths, fuse, make_block(channels[spec.res], rsp_depth, cell_ops,
                                                                  cell_nodes, "cell", norm_layer, act_layer,
                                                                  rsp_form)))
            self.sources.append([position[spec.candidates[j]] for j in active])
            self.node_res.append(spec.res)
            position[key] = len(position)
        self.outputs = [position[node] for node in head_inputs(num_layers, self.num_res)]
        out_channels = [channels[r] for r in range(len(self.outputs))]
        self.head = SegHead(out_channels, head_channels, num_classes, norm_layer, act_layer, head)
        self.aux_heads = nn.ModuleList([
            nn.Sequential(head_block(c, head_channels, head, norm_layer, act_layer),
                          nn.Conv2d(head_channels, num_classes, 1))
            for c in out_channels[1:]] if aux_heads else [])

    def _features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        sizes: List[List[int]] = [[x.shape[-2], x.shape[-1]]]
        for _ in range(1, self.num_res):
            sizes.append([(sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2])
        outs: List[torch.Tensor] = [x]
        i = 0
        for node in self.nodes:
            inputs: List[torch.Tensor] = []
            for s in self.sources[i]:
                inputs.append(outs[s])
            outs.append(node(inputs, sizes[self.node_res[i]]))
            i += 1
        return [outs[i] for i in self.outputs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, H, W)`` at the input's resolution, for any ``H`` and ``W``."""
        logits = self.head(self._features(x))
        return F.interpolate(logits, size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)

    @torch.jit.export
    def forward_aux(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Main logits and the auxiliary heads' logits, all at input resolution (for training)."""
        size = [x.shape[-2], x.shape[-1]]
        feats = self._features(x)
        main = F.interpolate(self.head(feats), size=size, mode="bilinear", align_corners=False)
        aux: List[torch.Tensor] = []
        i = 1
        for head in self.aux_heads:
            aux.append(F.interpolate(head(feats[i]), size=size, mode="bilinear", align_corners=False))
            i += 1
        return main, aux
