"""The cost-model fidelity section: its statistics on known inputs and its quick run."""
import math
import os

import pytest

from benchmarks.__main__ import run_benchmark
from benchmarks.common import BenchmarkConfig, load_results
from benchmarks.fidelity import median_relative_error, ranks, spearman


def test_ranks_give_ties_their_mean_rank():
    assert ranks([10, 30, 20]) == [1, 3, 2]
    assert ranks([5, 5, 1, 7]) == [2.5, 2.5, 1, 4]


def test_spearman_on_known_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # classic example: d = (0, 1, -1, 0, 0) -> 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    # monotone but not linear: still 1
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = [3.1, 2.0, 5.5, 4.4, 1.2, 2.0], [30, 25, 50, 41, 9, 22]
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).correlation)
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_median_relative_error_on_known_inputs():
    assert median_relative_error([11, 18, 30], [10, 20, 30]) == pytest.approx(0.1)
    assert median_relative_error([5.0], [10.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        median_relative_error([], [])


def test_quick_fidelity_section_stores_numbers_plot_and_goal_rows(tmp_path):
    cfg = BenchmarkConfig(out_dir=str(tmp_path / "bench"), markdown=str(tmp_path / "B.md")).quick_version()
    page = run_benchmark(cfg, ["fidelity"], log=lambda s: None)
    r = load_results(cfg)["fidelity"]
    assert set(r["spaces"]) == {"tiny", "cityscapes_light"}
    for sp in r["spaces"].values():
        assert sp["n"] == cfg.fidelity_archs == len(sp["predicted_ms"]) == len(sp["measured_ms"])
        assert all(v > 0 for v in sp["predicted_ms"] + sp["measured_ms"])
        assert -1.0 <= sp["spearman"] <= 1.0 or math.isnan(sp["spearman"])
        assert sp["median_rel_error"] >= 0
    assert r["spaces"]["cityscapes_light"]["size"] == [64, 128]
    assert os.path.isfile(tmp_path / "docs" / "cost_fidelity.png") and r["plot"] == os.path.join("docs",
                                                                                                 "cost_fidelity.png")
    assert "## Cost-model fidelity" in page and "cost model, tiny space: Spearman >= 0.9" in page
    assert "not measured (quick mode)" in page
