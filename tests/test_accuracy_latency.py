"""The accuracy-latency script's front helpers (the runs themselves take tens of minutes)."""
from benchmarks.accuracy_latency import beyond_front, pareto_front


def test_pareto_front_keeps_the_undominated_points_by_latency():
    pts = [(5.0, 0.30), (3.0, 0.20), (4.0, 0.10), (6.0, 0.35), (5.0, 0.25), (2.0, 0.05)]
    assert pareto_front(pts) == [5, 1, 0, 3]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # equal points do not dominate each other


def test_beyond_front():
    front = [(2.0, 0.05), (3.0, 0.20), (5.0, 0.30)]
    assert beyond_front((3.0, 0.20), front)       # on the front
    assert beyond_front((2.5, 0.25), front)       # faster and better than its neighbours
    assert not beyond_front((5.5, 0.25), front)   # (5.0, 0.30) is faster and better
    assert beyond_front((1.0, 0.01), front)       # faster than everything
