"""Decoding, as pure functions of plain values: top-k choice and reachability pruning.

- ``top_k``: the candidates a choice keeps, from scores (probabilities, attention); ties go to the
  lower index, so a decision is deterministic. Path attention exports with it, the cost table decodes
  probabilities with it.
- ``live_nodes``: the nodes of a graph whose output reaches the head, given the sources each node's
  chosen inputs come from. The fixed network builds only those (``macro.Trellis``); the drawing fades
  the others (``draw.draw_trellis``).
"""
from __future__ import annotations

from typing import Hashable, Iterable, List, Mapping, Sequence, Set, TypeVar

Node = TypeVar("Node", bound=Hashable)


def top_k(scores: Sequence[float], k: int) -> List[int]:
    """Indices of the ``k`` largest scores, sorted; ties go to the lower index (deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def live_nodes(sources: Mapping[Node, Iterable[Node]], outputs: Iterable[Node]) -> Set[Node]:
    """The outputs and, recursively, every source of a live node: the nodes that reach an output.

    Args:
        sources: node -> the nodes its chosen inputs come from (a node absent here has no inputs).
        outputs: the nodes the head reads.
    """
    live = set(outputs)
    todo = list(live)
    while todo:
        for src in sources.get(todo.pop(), ()):
            if src not in live:
                live.add(src)
                todo.append(src)
    return live
