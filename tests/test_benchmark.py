"""The benchmarks package (outside the wheel): quick-mode sections, page rendering, goals and its command."""
import json
import os
import statistics
from dataclasses import replace

import pytest
import torch

from benchmarks.__main__ import main, run_benchmark
from benchmarks.common import SECTIONS, BenchmarkConfig, load_results, machine_info, store_result
from benchmarks.gpu import project_search_hours
from benchmarks.latency import interleaved_latency, lightest_arch, torchvision_peer
from benchmarks.render import goals, render_demo, render_page, search_cost_markdown
from nni_rspnet.config import RunConfig
from nni_rspnet.search.driver import search_steps_per_epoch
from nni_rspnet.search.settings import SearchConfig
from nni_rspnet.seg.data import DataConfig
from nni_rspnet.space.arch import random_arch, save_arch
from nni_rspnet.space.model import SpaceConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LRASPP_NAME = "LR-ASPP-MobileNetV3-Large"


@pytest.fixture
def quick_cfg(tmp_path):
    """Quick sizes with a stand-in "found" tiny architecture (the search itself is tested elsewhere)."""
    cfg = BenchmarkConfig(out_dir=str(tmp_path / "bench"), markdown=str(tmp_path / "BENCHMARKS.md")).quick_version()
    space = SpaceConfig.from_yaml(cfg.tiny_config)
    os.makedirs(os.path.join(cfg.out_dir, "search_tiny"))
    save_arch(random_arch(space, 7), os.path.join(cfg.out_dir, "search_tiny", "arch.json"))
    return cfg


def test_peer_returns_logits_at_input_size():
    net = torchvision_peer("lraspp", 19).eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 64, 128))
    assert y.shape == (1, 19, 64, 128)
    with pytest.raises(ValueError, match="unknown peer"):
        torchvision_peer("fcn", 19)


def test_interleaved_latency_times_every_model_every_round():
    models = {"a": torch.nn.Conv2d(3, 4, 3), "b": torch.nn.Conv2d(3, 8, 5)}
    times = interleaved_latency(models, torch.zeros(1, 3, 32, 32), rounds=4, warmup=1, threads=1, log=lambda s: None)
    assert set(times) == {"a", "b"} and all(len(t) == 4 and min(t) > 0 for t in times.values())


@pytest.mark.heavy  # about 2.5 minutes: `make test-all`, not CI
def test_quick_latency_writes_the_page(quick_cfg):
    logs = []
    page = run_benchmark(quick_cfg, ["latency", "gpu"], log=logs.append)
    assert os.path.isfile(quick_cfg.markdown)
    with open(quick_cfg.markdown) as f:
        assert f.read() == page
    results = load_results(quick_cfg)
    lat = results["latency"]
    names = [n["name"] for n in lat["networks"]]
    assert "found (tiny)" in names and "LR-ASPP-MobileNetV3-Large" in names and "DeepLabV3-MobileNetV3-Large" in names
    assert "cityscapes_light space, lightest" in names and "cityscapes_light space, heaviest" in names
    for n in lat["networks"]:
        assert n["params"] > 0 and n["macs"] > 0
    lraspp = next(n for n in lat["networks"] if n["name"].startswith("LR-ASPP"))
    assert 3.0e6 < lraspp["params"] < 3.5e6
    assert [(s["threads"], s["clock"]) for s in lat["settings"]] == [(2, "wall"), (1, "cpu")]
    for s in lat["settings"]:
        assert {row["runtime"] for row in s["rows"]} == {"eager", "torchscript", "onnxruntime"}
        assert len(s["rows"]) == 3 * len(names) and all(row["median_ms"] > 0 for row in s["rows"])
        ref = [row for row in s["rows"] if row["name"].startswith("LR-ASPP")]
        assert all(row["round_ratio"] == pytest.approx(1.0) for row in ref)
    # one table per setting and runtime, the profiles, and a goal row per found light network and runtime
    assert page.count("### onnxruntime; ") == 2 and page.count("### PyTorch eager; ") == 2
    assert "Top ops of LR-ASPP-MobileNetV3-Large" in page
    assert "LR-ASPP-MobileNetV3-Large" in lat["profiles_onnxruntime"]
    assert "Top op types of LR-ASPP-MobileNetV3-Large in onnxruntime" in page
    assert all(p["self_ms"] > 0 and 0 < p["share"] <= 1 for p in lat["profiles_onnxruntime"][LRASPP_NAME])
    found = [n for n in names if n.startswith("found (cityscapes_light")]
    for name in found:
        assert f"{name}: <= 0.87 M parameters" in page and f"{name}: latency <= 0.5x LR-ASPP, onnxruntime" in page
    # the page: machine, goals and each section's table
    assert "# Benchmarks" in page and machine_info()["cpu"] in page and "## Goals" in page
    assert "| found (tiny) |" in page and "## Quality with an equal training budget\n\nNot run yet." in page
    assert ("Not measured: no CUDA device" in page) != torch.cuda.is_available()
    assert "core-hours" in page  # the CPU projection of a full Cityscapes search, with or without CUDA
    assert any(line.startswith("[latency]") for line in logs)


