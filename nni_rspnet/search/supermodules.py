"""Supermodules of the search: how NNI's one-shot machinery sees our choices during each stage.

- ``ArchParamsMixin``: ``parameters(arch=...)`` as NNI's differentiable supermodules define it, so the
  strategy can split architecture parameters from weights;
- ``TemperedSoftmax``: one ``softmax(x / tau)`` shared by every DARTS mixed layer, so temperature
  annealing reaches them all (NNI 2.10.1's own annealing never does);
- ``FrozenChoice`` and ``make_freeze_hook``: a mutation hook that holds choices at one value during a
  stage (the cell frozen in stage 2, the macro paths "all on" in stage 1);
- ``CellMixedOp``: the relaxed op of a cell edge, with PC-DARTS' partial channels and single-path
  sampling for a cheap warm-up and Gumbel (GDAS) sampling for cheap architecture steps.

``path_attention.PathAttention`` is the supermodule of the macro paths in stage 2.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from nni.common.hpo_utils import ParameterSpec
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice

from ..space.choices import FixedInputs, OpChoice

ARCH_PARAM_PREFIX = "_arch_alpha"


class ArchParamsMixin:
    """``named_parameters(arch=...)`` as NNI's differentiable supermodules define it.

    With ``arch=True`` only the architecture parameters (names starting ``_arch_alpha``) are
    yielded, with ``arch=False`` (the default) everything else; NNI's strategies call
    ``parameters(arch=True)`` on every supermodule to build the architecture optimiser.
    """

    def named_parameters(self, *args, arch: bool = False, **kwargs) -> Iterator[Tuple[str, nn.Parameter]]:
        for name, p in super().named_parameters(*args, **kwargs):  # type: ignore[misc]
            if name.split(".")[-1].startswith(ARCH_PARAM_PREFIX) == arch:
                yield name, p

    def parameters(self, *args, arch: bool = False, **kwargs) -> Iterator[nn.Parameter]:
        for _, p in self.named_parameters(*args, arch=arch, **kwargs):
            yield p


class TemperedSoftmax(nn.Softmax):
    """``softmax(x / tau)``; one instance is shared by every DARTS mixed layer so annealing reaches all."""

    def __init__(self, dim: int = -1):
        super().__init__(dim)
        self.tau = 1.0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(inputs / self.tau)


class FrozenChoice(ArchParamsMixin, BaseSuperNetModule):
    """A choice held at one value during a search stage: it runs ``module`` and exports ``value``.

    Args:
        label: the choice's label.
        value: the exported value, or ``None`` for a stage-only setting (e.g. macro paths "all on"
            during stage 1) that must not appear in the export.
        module: what runs: the chosen op, or the fusion of the chosen inputs.
        name: attribute name of ``module``; an op keeps its candidate name so state dicts of the
            relaxed and the frozen supernet line up (stage 2 starts from the stage-1 weights).
    """

    def __init__(self, label: str, value: Any, module: nn.Module, name: str = "inner"):
        super().__init__()
        self.label = label
        self.value = value
        self._inner_name = name
        self.add_module(name, module)

    def forward(self, *args, **kwargs):
        return getattr(self, self._inner_name)(*args, **kwargs)

    def resample(self, memo):
        return {}

    def export(self, memo):
        if self.value is None or self.label in memo:
            return {}
        return {self.label: copy.deepcopy(self.value)}

    def export_probs(self, memo):
        return {}

    def search_space_spec(self) -> Dict[str, ParameterSpec]:
        return {}


def make_freeze_hook(frozen: Mapping[str, Any], all_on: Sequence[str] = ()):
    """A mutation hook that freezes choices: labels in ``frozen`` to their value, and every input
    choice whose label starts with a prefix in ``all_on`` to the uniform average of all its inputs.
    """
    frozen = dict(frozen)
    all_on = tuple(all_on)

    def freeze_hook(module: nn.Module, name: str, memo: Dict[str, Any], mutate_kwargs: Dict[str, Any]):
        label = getattr(module, "label", None)
        if isinstance(module, LayerChoice) and label in frozen:
            value = frozen[label]
            if value not in module.names:
                raise ValueError(f"frozen {label!r}: unknown op {value!r}; expected one of {list(module.names)}")
            return FrozenChoice(label, value, module[value], name=str(value)), True
        if isinstance(module, InputChoice) and label in frozen:
            value = frozen[label]
            return FrozenChoice(label, value, FixedInputs(value, module.reduction)), True
        if isinstance(module, InputChoice) and label.startswith(all_on):
            return FrozenChoice(label, None, SampledInputs(module.n_candidates, module.n_chosen or 1)), True
        return None

    return freeze_hook


class SampledInputs(FixedInputs):
    """The macro paths of stage 1: the mean of every input, or, while ``sample`` is set and the module
    trains, the mean of ``k`` inputs drawn uniformly (without replacement) for each step.

    Sampling paths during the warm-up trains the shared weights on the sub-networks the space can
    export (a node fuses ``k`` paths, not all of them), as SPOS does for ops: a supernet trained with
    every path on scores sub-networks it never ran, and ranked them no better than chance.
    """

    def __init__(self, n: int, k: int):
        super().__init__(list(range(n)), "mean")
        self.n, self.k = n, k
        self.sample = False

    def forward(self, inputs):  # type: ignore[override]
        if self.sample and self.training and self.k < self.n:
            return self.fuse(inputs, sorted(torch.randperm(self.n)[: self.k].tolist()))
        return super().forward(inputs)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: ``(N, g * c, H, W)`` -> channels interleaved across the ``g`` groups."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class CellMixedOp(DifferentiableMixedLayer):
    """The relaxed op of a cell edge: NNI's DARTS mixed layer, with two additions.

    - **Partial channels** (PC-DARTS, Xu et al., 2020): with ``k > 1`` only ``1/k`` of the edge's
      channels go through the candidates (rebuilt at ``C/k`` from the ``OpChoice``'s factory), the
      rest bypass, then the channels are shuffled: ``shuffle(cat(sum_i w_i op_i(x[:C/k]), x[C/k:]))``.
      The relaxed cell costs about ``1/k`` as much; the exported network is unchanged. The edge
      normalisation of PC-DARTS is the input choice of each node, which the search already relaxes to
      a softmax-weighted sum of the node's edges.
    - **Single-path sampling** (``sample = True``, set by the strategy during the warm-up): in training
      each forward runs one candidate drawn uniformly, as in SPOS (Guo et al., 2020), so a warm-up
      step costs about one network rather than every candidate, and every candidate's weights learn
      to work alone before the architecture parameters start to move.
    - **Gumbel sampling** (``gumbel = True``, set by the strategy for the architecture steps of
      ``stage1_arch_sampling``), as GDAS (Dong and Yang, 2019): in training each forward draws one
      candidate from ``softmax((alpha + g) / tau)`` with Gumbel noise ``g`` and runs it alone, scaled by
      the straight-through one-hot weight (1 in the forward pass, the soft weight's gradient in the
      backward pass). The architecture step then costs one sub-network instead of every candidate, and
      it scores the sub-networks that the sampled weight steps train, not a mixture they never run.

    The architecture parameters, the export (argmax op name) and the probabilities are those of
    ``DifferentiableMixedLayer``.

    Args:
        paths, alpha, softmax, label: as ``DifferentiableMixedLayer`` (``paths`` at ``C/k`` channels).
        k: the channel fraction's denominator (1: every channel).
    """

    def __init__(self, paths, alpha: torch.Tensor, softmax: nn.Module, label: str, k: int = 1):
        super().__init__(paths, alpha, softmax, label)
        self.k = k
        self.sample = False
        self.gumbel = False
        self.chosen: Optional[int] = None  # set to score one sub-network: only that candidate runs

    @classmethod
    def mutate(cls, module, name, memo, mutate_kwargs):
        """Mutation hook for every ``OpChoice`` (``mutate_kwargs['partial_channels']`` is ``k``; a width
        that ``k`` does not divide keeps every channel); other choices are left to the next hook."""
        if not isinstance(module, OpChoice) or module.build is None:
            return None
        k = int(mutate_kwargs.get("partial_channels") or 1)
        if module.channels % k:
            k = 1
        alpha = memo.get(module.label)
        if alpha is None:
            alpha = nn.Parameter(torch.randn(len(module)) * 1e-3)
            memo[module.label] = alpha
        elif len(alpha) != len(module):
            raise ValueError(f"{module.label}: two choices share the label with {len(alpha)} and {len(module)} "
                             f"candidates")
        if k == 1:
            paths = list(module.named_children())
        else:
            paths = [(op, module.build(op, module.channels // k)) for op in module.names]
        return cls(paths, alpha, mutate_kwargs.get("softmax", nn.Softmax(-1)), module.label, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        c = x.shape[1] // self.k
        part = x[:, :c] if self.k > 1 else x
        if self.chosen is not None:
            mixed = getattr(self, self.op_names[self.chosen])(part)
        elif self.sample and self.training:
            mixed = getattr(self, self.op_names[int(torch.randint(len(self.op_names), ()))])(part)
        elif self.gumbel and self.training:
            hard = nn.functional.gumbel_softmax(self._arch_alpha, tau=getattr(self._softmax, "tau", 1.0), hard=True)
            index = int(hard.argmax())
            mixed = hard[index] * getattr(self, self.op_names[index])(part)
        else:
            weights = self._softmax(self._arch_alpha)
            mixed = sum(w * getattr(self, op)(part) for w, op in zip(weights, self.op_names))
        if self.k == 1:
            return mixed
        return channel_shuffle(torch.cat([mixed, x[:, c:]], dim=1), self.k)
