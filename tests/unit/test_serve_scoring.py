"""The scorer's batching helpers: splitting one model call back into requests, keyword selection."""

import numpy as np
import pytest

from app.serve.scoring import IndexedScorer, select_keywords, split_batch


def _scorer():
    dids = ["a", "b", "c", "d"]
    table = np.arange(12, dtype=np.float32).reshape(4, 3)  # row i = [3i, 3i+1, 3i+2]
    return IndexedScorer("v1", ["k1", "k2", "k3"], dids, lambda rows: table[rows])


def test_indexed_scorer_reports_positions_of_known_dids():
    scores, pos = _scorer().score_dids(["x", "c", "a", "y"])
    assert pos.tolist() == [1, 2]
    assert scores.tolist() == [[6, 7, 8], [0, 1, 2]]


def test_split_batch_hands_each_request_its_rows():
    out = split_batch([["a", "zz"], ["zz"], ["d", "b", "a"], []], _scorer())
    assert [o["dids"] for o in out] == [["a"], [], ["d", "b", "a"], []]
    assert [o["unknown"] for o in out] == [["zz"], ["zz"], [], []]
    assert out[0]["scores"].tolist() == [[0, 1, 2]]
    assert out[1]["scores"].shape == (0, 3)
    assert out[2]["scores"][:, 0].tolist() == [9, 3, 0]


def test_split_batch_with_no_known_did():
    out = split_batch([["x"], ["y", "z"]], _scorer())
    assert [o["unknown"] for o in out] == [["x"], ["y", "z"]]


@pytest.mark.parametrize("wanted, names, cols", [(None, ["k1", "k2", "k3"], None), (["k3", "k1"], ["k3", "k1"], [2, 0])])
def test_select_keywords(wanted, names, cols):
    assert select_keywords(["k1", "k2", "k3"], wanted) == (names, cols)


def test_select_keywords_names_unknown():
    with pytest.raises(ValueError, match="'nope'"):
        select_keywords(["k1"], ["k1", "nope"])
