import os

import pytest
import torch
from nni.nas.oneshot.pytorch.base_lightning import traverse_and_mutate_submodules
from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedInput, DifferentiableMixedLayer

from conftest import SPACE_YAMLS
from nni_rspnet import RSPNetSpace, SpaceConfig, build_network, random_arch
from nni_rspnet.errors import ConfigError


@pytest.mark.parametrize("path", SPACE_YAMLS, ids=os.path.basename)
def test_every_yaml_supernet_runs_all_candidates_forward_and_backward(path):
    """Under NNI's DARTS supermodules every op and path is computed: no NaN, logits at input size."""
    cfg = SpaceConfig.from_yaml(path)
    torch.manual_seed(0)
    net = RSPNetSpace(cfg)
    mods = traverse_and_mutate_submodules(net, [DifferentiableMixedLayer.mutate, DifferentiableMixedInput.mutate],
                                          {}, topdown=True)
    assert mods, "the space has no choices"
    x = torch.randn(1, cfg.in_channels, 49, 67)  # odd on purpose; small because every candidate runs
    y = net(x)
    assert y.shape == (1, cfg.num_classes, 49, 67)
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("path", SPACE_YAMLS, ids=os.path.basename)
@pytest.mark.parametrize("size", [(64, 128), (97, 131)])
def test_every_yaml_fixed_network_any_input_size(path, size):
    cfg = SpaceConfig.from_yaml(path)
    net = build_network(cfg, random_arch(cfg, seed=sum(size)))
    x = torch.randn(1, cfg.in_channels, *size, requires_grad=True)
    y = net(x)
    assert y.shape == (1, cfg.num_classes, *size)
    y.mean().backward()
    assert torch.isfinite(x.grad).all()


def test_aux_heads_only_in_forward_aux(tiny_cfg):
    tiny_cfg.aux_heads = True
    net = build_network(tiny_cfg, random_arch(tiny_cfg, 0))
    x = torch.randn(1, 3, 40, 52)
    main, aux = net.forward_aux(x)
    assert len(aux) == len(tiny_cfg.resolutions) - 1
    assert all(a.shape == main.shape == (1, 5, 40, 52) for a in aux)
    net.eval()
    torch.testing.assert_close(net(x), net.forward_aux(x)[0])


def test_stem_layers_set_where_the_stem_convolves(tiny_cfg):
    """2, 3 or 4 stem convolutions: 4 adds a stride-1 one at full resolution, 3 one at 1/2; the trellis
    sees 1/4 either way."""
    strides = {}
    for layers in (2, 3, 4):
        tiny_cfg.stem_layers = layers
        net = build_network(tiny_cfg, random_arch(tiny_cfg, 0))
        strides[layers] = [m.stride[0] for m in net.stem.modules() if isinstance(m, torch.nn.Conv2d)]
        x = torch.randn(1, 3, 40, 52)
        assert net(x).shape == (1, tiny_cfg.num_classes, 40, 52)
        assert net.stem(x).shape[-2:] == (10, 13)
    assert strides == {2: [2, 2], 3: [2, 1, 2], 4: [1, 2, 1, 2]}


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,message", [
    ("space:\n  layrs: 3\n", "unknown key 'layrs'"),
    ("space:\n  layers: three\n", "layers: expected an integer"),
    ("space:\n  channels: [16, 30, 64]\n  rsp_depth: 2\n", "channels: 30 is not a positive multiple of"),
    ("space:\n  resolutions: [4, 16]\n  channels: [16, 32]\n", "resolutions must be a prefix"),
    ("space:\n  ops: [conv_3x3, conv_9x9]\n", "unknown op 'conv_9x9'"),
    ("space:\n  layers: 1\n", "layers must be >= len(resolutions) - 1"),
    ("spaec:\n  layers: 3\n", "unknown section 'spaec'"),
    ("- 1\n- 2\n", "expected a mapping of sections"),
    ("space: [1, 2\n", "not valid YAML"),
    ("space:\n  aux_heads: 1\n", "aux_heads: expected true or false"),
    ("space:\n  stem_layers: 5\n", "stem_layers must be one of [2, 3, 4], got 5"),
])
def test_bad_yaml_names_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        SpaceConfig.from_yaml(path)
    assert message in str(err.value)
    assert path in str(err.value)


def test_missing_yaml_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        SpaceConfig.from_yaml(tmp_path / "nope.yaml")
    path = _write(tmp_path, "space:\n  layers: 3\n")
    assert SpaceConfig.from_yaml(path, ["space.layers=5", "space.channels=[8, 16, 32]"]).layers == 5
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        SpaceConfig.from_yaml(path, ["layers=5"])
