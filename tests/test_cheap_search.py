"""The cheap forms of the search: RSP's single form, PC-DARTS' partial channels and the single-path
warm-up (space.cell, space.choices.OpChoice, search.supermodules.CellMixedOp)."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from nni.retiarii import fixed_arch
from nni.retiarii.nn.pytorch import LayerChoice

from nni_rspnet.search.strategy import CELL_PREFIX, MACRO_PREFIX, RSPDartsModule
from nni_rspnet.search.supermodules import CellMixedOp, channel_shuffle
from nni_rspnet.seg.train import SegmentationModule
from nni_rspnet.space.cell import Cell, RSPBlock, make_block
from nni_rspnet.space.choices import OpChoice
from nni_rspnet.space.model import RSPNetSpace, SpaceConfig

OPS = ["skip_connect", "conv_3x3", "sep_conv_3x3"]
SPACE = dict(name="t", num_classes=3, stem_channels=8, resolutions=[4, 8], channels=[16, 32], layers=2,
             cell_nodes=2, ops=OPS, rsp_depth=1, rsp_form="single", head_channels=8)
SETTINGS = dict(arc_learning_rate=0.01, arc_weight_decay=0.0, gradient_clip_val=None, tau_init=1.0, tau_min=1.0)


def _cells(module):
    return [m for m in module.modules() if isinstance(m, Cell)]


@pytest.mark.parametrize("form,widths", [("nested", [8, 4]), ("single", [4])])
def test_rsp_forms_put_cells_where_they_say(form, widths):
    block = make_block(16, 2, OPS, num_nodes=2, form=form)
    assert [c.project[0].out_channels for c in _cells(block)] == widths
    x = torch.randn(2, 16, 9, 11)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="form"):
        RSPBlock(16, 1, OPS, form="twisted")


def test_op_choice_is_a_layer_choice_whose_fixed_form_is_the_op():
    cell = Cell(8, OPS, num_nodes=1)
    choice = cell.edges[0][0]
    assert isinstance(choice, OpChoice) and isinstance(choice, LayerChoice) and choice.channels == 8
    assert choice.build("conv_3x3", 4)(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)
    with fixed_arch({"cell/node0/op0": "conv_3x3"}, verbose=False):
        fixed = Cell(8, OPS, num_nodes=1)
    assert not isinstance(fixed.edges[0][0], LayerChoice)


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def _stage1(partial_channels, sampling=False, warmup=0, stage1_weight_sampling=False, stage1_arch_sampling=False,
            **space):
    cfg = SpaceConfig(**{**SPACE, **space})
    inner = SegmentationModule(cfg.num_classes, lr=0.01)
    inner.running_mode = "oneshot"
    inner.set_model(RSPNetSpace(cfg))
    return RSPDartsModule(inner, all_on=(MACRO_PREFIX,), partial_channels=partial_channels,
                          warmup_sampling=sampling, path_sampling="warmup", warmup_epochs=warmup,
                          stage1_weight_sampling=stage1_weight_sampling, stage1_arch_sampling=stage1_arch_sampling,
                          **SETTINGS)


def test_partial_channels_build_narrower_candidates_and_keep_shapes_and_exports():
    full, partial = _stage1(1), _stage1(2)
    mixed = [m for m in partial.nas_modules if isinstance(m, CellMixedOp)]
    assert mixed and all(m.k == 2 for m in mixed)
    # cells see 8 (1/4) and 16 (1/8) channels at RSP depth 1; K = 2 halves what the candidates see
    assert {getattr(m, "conv_3x3")[0].in_channels for m in mixed} == {4, 8}
    n_full = sum(p.numel() for p in full.model.model.parameters())
    n_partial = sum(p.numel() for p in partial.model.model.parameters())
    assert n_partial < n_full
    x = torch.randn(2, 3, 32, 64)
    assert partial.model.model(x).shape == full.model.model(x).shape == (2, 3, 32, 64)
    labels = set(partial.export()) | {k.rsplit("/", 1)[0] for k in partial.export_probs()}
    assert {k for k in full.export() if k.startswith(CELL_PREFIX)} <= labels


def test_sampled_warmup_runs_one_candidate_per_edge_and_chosen_pins_it():
    module = _stage1(1, sampling=True, warmup=1)
    mixed = next(m for m in module.nas_modules if isinstance(m, CellMixedOp))
    calls = []
    for name in mixed.op_names:
        getattr(mixed, name).register_forward_hook(lambda mod, i, o, n=name: calls.append(n))
    x = torch.randn(2, 8, 5, 5)
    mixed.train()
    mixed.sample = True
    mixed(x)
    assert len(calls) == 1  # one candidate ran
    calls.clear()
    mixed.sample = False
    mixed(x)
    assert sorted(calls) == sorted(mixed.op_names)  # relaxed: every candidate
    calls.clear()
    mixed.chosen = mixed.op_names.index("conv_3x3")
    out = mixed(x)
    assert calls == ["conv_3x3"] and torch.equal(out, getattr(mixed, "conv_3x3")(x))


def test_sampled_paths_fuse_k_of_n_inputs_in_training_and_all_otherwise():
    from nni_rspnet.search.supermodules import SampledInputs
    module = _stage1(1, sampling=True, warmup=1, paths_per_node=1)  # two candidate paths, one kept
    paths = module.sampled_paths()
    assert paths and all(isinstance(p, SampledInputs) for p in paths)
    assert any(p.k < p.n for p in paths)  # some node has more candidate paths than it keeps
    fuse = SampledInputs(4, 2)
    inputs = [torch.full((1, 1, 2, 2), float(10 ** i)) for i in range(4)]
    assert fuse(inputs).flatten()[0].item() == pytest.approx(1111 / 4)  # not sampling: the mean of all
    fuse.sample = True
    fuse.train()
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        value = fuse(inputs).flatten()[0].item() * 2  # the sum of two distinct inputs
        digits = f"{round(value):04d}"
        assert sorted(digits) == ["0", "0", "1", "1"]
        seen.add(digits)
    assert len(seen) == 6  # every pair of the four is drawn
    fuse.eval()
    assert fuse(inputs).flatten()[0].item() == pytest.approx(1111 / 4)  # evaluation: the mean of all
    fuse.chosen = [1, 3]
    assert fuse(inputs).flatten()[0].item() == pytest.approx(1010 / 2)  # a scored sub-network


@pytest.mark.parametrize("weight_sampling, arch_sampling", [(False, False), (True, False), (True, True)])
def test_stage1_sampling_runs_one_candidate_per_edge_in_the_steps_it_samples(weight_sampling, arch_sampling):
    """Candidate forwards per step of the cell search: the architecture step runs every candidate of an
    edge (the DARTS gradient), or one with ``stage1_arch_sampling`` (GDAS); the weight step runs every one
    too, or one with ``stage1_weight_sampling``. Afterwards the edges are relaxed again (validation and
    export see the relaxed cell), and the architecture parameters have moved."""
    module = _stage1(1, stage1_weight_sampling=weight_sampling, stage1_arch_sampling=arch_sampling)
    mixed = [m for m in module.nas_modules if isinstance(m, CellMixedOp)]
    calls = []
    for m in mixed:
        for name in m.op_names:
            getattr(m, name).register_forward_hook(lambda mod, i, o: calls.append(1))
    per_step = []
    inner_step = module.model.training_step

    def counted(batch, batch_idx):
        calls.clear()
        out = inner_step(batch, batch_idx)
        per_step.append(len(calls))
        return out

    module.model.training_step = counted
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 64, generator=g),
                                          torch.randint(0, 3, (4, 32, 64), generator=g))
    loaders = {"train": torch.utils.data.DataLoader(data, batch_size=4),
               "val": torch.utils.data.DataLoader(data, batch_size=4)}
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    alphas = [m._arch_alpha.detach().clone() for m in mixed]
    trainer.fit(module, loaders)
    edges, candidates = len(mixed), sum(len(m.op_names) for m in mixed)
    assert per_step[0] == (edges if arch_sampling else candidates)  # the architecture step
    assert per_step[1] == (edges if weight_sampling else candidates)  # the weight step
    assert not any(m.sample or m.gumbel for m in mixed)
    assert all(not torch.equal(a, m._arch_alpha) for a, m in zip(alphas, mixed))


def test_gumbel_sampling_runs_the_drawn_candidate_and_passes_the_soft_gradient_to_every_alpha():
    """GDAS' straight-through estimator: the forward value is the drawn candidate's output alone (weight 1);
    the backward pass reaches every architecture parameter of the edge through the soft weights."""
    mixed = next(m for m in _stage1(1).nas_modules if isinstance(m, CellMixedOp))
    mixed.train()
    mixed.gumbel = True
    x = torch.randn(2, 8, 5, 5)
    drawn = []
    for name in mixed.op_names:
        getattr(mixed, name).register_forward_hook(lambda mod, i, o, n=name: drawn.append(n))
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        drawn.clear()
        mixed._arch_alpha.grad = None
        out = mixed(x)
        assert len(drawn) == 1
        seen.add(drawn[0])
        torch.testing.assert_close(out, getattr(mixed, drawn[0])(x))
        out.square().mean().backward()
        grad = mixed._arch_alpha.grad
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).sum() == len(mixed.op_names)
    assert len(seen) > 2  # near-uniform alphas: many candidates drawn
    with torch.no_grad():
        mixed._arch_alpha.zero_()
        mixed._arch_alpha[mixed.op_names.index("conv_3x3")] = 20.0
    drawn.clear()
    for _ in range(5):
        mixed(x)
    assert set(drawn[::2]) == {"conv_3x3"}  # a dominant alpha is drawn (every second hook call is the check's)


@pytest.mark.parametrize("weight_sampling", [False, True])
def test_cell_search_validates_the_argmax_sub_network_when_its_weight_steps_are_sampled(weight_sampling):
    """With sampled weight steps the cell search's validation runs each edge's argmax op alone (what the stage
    exports, and what the weights were trained as); relaxed weight steps keep the relaxed validation."""
    module = _stage1(1, stage1_weight_sampling=weight_sampling, stage1_arch_sampling=weight_sampling)
    mixed = [m for m in module.nas_modules if isinstance(m, CellMixedOp)]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in mixed:
            m._arch_alpha.copy_(torch.randn(len(m.op_names), generator=g))
    ran = []
    for m in mixed:
        for name in m.op_names:
            getattr(m, name).register_forward_hook(
                lambda mod, i, o, m=m, n=name: ran.append((m, n)) if not mod.training else None)
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 64, generator=g),
                                          torch.randint(0, 3, (4, 32, 64), generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=0)
    trainer.validate(module, loader, verbose=False)
    if weight_sampling:
        assert len(ran) == len(mixed)  # one op per edge
        assert all(n == m.op_names[int(m._arch_alpha.argmax())] for m, n in ran)
        assert len({n for _, n in ran}) > 1  # the argmaxes differ between edges
    else:
        assert len(ran) == sum(len(m.op_names) for m in mixed)
    assert all(m.chosen is None for m in mixed)  # released after validation
