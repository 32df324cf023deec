"""Path attention: the supermodule that searches the incoming paths of every macro-trellis node.

During the macro search each ``PathChoice`` (an ``InputChoice`` of ``n_chosen=k`` among ``n``
candidate paths, see ``space/choices.py``) is replaced, through the NNI one-shot mutation hook
``PathAttention.mutate``, by a module that fuses *all* candidate paths with the weights::

    a = softmax((beta + h(pooled inputs)) / tau)

``beta`` holds the architecture logits, one per path (an ``_arch_alpha`` parameter, trained on the
validation split by the architecture optimiser, shared by choices that share a label); ``h`` is a
small input-dependent scorer (global average pooling of each path, then one linear layer shared by
the paths) whose weights are ordinary weights, trained on the training split. ``tau`` is annealed by
the strategy. The scorer starts at zero, so a fresh node weighs its paths by ``softmax(beta / tau)``.

The exported decision keeps the top-``k`` paths of each node by *mean attention over validation
data* (accumulated while the module is in eval mode, reset by ``reset_attention``); before any
validation data is seen it falls back to ``softmax(beta / tau)``. Ties go to the lower index.

The fixed form of a path choice (what ``fixed_arch`` builds) is ``choices.FixedInputs``: a plain,
scriptable sum of the chosen paths; only the chosen paths are built at all.

Reference: RSPNet (path attention over a multi-resolution trellis), after Auto-DeepLab (Liu et al.,
2019) and DARTS (Liu et al., 2019).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nni.common.hpo_utils import ParameterSpec
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

from ..space.choices import PathChoice
from ..space.decode import top_k
from .supermodules import ArchParamsMixin

class PathAttention(ArchParamsMixin, BaseSuperNetModule):
    """Attention-weighted fusion of all candidate paths of one trellis node (the search form).

    Args:
        n_candidates: number of incoming paths.
        n_chosen: ``k``, paths kept at export.
        label: the choice's label (``macro/l{l}_s{s}/paths``).
        alpha: the ``beta`` logits (an ``nn.Parameter`` of ``n_candidates``), shared through NNI's memo.
        channels: width of the candidate inputs (all arrive at the node's width); ``None`` disables
            the input-dependent scorer ``h`` (attention from ``beta`` alone).
        reduction: ``'sum'`` or ``'mean'``, the fixed form's reduction (for the record only: the
            search form always takes the attention-weighted sum, whose weights add up to one).
    """

    def __init__(self, n_candidates: int, n_chosen: int, label: str, alpha: nn.Parameter,
                 channels: Optional[int], reduction: str = "sum"):
        super().__init__()
        if alpha.shape != (n_candidates,):
            raise ValueError(f"{label}: beta must have shape ({n_candidates},), got {tuple(alpha.shape)}")
        if not 1 <= n_chosen <= n_candidates:
            raise ValueError(f"{label}: n_chosen must be in [1, {n_candidates}], got {n_chosen}")
        self.label = label
        self.n_candidates = n_candidates
        self.n_chosen = n_chosen
        self.reduction = reduction
        self._arch_alpha = alpha
        self.tau = 1.0
        self.scorer: Optional[nn.Linear] = None
        if channels is not None:
            self.scorer = nn.Linear(channels, 1)
            # Zero start: the scorer only departs from softmax(beta) as far as training pushes it.
            nn.init.zeros_(self.scorer.weight)
            nn.init.zeros_(self.scorer.bias)
        self.register_buffer("attention_sum", torch.zeros(n_candidates))
        self.register_buffer("attention_count", torch.zeros(()))

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: Dict[str, Any], mutate_kwargs: Dict[str, Any]):
        """NNI mutation hook: replaces a ``PathChoice`` by ``PathAttention``.

        The scorer's input width is the choice's own ``channels``; a choice without one gets no
        input-dependent scorer.
        """
        if not isinstance(module, PathChoice):
            return None
        if module.reduction not in ("sum", "mean"):
            raise ValueError(f"{module.label}: path attention needs reduction 'sum' or 'mean', got {module.reduction!r}")
        n = module.n_candidates
        alpha = memo.get(module.label)
        if alpha is None:
            alpha = nn.Parameter(torch.zeros(n))
            memo[module.label] = alpha
        elif len(alpha) != n:
            raise ValueError(f"{module.label}: two choices share the label with {len(alpha)} and {n} candidates")
        return cls(n, module.n_chosen or 1, module.label, alpha, module.channels, module.reduction)

    def logits(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        """``beta + h(pooled inputs)``, shape ``(N, n_candidates)``."""
        beta = self._arch_alpha.unsqueeze(0)
        if self.scorer is None:
            return beta.expand(inputs[0].shape[0], -1)
        pooled = torch.stack([x.mean(dim=(2, 3)) for x in inputs], dim=1)  # (N, n, C)
        return beta + self.scorer(pooled).squeeze(-1)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        if len(inputs) != self.n_candidates:
            raise ValueError(f"{self.label}: expected {self.n_candidates} inputs, got {len(inputs)}")
        weights = F.softmax(self.logits(inputs) / self.tau, dim=-1)  # (N, n)
        if not self.training:
            # Validation statistics for the export: the mean attention each path receives.
            self.attention_sum += weights.detach().sum(0).to(self.attention_sum)
            self.attention_count += weights.shape[0]
        out = weights[:, 0, None, None, None] * inputs[0]
        for i in range(1, self.n_candidates):
            out = out + weights[:, i, None, None, None] * inputs[i]
        return out

    def reset_attention(self) -> None:
        """Forgets the accumulated validation attention (called at each validation epoch's start)."""
        self.attention_sum.zero_()
        self.attention_count.zero_()

    def static_probs(self) -> torch.Tensor:
        """``softmax(beta / tau)``: the input-independent part, differentiable (used by cost penalties)."""
        return F.softmax(self._arch_alpha / self.tau, dim=-1)

    def mean_attention(self) -> torch.Tensor:
        """Mean attention over the validation data seen, else ``softmax(beta / tau)``."""
        if float(self.attention_count) > 0:
            return (self.attention_sum / self.attention_count).detach()
        return self.static_probs().detach()

    def resample(self, memo: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    def export(self, memo: Dict[str, Any]) -> Dict[str, Any]:
        if self.label in memo:
            return {}
        return {self.label: top_k(self.mean_attention().tolist(), self.n_chosen)}

    def export_probs(self, memo: Dict[str, Any]) -> Dict[str, Any]:
        if any(k.startswith(self.label + "/") for k in memo):
            return {}
        return {f"{self.label}/{i}": float(p) for i, p in enumerate(self.mean_attention().tolist())}

    def search_space_spec(self) -> Dict[str, ParameterSpec]:
        return {self.label: ParameterSpec(self.label, "choice", list(range(self.n_candidates)), (self.label,), True,
                                          size=self.n_candidates, chosen_size=self.n_chosen)}

    def extra_repr(self) -> str:
        return (f"label={self.label!r}, n_candidates={self.n_candidates}, n_chosen={self.n_chosen}, "
                f"tau={self.tau:.3g}, scorer={'on' if self.scorer is not None else 'off'}")


def attention_modules(module: nn.Module) -> List[PathAttention]:
    """Every ``PathAttention`` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, PathAttention)]


def mean_attention(module: nn.Module) -> Mapping[str, List[float]]:
    """Label -> mean validation attention of each path, for every path attention inside ``module``."""
    return {m.label: m.mean_attention().tolist() for m in attention_modules(module)}
