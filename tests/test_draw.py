from nni_rspnet import random_arch
from nni_rspnet.space.draw import draw_architecture, draw_cell, draw_trellis


def test_pictures_are_written_atomically(tiny_cfg, tmp_path):
    arch = random_arch(tiny_cfg, 0)
    probs = {f"{k}/{j}": 0.5 for k in arch if k.startswith("macro/") for j in range(3)}
    for fn, name in ((draw_cell, "cell.png"), (draw_trellis, "trellis.png"), (draw_architecture, "arch.png")):
        kwargs = {"probs": probs} if fn is not draw_cell else {}
        fn(arch, tiny_cfg, tmp_path / name, **kwargs)
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    draw_architecture(arch, tiny_cfg, tmp_path / "arch.svg")
    assert (tmp_path / "arch.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".tmp-*"))
