"""Pictures of an architecture: the cell as a DAG and the trellis with its chosen paths (matplotlib)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Union

from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to choose

from ..fileio import save_figure
from .arch import space_spec
from .decode import live_nodes
from .macro import head_inputs, trellis_nodes
from .model import as_space_config

_OP_COLOURS = {
    "skip_connect": "#7f7f7f", "conv_3x3": "#d62728", "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#2ca02c", "dil_conv_5x5": "#98df8a", "avg_pool_3x3": "#ff7f0e", "max_pool_3x3": "#ffbb78",
    "zoomed_conv": "#9467bd",
}


def _save(fig, path: Union[str, os.PathLike]) -> None:
    save_figure(fig, path, dpi=130, bbox_inches="tight")


def draw_cell(arch: Mapping[str, Any], config, path: Union[str, os.PathLike], ax=None) -> None:
    """Draws the cell of ``arch`` as a DAG: input, the nodes with their chosen edges and ops, output."""
    cfg = as_space_config(config)
    n = cfg.cell_nodes
    own = ax is None
    if own:
        fig = Figure(figsize=(2.2 * (n + 2), 3.2))
        ax = fig.subplots()
    pos = {0: (0.0, 0.0)}
    for i in range(n):
        pos[i + 1] = (i + 1.0, 0.9 if i % 2 == 0 else -0.9)
    pos[n + 1] = (n + 1.0, 0.0)
    names = {0: "input", n + 1: "output", **{i + 1: f"node{i}" for i in range(n)}}
    for i in range(n):
        chosen = arch.get(f"cell/node{i}/in", list(range(i + 1)))
        chosen = [chosen] if isinstance(chosen, int) else chosen
        for j in chosen:
            op = arch[f"cell/node{i}/op{j}"]
            (x0, y0), (x1, y1) = pos[j], pos[i + 1]
            colour = _OP_COLOURS.get(op, "black")
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=2, shrinkA=14, shrinkB=14,
                                        connectionstyle="arc3,rad=0.15"))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, op, color=colour, fontsize=8, ha="center")
        ax.annotate("", xy=pos[n + 1], xytext=pos[i + 1],
                    arrowprops=dict(arrowstyle="-|>", color="#cccccc", lw=1, shrinkA=14, shrinkB=14))
    for k, (x, y) in pos.items():
        ax.text(x, y, names[k], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round", fc="#f5f5dc" if 0 < k <= n else "#dddddd", ec="black"))
    ax.set_xlim(-0.6, n + 1.6)
    ax.set_ylim(-1.5, 1.5)
    ax.axis("off")
    ax.set_title(f"cell ({n} nodes, outputs concatenated, RSP depth {cfg.rsp_depth})", fontsize=10)
    if own:
        _save(fig, path)


def draw_trellis(arch: Mapping[str, Any], config, path: Union[str, os.PathLike],
                 probs: Optional[Mapping[str, float]] = None, ax=None) -> None:
    """Draws the trellis: every candidate path in grey, the chosen ones in colour, pruned nodes faded.

    With ``probs`` (``{"macro/l2_s4/paths/0": p, ...}`` as in ``probs.json``) candidate paths are drawn
    with a width proportional to their probability.
    """
    cfg = as_space_config(config)
    res = cfg.resolutions
    specs = trellis_nodes(cfg.layers, len(res), cfg.skip_paths)
    chosen: Dict[tuple, list] = {}
    for spec in specs:
        value = arch.get(spec.label(res), list(range(len(spec.candidates))))
        chosen[(spec.layer, spec.res)] = [value] if isinstance(value, int) else list(value)
    live = live_nodes({(s.layer, s.res): [s.candidates[j] for j in chosen[(s.layer, s.res)]] for s in specs},
                      head_inputs(cfg.layers, len(res)))
    own = ax is None
    if own:
        fig = Figure(figsize=(1.3 * (cfg.layers + 2), 0.9 * (len(res) + 1.5)))
        ax = fig.subplots()
    for spec in specs:
        x1, y1 = spec.layer, -spec.res
        for j, (l, r) in enumerate(spec.candidates):
            on = j in chosen[(spec.layer, spec.res)] and (spec.layer, spec.res) in live
            p = None if probs is None else probs.get(f"{spec.label(res)}/{j}")
            width = 0.5 + 4 * p if p is not None else (2.5 if on else 0.6)
            if spec.layer - l == 2:  # a skip path over one layer: an arc, so it does not hide the others
                t = [k / 20 for k in range(21)]
                xs = [l + 2 * v for v in t]
                ys = [-r + 0.28 * math.sin(math.pi * v) for v in t]
            else:
                xs, ys = [l, x1], [-r, y1]
            ax.plot(xs, ys, color="#d62728" if on else "#bbbbbb", lw=width, zorder=2 if on else 1,
                    alpha=1.0 if on else 0.7)
    for l in range(cfg.layers + 1):
        for r in range(len(res)):
            if r > l:
                continue
            alive = (l, r) in live or l == 0
            ax.scatter([l], [-r], s=120, color="#1f77b4" if alive else "#e0e0e0", edgecolor="black", zorder=3)
    for spec_l in [cfg.layers]:
        ax.annotate("head", xy=(spec_l + 0.6, -0.0), fontsize=9)
        for r in range(len(res)):
            if r <= spec_l:
                ax.plot([spec_l, spec_l + 0.5], [-r, 0], color="#2ca02c", lw=1.5, zorder=1)
    ax.set_yticks([-r for r in range(len(res))], [f"1/{s}" for s in res])
    ax.set_xticks(range(cfg.layers + 1), ["stem"] + [str(l) for l in range(1, cfg.layers + 1)])
    ax.set_xlabel("layer")
    ax.set_xlim(-0.4, cfg.layers + 1.1)
    ax.set_title(f"trellis: {cfg.paths_per_node} paths per node (red = chosen, grey = candidates, arcs skip a layer)",
                 fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if own:
        _save(fig, path)


def draw_architecture(arch: Mapping[str, Any], config, path: Union[str, os.PathLike],
                      probs: Optional[Mapping[str, float]] = None) -> None:
    """One picture with the cell on top and the trellis below."""
    cfg = as_space_config(config)
    space_spec(cfg)  # fails early, naming the label, if arch and space disagree below
    fig = Figure(figsize=(max(8, 1.4 * (cfg.layers + 2)), 7.5))
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 1.3]})
    draw_cell(arch, cfg, path, ax=top)
    draw_trellis(arch, cfg, path, probs=probs, ax=bottom)
    fig.tight_layout()
    _save(fig, path)
