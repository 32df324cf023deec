import json
import os
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from nni.retiarii import fixed_arch
from nni.retiarii.nn.pytorch import InputChoice, LayerChoice

from nni_rspnet import RSPNet, SpaceConfig, build_network, describe, load_arch, random_arch, save_arch, validate
import nni_rspnet.space.arch as arch_mod
from nni_rspnet.errors import ArchError
from nni_rspnet.space.arch import search_space_size_log10, space_spec
from nni_rspnet.measure import count_params


def test_space_spec_labels(tiny_cfg):
    spec = space_spec(tiny_cfg)
    assert spec["cell/node0/op0"].names == ("skip_connect", "sep_conv_3x3", "zoomed_conv")
    assert (spec["cell/node2/in"].n_candidates, spec["cell/node2/in"].n_chosen) == (3, 2)
    macro = [k for k in spec if k.startswith("macro/")]
    assert macro and all(k.endswith("/paths") for k in macro)
    assert search_space_size_log10(tiny_cfg) > 3


def test_random_arch_is_valid_and_deterministic(tiny_cfg):
    a = random_arch(tiny_cfg, 3)
    assert a == random_arch(tiny_cfg, 3)
    assert validate(a, tiny_cfg) == a
    assert any(random_arch(tiny_cfg, s) != a for s in range(4, 10))


def test_rebuild_twice_same_params_and_outputs(tiny_cfg):
    arch = random_arch(tiny_cfg, 1)
    a, b = build_network(tiny_cfg, arch), build_network(tiny_cfg, arch)
    assert count_params(a) == count_params(b)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(2, 3, 37, 53)
    assert torch.equal(a(x), b(x))


def test_seeded_build_does_not_depend_on_what_the_process_built_before(tiny_cfg, monkeypatch):
    """The first build of a space reads its choices off a supernet it constructs; that must not draw from the
    caller's seeded generator, or the same seed gives another network in a fresh process."""
    arch = random_arch(tiny_cfg, 2)
    monkeypatch.setattr(arch_mod, "_SPECS", OrderedDict())  # as in a fresh process
    torch.manual_seed(7)
    first = build_network(tiny_cfg, arch).state_dict()
    assert len(arch_mod._SPECS) == 1  # this build did construct the supernet
    torch.manual_seed(7)
    second = build_network(tiny_cfg, arch).state_dict()
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_fixed_network_is_plain_and_pruned(tiny_cfg):
    arch = random_arch(tiny_cfg, 2)
    net = build_network(tiny_cfg, arch)
    assert type(net) is RSPNet
    assert not [m for m in net.modules() if isinstance(m, (LayerChoice, InputChoice))]
    assert not {type(m).__module__ for m in net.modules() if type(m).__module__.split(".")[0] == "nni"}
    # l3_s4 <- (l2_s4, l2_s8 up, l1_s4 skip), l3_s8 <- (l2_s4 down, l2_s8, l1_s8 skip): choosing [0, 2]
    # for both leaves l2_s8 unused, so the fixed network does not build it (6 nodes in the supernet).
    arch.update({"macro/l3_s4/paths": [0, 2], "macro/l3_s8/paths": [0, 2]})
    assert "l3_s8 <- l2_s4 (down), l1_s8" in describe(arch, tiny_cfg)
    pruned = build_network(tiny_cfg, arch)
    assert len(RSPNet(tiny_cfg).nodes) == 6 and len(pruned.nodes) == 5
    assert pruned(torch.randn(1, 3, 32, 48)).shape == (1, 5, 32, 48)


