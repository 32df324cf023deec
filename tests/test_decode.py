"""Decoding as pure functions: top-k with deterministic ties, and reachability pruning."""
from nni_rspnet.space.decode import live_nodes, top_k
from nni_rspnet.space.macro import head_inputs, trellis_nodes


def test_top_k_is_sorted_and_ties_go_to_the_lower_index():
    assert top_k([0.25, 0.25, 0.25, 0.25], 2) == [0, 1]
    assert top_k([0.1, 0.3, 0.3, 0.3], 2) == [1, 2]
    assert top_k([0.9, 0.05, 0.6], 2) == [0, 2]
    assert top_k([0.2, 0.8], 1) == [1]


def test_live_nodes_follows_chosen_sources_back_from_the_outputs():
    sources = {"out": ["b"], "b": ["a"], "c": ["a"], "a": ["stem"]}
    assert live_nodes(sources, ["out"]) == {"out", "b", "a", "stem"}  # c feeds nothing live
    assert live_nodes({}, ["x", "y"]) == {"x", "y"}


def test_live_nodes_on_a_trellis_prunes_nodes_no_path_reads():
    specs = trellis_nodes(3, 2)  # layers 1..3 over two resolutions
    # every node keeps only its first candidate path: from layer l-1 at the finer resolution
    chosen = {(s.layer, s.res): [s.candidates[0]] for s in specs}
    live = live_nodes(chosen, head_inputs(3, 2))
    assert live == {(3, 0), (3, 1), (2, 0), (1, 0), (0, 0)}  # (2, 1) and (1, 1) reach no head input
    full = {(s.layer, s.res): list(s.candidates) for s in specs}
    assert live_nodes(full, head_inputs(3, 2)) == {(0, 0)} | {(s.layer, s.res) for s in specs}
