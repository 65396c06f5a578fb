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


# ---------------------------------------------------------------- the ingress's score-table path
def _publish(storage, table_version, model_version, current_model, offset=0.0):
    import pyarrow as pa

    from app.registry import Registry

    scores = (np.arange(6, dtype=np.float32).reshape(2, 3) + offset).ravel()
    table = pa.table({"did": ["a", "b"], "scores": pa.FixedSizeListArray.from_arrays(pa.array(scores), 3)})
    storage.write_table(f"scores/{table_version}/part-0.parquet", table)
    storage.write_json(f"scores/{table_version}/keywords.json", ["k1", "k2", "k3"])
    reg = Registry(storage)
    reg.add_model_version("din", current_model, {"path": f"models/din/{current_model}"}, make_current=True)
    reg.add_score_table(table_version, {"path": f"scores/{table_version}", "model_version": model_version})


def test_score_table_answers_only_for_the_current_model(tmp_path):
    from app.serve.scoring import CurrentScoreTable
    from app.storage import Storage

    storage = Storage(str(tmp_path))
    table = CurrentScoreTable(storage)
    assert not table.refresh() and table.score(["a"], None) is None  # nothing published yet
    assert "no current model" in table.reason

    _publish(storage, "t1", "m1", current_model="m1")
    assert table.refresh() and not table.refresh()  # loads once per (table, model) pair
    out = table.score(["b", "a"], ["k3", "k1"])
    assert out["model_version"] == "m1" and out["source"] == "score_table"
    assert out["dids"] == ["b", "a"] and out["keywords"] == ["k3", "k1"]
    assert out["scores"].tolist() == [[5, 3], [2, 0]]
    assert table.score(["a", "new-user"], None) is None  # a did it lacks: ask the live scorer
    with pytest.raises(ValueError, match="nope"):
        table.score(["a"], ["nope"])

    # a newer model without its table: the old table is no longer that model's answer
    from app.registry import Registry

    Registry(storage).add_model_version("din", "m2", {"path": "models/din/m2"}, make_current=True)
    assert table.refresh() and table.score(["a"], None) is None
    assert "made by model m1" in table.reason and "m2" in table.reason
    _publish(storage, "t2", "m2", current_model="m2", offset=10.0)
    assert table.refresh() and table.score(["a"], ["k1"])["scores"].tolist() == [[10.0]]
