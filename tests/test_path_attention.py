"""Path attention: weights, the input-dependent scorer, validation statistics, export, the NNI hook."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from nni.retiarii import fixed_arch
from nni.retiarii.evaluator.pytorch import LightningModule

from nni_rspnet.space.choices import FixedInputs, PathChoice
from nni_rspnet.search.path_attention import PathAttention, mean_attention
from nni_rspnet.space.model import RSPNet




def make(n=3, k=1, channels=4, beta=None):
    alpha = nn.Parameter(torch.zeros(n) if beta is None else torch.tensor(beta, dtype=torch.float32))
    return PathAttention(n, k, "macro/l1_s4/paths", alpha, channels)


def inputs(n=3, batch=2, channels=4):
    torch.manual_seed(0)
    return [torch.randn(batch, channels, 5, 6) for _ in range(n)]


def test_fresh_module_is_the_uniform_average_and_beta_shifts_it():
    xs = inputs()
    out = make()(xs)
    assert out.shape == (2, 4, 5, 6)
    assert torch.allclose(out, sum(xs) / 3, atol=1e-6)
    m = make(beta=[10.0, 0.0, 0.0])
    assert torch.allclose(m(xs), xs[0], atol=1e-3)


def test_temperature_sharpens_the_weights():
    m = make(beta=[1.0, 0.0, 0.0])
    m.tau = 1.0
    soft = m.static_probs()[0].item()
    m.tau = 0.1
    assert m.static_probs()[0].item() > soft > 1 / 3


def test_scorer_is_input_dependent_and_trained_as_a_weight():
    m = make()
    assert [n for n, _ in m.named_parameters(arch=True)] == ["_arch_alpha"]
    assert sorted(n for n, _ in m.named_parameters()) == ["scorer.bias", "scorer.weight"]
    with torch.no_grad():
        m.scorer.weight.fill_(1.0)
    xs = inputs()
    xs[1] = xs[1] + 5.0  # a path with a large mean gets a large score from a positive scorer
    logits = m.logits(xs)
    assert logits.shape == (2, 3) and bool((logits[:, 1] > logits[:, 0]).all())
    loss = m(xs).pow(2).mean()
    loss.backward()
    assert m.scorer.weight.grad is not None and m._arch_alpha.grad is not None


def test_export_uses_mean_validation_attention_and_falls_back_to_beta():
    m = make(n=4, k=2, beta=[0.0, 3.0, 2.0, 0.0])
    assert m.export({}) == {"macro/l1_s4/paths": [1, 2]}  # no validation seen: softmax(beta)
    assert sum(m.export_probs({}).values()) == pytest.approx(1.0)
    with torch.no_grad():
        m.scorer.weight.fill_(1.0)
    xs = [torch.full((3, 4, 2, 2), v) for v in (2.0, 0.0, 0.0, 2.0)]  # h favours paths 0 and 3 strongly
    m.train()
    m(xs)
    assert float(m.attention_count) == 0  # training batches do not count
    m.eval()
    m(xs)
    assert float(m.attention_count) == 3
    assert m.export({}) == {"macro/l1_s4/paths": [0, 3]}
    probs = m.export_probs({})
    assert probs["macro/l1_s4/paths/0"] > probs["macro/l1_s4/paths/1"]
    assert mean_attention(nn.Sequential(m))["macro/l1_s4/paths"] == pytest.approx(list(probs.values()))
    m.reset_attention()
    assert m.export({}) == {"macro/l1_s4/paths": [1, 2]}
    assert m.export({"macro/l1_s4/paths": [0, 1]}) == {}  # first label wins, as in NNI


def test_ties_go_to_the_lower_index():
    assert make(n=4, k=2).export({}) == {"macro/l1_s4/paths": [0, 1]}


def test_bad_arguments_raise_naming_the_label():
    with pytest.raises(ValueError, match="l1_s4.*shape"):
        PathAttention(3, 1, "macro/l1_s4/paths", nn.Parameter(torch.zeros(2)), 4)
    with pytest.raises(ValueError, match="n_chosen"):
        PathAttention(3, 4, "macro/l1_s4/paths", nn.Parameter(torch.zeros(3)), 4)
    with pytest.raises(ValueError, match="expected 3 inputs"):
        make()(inputs(n=2))


def test_mutation_hook_replaces_path_choices_and_shares_labels(tiny_cfg):
    memo = {}
    choice = PathChoice(3, 2, reduction="sum", label="macro/l2_s4/paths", channels=8)
    assert choice.channels == 8  # carried from construction: no side channel from the config
    a = PathAttention.mutate(choice, "fuse", memo, {})
    b = PathAttention.mutate(PathChoice(3, 2, reduction="sum", label="macro/l2_s4/paths"), "fuse", memo, {})
    assert isinstance(a, PathAttention) and a.n_chosen == 2 and a.scorer.in_features == 8
    assert a._arch_alpha is b._arch_alpha and b.scorer is None
    assert PathAttention.mutate(nn.Conv2d(1, 1, 1), "conv", memo, {}) is None
    with pytest.raises(ValueError, match="share the label"):
        PathAttention.mutate(PathChoice(4, 2, reduction="sum", label="macro/l2_s4/paths"), "fuse", memo, {})


def test_hook_works_inside_stock_darts_on_the_real_space(tiny_cfg):
    class Inner(LightningModule):
        def forward(self, x):
            return self.model(x)

    inner = Inner()
    inner.set_model(RSPNet(tiny_cfg))
    widths = {m.label: m.channels for m in inner.model.modules() if isinstance(m, PathChoice)}
    assert widths and set(widths.values()) <= set(tiny_cfg.channels)
    module = DartsLightningModule(inner, mutation_hooks=[PathAttention.mutate])  # stock DARTS, our hook first
    attention = [m for m in module.nas_modules if isinstance(m, PathAttention)]
    assert sorted(m.label for m in attention) == sorted(widths)
    assert all(m.scorer.in_features == widths[m.label] for m in attention)
    out = module(torch.randn(2, 3, 32, 64))
    assert out.shape == (2, tiny_cfg.num_classes, 32, 64)
    exported = module.export()
    assert all(len(exported[label]) == tiny_cfg.paths_per_node for label in widths)


def test_fixed_form_is_plain_and_scriptable(tiny_cfg):
    label = sorted(m.label for m in RSPNet(tiny_cfg).modules() if isinstance(m, PathChoice))[0]
    with fixed_arch({label: [0, 2]}, verbose=False):
        fixed = PathChoice(3, 2, reduction="sum", label=label)
    assert isinstance(fixed, FixedInputs) and fixed.chosen == [0, 2]
    scripted = torch.jit.script(fixed)
    xs = inputs()
    assert torch.equal(scripted(xs), xs[0] + xs[2])