def test_results_merge_across_runs_and_goals(tmp_path):
    from benchmarks.quality import summarize

    cfg = BenchmarkConfig(out_dir=str(tmp_path))
    store_result(cfg, "demo", {"measured": False, "why": "x"})
    runs = {f"{n} train{t}": {"group": g, "name": n, "seed": t, "params": 1000, "macs": 2e6, "val_miou": v}
            for g, n, t, v in [("searched", "searched seed0", 0, 0.50), ("searched", "searched seed0", 1, 0.52),
                               ("random", "random 3", 0, 0.49), ("random", "random 3", 1, 0.47),
                               ("random", "random 4", 0, 0.44), ("random", "random 4", 1, 0.46),
                               ("plain_cnn", "plain CNN", 0, 0.40), ("lraspp", "LR-ASPP-MobileNetV3-Large", 0, 0.30)]}
    state = {"task": "digits", "searches": {}, "random": [{"name": "random 3"}, {"name": "random 4"}], "runs": runs}
    settings = {"config": "search_spaces/tiny.yaml", "data": "builtin", "num_classes": 11, "num_train": 4,
                "num_val": 2, "image_size": [32, 64], "batch_size": 2, "search_epochs": [1, 2, 3],
                "search_limit_batches": 20, "train": {"epochs": 1, "optimizer": "adamw", "lr": 0.003}}
    design = {"search_seeds": 1, "train_seeds": 2, "random": 1, "param_tolerance": 0.1, "rank_archs": 0,
              "rank_epochs": 1, "threads": 1, "jobs": 1}
    store_result(cfg, "quality", {"tasks": {"digits": dict(state, summary=summarize(state), settings=settings)},
                                  "complete": True, "plot": "docs/quality.png", "design": design})
    results = load_results(cfg)
    assert set(results) == {"demo", "quality"}
    rows = goals(results)
    miou = next(r for r in rows if r[0].startswith("digits: searched"))
    assert "+3.0 points" in miou[1] and miou[2] == "**met**"
    assert any(r[2] == "not measured" for r in rows)  # no search-cost or latency results yet
    page = render_page(results, machine_info(), cfg)
    assert "0.5100 ± 0.0141 (2 runs)" in page and statistics.mean([0.5, 0.52]) == pytest.approx(0.51)
    assert "| searched seed0 | 1,000 | 2.0 M | 0.5100 ± 0.0141 (2 runs) | 0.5000, 0.5200 | 1 |" in page
    assert "![val mIoU per group, one point per training run](docs/quality.png)" in page
    # the trainings' own agreement over the searched and random networks (3 of them, 2 seeds each)
    assert "- Training noise of the searched and random networks (2 seeds per architecture, 3 architectures)" in page
    # one searched against two random architectures: 3 splits, the searched one's is the best of them
    assert ("- Searched against random architectures, over their means (exact one-sided permutation test, 1 against 2): "
            "+4.5 points, p 0.333 (the smallest p this design can give: 0.333)." in page)
    assert "## Search cost\n\nNot run yet." in page
    assert "trained only" not in page  # every group was trained
    # an experiment that trained only the searched networks (--groups searched) shows only that group
    experiment = dict(results["quality"], design=dict(design, groups=["searched"]))
    experiment["tasks"]["digits"]["settings"]["overrides"] = ["space.rsp_depth=0"]
    store_result(cfg, "quality", experiment)
    only = render_page(load_results(cfg), machine_info(), cfg)
    assert "config `search_spaces/tiny.yaml` `--set space.rsp_depth=0`." in only  # the page names its overrides
    assert "An experiment that trained only these groups: searched (`--groups`)." in only
    groups_table = only.split("| group | val mIoU mean ± sd |\n| --- | --- |\n")[1].split("\n\n")[0]
    assert [row.split("|")[1].strip() for row in groups_table.splitlines()] == ["searched"]
    # the best random architecture within a point of the searched one: not met
    runs["random 3 train1"]["val_miou"] = 0.53
    miou = next(r for r in goals({"quality": {"tasks": {"digits": {"summary": summarize(state)}}}})
                if r[0].startswith("digits"))
    assert miou[2] == "**not met**" and "best random 0.5100 (random 3, +0.0 points)" in miou[1]