def test_torchscript_round_trip_and_runs_without_nni(tiny_cfg, tmp_path):
    net = build_network(tiny_cfg, random_arch(tiny_cfg, 4)).eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    x = torch.randn(1, 3, 45, 61)
    loaded = torch.jit.load(str(path))
    assert torch.equal(loaded(x), net(x))
    torch.save(x, tmp_path / "x.pt")
    torch.save(net(x), tmp_path / "y.pt")
    code = (
        "import sys; sys.modules['nni'] = None\n"
        "try:\n    import nni\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('nni importable')\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"  # as in this process (conftest), so the float sums run in the same order
        f"m = torch.jit.load({str(path)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        f"y = torch.load({str(tmp_path / 'y.pt')!r}, weights_only=True)\n"
        "assert (m(x) - y).abs().max().item() <= 1e-6, (m(x) - y).abs().max().item()\n"
        "print('ok', tuple(m(x).shape), 'nni' in sys.modules and sys.modules['nni'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok (1, 5, 45, 61) False"


def test_save_load_round_trip_and_fixed_arch(tiny_cfg, tmp_path):
    arch = random_arch(tiny_cfg, 5)
    path = tmp_path / "sub" / "arch.json"
    save_arch(arch, path, tiny_cfg)
    assert load_arch(path, tiny_cfg) == arch
    assert not list(path.parent.glob(".tmp-*"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with fixed_arch(str(path), verbose=False):  # NNI's own loader reads the same file
        net = RSPNet(tiny_cfg)
    assert count_params(net) == count_params(build_network(tiny_cfg, path))


def test_nni_style_single_index_is_accepted(tiny_cfg):
    tiny_cfg.paths_per_node = 1
    arch = random_arch(tiny_cfg, 0)
    label = next(k for k in arch if k.startswith("macro/"))
    arch[label] = arch[label][0]  # NNI exports an int when one input is chosen
    assert validate(arch, tiny_cfg)[label] == [arch[label]]


def _bad(tiny_cfg, mutate):
    arch = random_arch(tiny_cfg, 0)
    mutate(arch)
    return arch


def test_error_not_a_json_object(tiny_cfg, tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[1, 2]")
    with pytest.raises(ArchError, match=r"a\.json: expected a JSON object"):
        load_arch(path, tiny_cfg)
    path.write_text("{not json")
    with pytest.raises(ArchError, match=r"a\.json: not valid JSON"):
        load_arch(path, tiny_cfg)


def test_error_unknown_label(tiny_cfg):
    with pytest.raises(ArchError, match="unknown label 'cell/node9/op0'"):
        validate(_bad(tiny_cfg, lambda a: a.__setitem__("cell/node9/op0", "skip_connect")), tiny_cfg)


def test_error_missing_label(tiny_cfg):
    with pytest.raises(ArchError, match="missing label 'cell/node1/op1'"):
        validate(_bad(tiny_cfg, lambda a: a.pop("cell/node1/op1")), tiny_cfg)


def test_error_unknown_op(tiny_cfg):
    with pytest.raises(ArchError, match="'cell/node0/op0' has unknown op 'conv_9x9'"):
        validate(_bad(tiny_cfg, lambda a: a.__setitem__("cell/node0/op0", "conv_9x9")), tiny_cfg)


def test_error_index_out_of_range(tiny_cfg):
    with pytest.raises(ArchError, match=r"'cell/node2/in' index 7 out of range \[0, 3\)"):
        validate(_bad(tiny_cfg, lambda a: a.__setitem__("cell/node2/in", [0, 7])), tiny_cfg)


def test_error_wrong_number_of_paths(tiny_cfg):
    label = next(k for k in space_spec(tiny_cfg) if k.startswith("macro/"))
    for value in ([0], [0, 1, 2], [1, 1]):
        with pytest.raises(ArchError, match=f"'{label}' must choose 2 distinct paths"):
            validate(_bad(tiny_cfg, lambda a: a.__setitem__(label, value)), tiny_cfg)
    with pytest.raises(ArchError, match="must be a list of 2 input indices"):
        validate(_bad(tiny_cfg, lambda a: a.__setitem__(label, "0,1")), tiny_cfg)


def test_build_network_names_the_file(tiny_cfg, tmp_path):
    path = tmp_path / "arch.json"
    arch = random_arch(tiny_cfg, 0)
    arch.pop("cell/node0/op0")
    path.write_text(json.dumps(arch))
    with pytest.raises(ArchError, match=r"arch\.json: missing label 'cell/node0/op0'"):
        build_network(tiny_cfg, path)


def test_describe_reads_well(tiny_cfg):
    arch = random_arch(tiny_cfg, 0)
    text = describe(arch, tiny_cfg)
    assert text.startswith("cell:\n  node0 = ")
    assert "macro:" in text and "l3_s4 <- " in text
    dropped = 3 - len(arch["cell/node2/in"])
    assert text.splitlines()[3].count("+") == 1  # node2 keeps 2 of its 3 edges
    assert dropped == 1


def test_build_network_validates_the_space_once(tiny_cfg, monkeypatch):
    arch = random_arch(tiny_cfg, 0)
    calls = []
    original = SpaceConfig.validate
    monkeypatch.setattr(SpaceConfig, "validate", lambda self: calls.append(1) or original(self))
    build_network(tiny_cfg, arch)
    assert calls == []  # a SpaceConfig was validated when it was made
    build_network(tiny_cfg.to_dict(), arch)
    assert calls == [1]  # a mapping: once, when it becomes a SpaceConfig
