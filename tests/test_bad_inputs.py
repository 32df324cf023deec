"""The catalogue of bad inputs (``tests/bad_inputs.py``) as tests: every row exits 2 (130 for Ctrl-C) with one
line on stderr naming the culprit, no traceback, and the output folder unchanged (no result written).

``python tests/bad_inputs.py`` runs the same rows and prints the counts.
"""
from __future__ import annotations

import pytest

import bad_inputs as catalogue

CASES = catalogue.cases()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return catalogue.make_assets(tmp_path_factory.mktemp("assets"))


def test_the_catalogue_has_60_rows_or_more_with_distinct_names():
    names = [case.name for case in CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_bad_input_is_one_clear_line(case, assets, tmp_path):
    reason = case.skip() if case.skip else None
    if reason:
        pytest.skip(reason)
    outcome, argv, culprit, out, before = catalogue.run_case(case, tmp_path, assets)
    verdict, why = catalogue.judge(case, outcome, culprit, out, before, assets.marker, tmp_path)
    assert verdict == "clear", f"{verdict}: {why}\nargv: {argv}\nstderr: {outcome.stderr[-2000:]}"


def test_the_judge_can_fail(tmp_path):
    """A successful run, a traceback and an unnamed culprit are not judged clear."""
    case = catalogue.Case("probe", lambda tmp, a: ([], "x"))
    ok = catalogue.Outcome(0, "")
    assert catalogue.judge(case, ok, "x", tmp_path / "out", None)[0] == "silent"
    boom = catalogue.Outcome(None, "", error="Traceback ...\nKeyError: 'x'")
    assert catalogue.judge(case, boom, "x", tmp_path / "out", None)[0] == "traceback"
    vague = catalogue.Outcome(2, "nni-rspnet space: error: something\n")
    assert catalogue.judge(case, vague, "c.yaml", tmp_path / "out", None)[0] == "unclear"
    two = catalogue.Outcome(2, "warning\nnni-rspnet space: error: c.yaml bad\n")
    assert catalogue.judge(case, two, "c.yaml", tmp_path / "out", None)[0] == "unclear"
    assert catalogue.judge(case, catalogue.Outcome(None, "", hung=True), "x", tmp_path, None)[0] == "hang"