def test_search_against_random_is_an_exact_permutation_test_of_the_architecture_means():
    from benchmarks.quality import search_vs_random

    # the digits table of BENCHMARKS (stem 4): all 3 searched above all 5 random, the one split of 56 that does it
    digits = search_vs_random([0.6362, 0.6306, 0.6248], [0.6231, 0.6164, 0.6136, 0.5929, 0.5864])
    assert digits["p"] == pytest.approx(1 / 56) == pytest.approx(digits["min_p"])
    assert digits["gain"] == pytest.approx(0.6305333 - 0.60648, abs=1e-6)
    # the shapes table: the searched mean below the random mean; 34 of the 56 splits reach the observed difference
    # (scipy.stats.permutation_test, exact, gives 0.6071 too)
    shapes = search_vs_random([0.5795, 0.5470, 0.5431], [0.5943, 0.5697, 0.5551, 0.5544, 0.5308])
    assert shapes["gain"] < 0 and shapes["p"] == pytest.approx(34 / 56)
    # a design too large to enumerate (C(40, 10) splits) takes scipy's Monte Carlo test: the searched ten clearly ahead
    many = search_vs_random([0.60 + 0.001 * i for i in range(10)], [0.50 + 0.001 * i for i in range(30)])
    assert many["p"] < 1e-4 and many["gain"] == pytest.approx(0.09)
    assert search_vs_random([], [0.5, 0.6]) is None and search_vs_random([0.5], [0.6]) is None


def test_the_quality_note_says_why_a_fair_ranking_missed_the_goal():
    from benchmarks.render import _note_quality

    goal = {"met": False, "beats_random": False, "beats_peers": False}

    def note(random_runs, scores):
        summary = {"goal": goal, "rank_check": {"kendall_tau": 0.57},
                   "groups": {"random": {"sd": statistics.stdev(random_runs), "values": random_runs}},
                   "table_tau": {"scores": scores}}
        return _note_quality({"tasks": {"shapes": {"summary": summary}}}, {})
    # random networks far apart, supernet scores close together: the ranking is too coarse to pick the best
    wide = note([0.40, 0.55, 0.48, 0.52], {"a": 0.180, "b": 0.188})
    assert "rank-check tau +0.57" in wide and "span 0.8 points of mIoU" in wide and "training runs 15.0" in wide
    # random networks within a point or two of each other: the margin is within the training noise
    close = note([0.600, 0.610, 0.605, 0.615], {"a": 0.18, "b": 0.19})
    assert "differ little at this budget (sd 0.006)" in close and "span" not in close


SEARCH_COST = {  # what search_cost.measure returns
    "settings": {"space": "search_spaces/tiny.yaml", "input_size": [64, 128], "batch": 8, "device": "cpu",
                 "threads": 1, "rounds": 2, "steps": 4},
    "runs": {"stage1_single1_pc2": {"step_s": 0.4, "wall_s": 0.5, "peak_mib": 100.0, "saved_mib": 50.0},
             "stage1_full": {"step_s": 1.0, "wall_s": 1.2, "peak_mib": 250.0, "saved_mib": 100.0}},
    "ratios": {"step time, RSP depth 1 + PC-DARTS K=2 (default) / full channels (stage 1)": 0.4,
               "peak memory, RSP depth 1 + PC-DARTS K=2 (default) / full channels (stage 1)": 0.6},
    "goals": {"step time, RSP depth 1 + PC-DARTS K=2 (default) / full channels (stage 1)": 0.55,
              "peak memory, RSP depth 1 + PC-DARTS K=2 (default) / full channels (stage 1)": 0.55},
}


