"""Input choices whose fixed form is a plain, scriptable module.

NNI's stock ``InputChoice`` becomes ``ChosenInputs`` under ``fixed_arch``; that module cannot be
scripted. ``FixableInputChoice`` keeps NNI's semantics (one-shot strategies, multi-trial samplers and
exports all see an ordinary ``InputChoice``) but builds ``FixedInputs`` instead. ``PathChoice`` marks
the fusion points of the macro trellis, which path attention replaces during the macro search.

``choose_inputs`` is how spaces use them: it returns the candidate indices that have to be computed
and the module that fuses them. In a supernet every candidate is computed; in a fixed network only
the chosen ones are built at all, so unchosen edges cost nothing.
"""

from typing import Any, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from nni.retiarii.nn.pytorch import InputChoice, LayerChoice
from nni.nas.nn.pytorch.mutation_utils import get_fixed_value


class FixedInputs(nn.Module):
    """Sums (or averages) the inputs at ``chosen``: the fixed form of an input choice."""

    def __init__(self, chosen: Union[int, Sequence[int]], reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.chosen: List[int] = [int(chosen)] if isinstance(chosen, int) else [int(i) for i in chosen]
        if not self.chosen:
            raise ValueError("an input choice must keep at least one input")
        self.mean: bool = reduction == "mean"

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.fuse(inputs, self.chosen)

    def fuse(self, inputs: List[torch.Tensor], chosen: List[int]) -> torch.Tensor:
        """The sum (or mean) of ``inputs`` at ``chosen``."""
        out = inputs[chosen[0]]
        for i in chosen[1:]:
            out = out + inputs[i]
        if self.mean:
            out = out / len(chosen)
        return out

    def extra_repr(self) -> str:
        return f"chosen={self.chosen}, reduction={'mean' if self.mean else 'sum'}"


class FixableInputChoice(InputChoice):
    """An ``InputChoice`` whose fixed form is ``FixedInputs`` (scriptable) instead of ``ChosenInputs``."""

    @classmethod
    def create_fixed_module(cls, n_candidates: int, n_chosen: int = 1, reduction: str = "sum",
                            prior=None, label=None, **kwargs):
        return FixedInputs(get_fixed_value(label), reduction)


class PathChoice(FixableInputChoice):
    """The choice of incoming paths at one node of the macro trellis (replaced by path attention).

    Args:
        n_candidates, n_chosen, reduction, prior, label: as NNI's ``InputChoice``.
        channels: the width of every candidate path (they all arrive at the node's width), for path
            attention's input-dependent scorer; ``None`` leaves it without one.
    """

    def __init__(self, n_candidates: int, n_chosen: Optional[int] = 1, reduction: str = "sum", *,
                 prior: Optional[List[float]] = None, label: Optional[str] = None, channels: Optional[int] = None,
                 **kwargs):
        super().__init__(n_candidates, n_chosen, reduction, prior=prior, label=label, **kwargs)
        self.channels = channels


class OpChoice(LayerChoice):
    """The op of one cell edge: NNI's ``LayerChoice`` that also records the width its candidates were
    built for and how to build them, so a search can rebuild them narrower (partial channels).

    Under ``fixed_arch`` it is the chosen candidate itself, as a plain ``LayerChoice`` is.

    Args:
        candidates: op name -> module, built for ``channels`` in and out.
        label: the choice's label.
        channels: width of the candidates' input and output.
        build: ``build(name, channels) -> nn.Module``, the factory of the candidates.
    """

    def __init__(self, candidates, *, label: Optional[str] = None, channels: int,
                 build: Optional[Any] = None, **kwargs):
        super().__init__(candidates, label=label, **kwargs)
        self.channels = channels
        self.build = build


def choose_inputs(n_candidates: int, n_chosen: int, label: str, kind: Type[FixableInputChoice] = FixableInputChoice,
                  reduction: str = "sum", **choice_kwargs: Any) -> Tuple[List[int], nn.Module]:
    """Creates the choice of ``n_chosen`` among ``n_candidates`` inputs labelled ``label``.

    ``choice_kwargs`` go to ``kind`` (``channels=`` for a ``PathChoice``).

    Returns:
        ``(active, fuse)``: ``active`` are the candidate indices whose inputs must be computed, in
        order; ``fuse`` takes the list of those inputs and returns one tensor. With no real choice
        (``n_candidates <= n_chosen``) no label is created and all inputs are summed.
    """
    if n_candidates <= n_chosen:
        return list(range(n_candidates)), FixedInputs(list(range(n_candidates)), reduction)
    choice = kind(n_candidates, n_chosen, reduction=reduction, label=label, **choice_kwargs)
    if isinstance(choice, FixedInputs):  # built under fixed_arch: keep only the chosen inputs
        if len(set(choice.chosen)) != n_chosen or not all(0 <= i < n_candidates for i in choice.chosen):
            raise ValueError(f"{label}: expected {n_chosen} distinct indices in [0, {n_candidates}), "
                             f"got {choice.chosen}")
        active = sorted(set(choice.chosen))
        return active, FixedInputs(list(range(len(active))), reduction)
    return list(range(n_candidates)), choice
