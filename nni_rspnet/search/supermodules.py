"""Supermodules of the search: how NNI's one-shot machinery sees our choices during each stage.

- ``ArchParamsMixin``: ``parameters(arch=...)`` as NNI's differentiable supermodules define it, so the
  strategy can split architecture parameters from weights;
- ``TemperedSoftmax``: one ``softmax(x / tau)`` shared by every DARTS mixed layer, so temperature
  annealing reaches them all (NNI 2.10.1's own annealing never does);
- ``FrozenChoice`` and ``make_freeze_hook``: a mutation hook that holds choices at one value during a
  stage (the cell frozen in stage 2, the macro paths "all on" in stage 1).

``path_attention.PathAttention`` is the supermodule of the macro paths in stage 2.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, Mapping, Sequence, Tuple

import torch
from torch import nn

from nni.common.hpo_utils import ParameterSpec
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice

from ..space.choices import FixedInputs

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
            return FrozenChoice(label, None, FixedInputs(list(range(module.n_candidates)), "mean")), True
        return None

    return freeze_hook