def test_search_cost_data_renders_and_meets_the_goals(tmp_path):
    """The section stores numbers, not Markdown; the one renderer makes both the tables and the goals."""
    cfg = BenchmarkConfig(out_dir=str(tmp_path / "b"), markdown=str(tmp_path / "B.md"))
    store_result(cfg, "search_cost", {"measured": True, "device": "cpu", "table": SEARCH_COST})
    results = load_results(cfg)
    row = next(g for g in goals(results) if g[0].startswith("default search"))
    assert "0.40x" in row[1] and "0.60x" in row[1] and row[2] == "**not met**"
    page = render_page(results, machine_info(), cfg)
    assert "| stage1_full | 1.000 | 1.200 | 250.0 | 100.0 |" in page
    assert "| peak memory, RSP depth 1 + PC-DARTS K=2 (default) / full channels (stage 1) | 0.60 | <= 0.55 | no |" in page
    assert search_cost_markdown(SEARCH_COST, title=True).startswith("# Search cost benchmark (search_spaces/tiny.yaml")


def test_projection_counts_steps_and_epochs():
    search = SearchConfig(warmup_epochs=1, stage1_epochs=2, stage2_warmup_epochs=0, stage2_epochs=3, arch_fraction=0.5)
    data = DataConfig(batch_size=4, val_batch_size=1)
    # 20 images: 10 train the weights (2 batches of 4, the last dropped), 10 the architecture at batch
    # max(4, 1) = 4 (3 batches): Lightning cycles the shorter loader, 3 steps per epoch
    p = project_search_hours({"stage1_single1_pc2": 2.0, "stage2_single1": 1.0}, search, data, num_train=20)
    assert p["steps_per_epoch"] == 3 and p["hours"] == pytest.approx(3 * (3 * 2.0 + 3 * 1.0) / 3600)
    assert project_search_hours({"stage1_single1_pc2": 2.0}, search, data) is None


def test_cpu_projection_scales_the_measured_steps(monkeypatch, tmp_path):
    from benchmarks import gpu, search_cost
    from benchmarks.render import render_cpu_projection

    def fake_measure(config, only, input_size, batch, **kw):
        assert tuple(only) == tuple(search_cost.DEFAULT.values()) and list(input_size) == [128, 256] and batch == 2
        return {"runs": {"stage1_single1_pc2": {"step_s": 2.0}, "stage2_single1": {"step_s": 0.5}}}

    monkeypatch.setattr(search_cost, "measure", fake_measure)
    cfg = BenchmarkConfig(out_dir=str(tmp_path))
    c = gpu.cpu_projection(cfg, log=lambda s: None)
    city = RunConfig.load(cfg.cityscapes_config)
    h, w = city.data.crop_size
    scale = h * w * city.data.batch_size / (128 * 256 * 2)
    assert c["scale"] == pytest.approx(scale) and c["step_s_projected"]["stage1_single1_pc2"] == pytest.approx(2.0 * scale)
    s = city.search
    steps = search_steps_per_epoch(city.data, city.search, 2975)
    assert steps == 186  # 1487 weight images // 8, 1488 architecture images / 8
    hours = steps * scale * ((s.warmup_epochs + s.stage1_epochs) * 2.0 + (s.stage2_warmup_epochs + s.stage2_epochs) * 0.5)
    assert c["projection"]["hours"] == pytest.approx(hours / 3600)
    row = render_cpu_projection({"cpu": c, "search_epochs": [1, 2, 3, 4]})
    assert f"**{hours / 3600:.0f} core-hours**" in row and "2 x 128x256" in row


def _gpu_result(step1: float, step2: float, size=(512, 1024), batch: int = 8, quick: bool = False):
    """A gpu-section result as ``gpu.run`` stores it with CUDA, the steps timed at ``size`` and ``batch``."""
    city = RunConfig.load(os.path.join(ROOT, "search_spaces", "cityscapes.yaml"))
    step_s = {"stage1_single1_pc2": step1, "stage2_single1": step2}
    runs = {k: {"step_s": v, "wall_s": v, "peak_mib": 1.0, "saved_mib": 2.0} for k, v in step_s.items()}
    table = {"settings": {"space": "search_spaces/cityscapes.yaml", "input_size": list(size), "batch": batch,
                          "device": "cuda", "threads": 1, "rounds": 1, "steps": 6},
             "runs": runs, "ratios": {}, "goals": {}}
    latency = {"size": [1024, 2048], "device": "cuda", "threads": None, "rounds": 2, "warmup": 1, "classes": 19,
               "rows": [{"name": LRASPP_NAME, "what": "peer", "params": 3.2e6, "macs": 1.6e10, "median_ms": 5.0,
                         "q1_ms": 4.9, "q3_ms": 5.1, "ratio": 1.0, "round_ratio": 1.0}]}
    return {"measured": True, "gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "cuda": "13.0",
            "versions": {"python": "3.12.3", "torch": "2.11.0+cu130"}, "latency": latency,
            "search_cost": {"measured": False, "why": "skipped"}, "quick": quick,
            "cityscapes_cost": {"measured": True, "device": "cuda", "table": table},
            "projection": project_search_hours(step_s, city.search, city.data),
            "search_epochs": [city.search.warmup_epochs, city.search.stage1_epochs, city.search.stage2_warmup_epochs,
                              city.search.stage2_epochs],
            "batch_size": city.data.batch_size, "crop": list(city.data.crop_size), "cpu": None}


def test_gpu_projection_is_a_row_with_the_goal():
    from benchmarks.render import render_gpu

    fast, slow = _gpu_result(3.0, 0.5), _gpu_result(30.0, 5.0)
    hours = fast["projection"]["hours"]
    text = render_gpu(fast)
    assert "On NVIDIA H200 (python 3.12.3, torch 2.11.0+cu130, CUDA 13.0)" in text
    row = next(line for line in text.splitlines() if line.startswith("| GPU, NVIDIA H200:"))
    assert f"**{hours:.1f} GPU hours** ({hours / 24:.2f} GPU-days)" in row and "**met**" in row
    assert "8 x 512x1024 on the GPU (stage1_single1_pc2 3.00 s, stage2_single1 0.50 s" in row
    assert "**not met**" in render_gpu(slow) and slow["projection"]["hours"] > 24
    goal = [g for g in goals({"gpu": fast}) if g[0].startswith("full Cityscapes search")]
    assert goal == [["full Cityscapes search (both stages) < 1 GPU-day (papers: 3-10)",
                     f"{hours:.1f} GPU hours on NVIDIA H200 (projected from the step time, 186 steps per epoch; "
                     "see GPU)", "**met**"]]
    # steps timed at quick mode's small crops project nothing: the goal is not measured
    small = _gpu_result(0.1, 0.05, size=(128, 256), quick=True)
    assert "not a projection of it" in render_gpu(small)
    assert [g[2] for g in goals({"gpu": small}) if g[0].startswith("full Cityscapes")] == ["not measured"]
    assert [g[1:] for g in goals({"gpu": {"measured": False}}) if g[0].startswith("full Cityscapes")] == [
        ["n/a (no CUDA device)", "not measured"]]


def test_search_steps_per_epoch_are_the_driver_loaders_as_lightning_combines_them():
    """The projection's steps per epoch are the length of the loaders ``run_search`` builds, combined as
    Lightning combines them for ``fit``; the architecture batch is never below the training batch."""
    from pytorch_lightning.trainer.supporters import CombinedLoader

    from nni_rspnet.search.driver import search_loaders, split_for_search

    path = os.path.join(ROOT, "search_spaces", "cityscapes.yaml")
    run = RunConfig.load(path)
    images = torch.utils.data.TensorDataset(torch.zeros(2975, 1))
    weights, arch = split_for_search(images, run.search.arch_fraction, run.search.seed)
    for data in (replace(run.data, num_workers=0), replace(run.data, num_workers=0, val_batch_size=32)):
        train, val = search_loaders(data, weights, arch)
        assert val.batch_size == max(data.batch_size, data.val_batch_size)
        assert search_steps_per_epoch(data, run.search, 2975) == len(
            CombinedLoader({"train": train, "val": val}, "max_size_cycle"))
    assert search_steps_per_epoch(replace(run.data, num_workers=0), run.search, 2975) == 186


def test_lightest_arch_is_valid_and_lightest():
    from nni_rspnet.measure import count_params
    from nni_rspnet.space.arch import build_network, validate

    space = SpaceConfig.from_yaml(os.path.join(ROOT, "search_spaces", "tiny.yaml"))
    arch = validate(lightest_arch(space), space)
    light = count_params(build_network(space, arch))
    assert all(light <= count_params(build_network(space, random_arch(space, s))) for s in range(3))


def test_command_rejects_unknown_section_and_renders_alone(tmp_path, capsys):
    assert main(["--only", "latency,speed", "--out", str(tmp_path)]) == 2
    assert "speed" in capsys.readouterr().err
    assert set(SECTIONS) >= {"search", "search_cost", "latency", "quality", "demo", "gpu"}
    page = tmp_path / "B.md"
    assert main(["--render-only", "--out", str(tmp_path), "--markdown", str(page)]) == 0
    assert page.read_text().count("Not run yet.") == len(SECTIONS)


def test_benchmarks_are_not_a_command_of_the_product():
    from nni_rspnet.cli import COMMANDS

    assert "benchmark" not in COMMANDS


@pytest.mark.slow
def test_quick_search_section_finds_the_network(tmp_path):
    cfg = BenchmarkConfig(out_dir=str(tmp_path / "bench"), markdown=str(tmp_path / "B.md")).quick_version()
    page = run_benchmark(cfg, ["search"], log=lambda s: None)
    run = load_results(cfg)["search"]["runs"]["tiny"]
    assert run["params"] > 0 and run["macs"] > 0 and run["seconds"] > 0
    with open(os.path.join(cfg.out_dir, run["arch_path"])) as f:
        arch = json.load(f)
    assert any(k.startswith("cell/") for k in arch) and any(k.startswith("macro/") for k in arch)
    assert f"{run['params']:,}" in page


def test_demo_row_says_how_the_demo_ended():
    base = {"measured": True, "seconds": 90.0, "command": "nni-rspnet demo --out x"}
    assert "| 1.5 min | finished |" in render_demo(dict(base, ok=True, returncode=0))
    killed = render_demo(dict(base, ok=False, returncode=-15, tail=["Epoch 0:  5%| 4/85 [00:09<03:02, 2.2s/it]Global"]))
    assert "stopped by signal 15" in killed and "4/85 [00:09<03:02, 2.2s/it]`" in killed
    assert "FAILED (exit status 1)" in render_demo(dict(base, ok=False, returncode=1))
    assert "Not measured" in render_demo({"measured": False, "why": "no demo"})


def test_a_warm_up_step_runs_one_sub_network_and_costs_less_than_a_stage_1_step():
    """The warm-up rows of the search-cost table time what the warm-up does: weight steps on a sampled
    sub-network (no architecture step, one op per edge), far lighter than a relaxed stage-1 step."""
    from benchmarks import search_cost

    # The 3-layer stem: at these widths a full-resolution stem layer would hold most of either step's activations.
    micro = ["space.layers=2", "space.resolutions=[4,8]", "space.channels=[8,16]", "space.cell_nodes=2",
             "space.ops=[skip_connect,conv_3x3,sep_conv_3x3]", "space.stem_layers=3"]
    base = dict(config=search_cost.os.path.join(search_cost.ROOT, "search_spaces", "tiny.yaml"), overrides=micro,
                input_size=[32, 64], batch=2, steps=2, threads=1, device="cpu")
    warm = search_cost.worker(dict(base, **search_cost.CONFIGS["warmup_single1_pc2"]))
    stage1 = search_cost.worker(dict(base, **search_cost.CONFIGS["stage1_single1_pc2"]))
    assert warm["step_s"] > 0 and warm["saved_mib"] > 0
    assert warm["saved_mib"] < 0.6 * stage1["saved_mib"]  # one candidate and one pass, not all and two
