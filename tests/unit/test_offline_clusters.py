"""User clusters by dimension and tag affinity: hand-computed shares and thresholds."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from app.offline import clusters as K

ITEMS = pd.DataFrame({"itemid": [1, 2, 3, 4], "dimension": ["sport", "sport", "finance", "gossip"],
                      "tags": ["a,b", "a", "c", "c, b"]})


def actions(rows: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["userid", "itemid"])


def test_cluster_by_dimension_shares_and_threshold():
    # user 1: 3 sport of 4 (0.75); user 2: 1 sport 1 finance (0.5 each); user 3: all finance; item 9 unknown
    a = actions([(1, 1), (1, 2), (1, 1), (1, 3), (2, 1), (2, 3), (3, 3), (3, 3), (3, 9)])
    members, clusters, unknown = K.cluster_by_dimension(a, ITEMS, "dimension", delta=0.2, min_cluster_size=1)
    assert unknown == 1
    # mean sport share = (0.75 + 0.5 + 0) / 3 = 0.4167: user 1 is 0.33 above, user 2 0.08 (< delta)
    # mean finance share = (0.25 + 0.5 + 1) / 3 = 0.583: user 3 is 0.417 above
    assert members.to_dict("list") == {"userid": [1, 3], "cluster": ["sport", "finance"], "weight": [0.75, 1.0]}
    sport = clusters.set_index("cluster").loc["sport"]
    assert sport["users"] == 1 and sport["mean_share"] == pytest.approx(1.25 / 3)
    members, _, _ = K.cluster_by_dimension(a, ITEMS, "dimension", delta=0.2, min_cluster_size=2)
    assert members.empty  # each cluster has one user


def test_tag_affinity_counts_increase_and_filter():
    a = actions([(1, 1)] * 4 + [(1, 3)] + [(2, 3)] * 4 + [(2, 4)] * 2)
    out, unknown = K.tag_affinity(a, ITEMS, "tags", ",", min_tag_count=2, min_pc_increase=0.5, keep_tags=None)
    assert unknown == 0
    # user 1: a 4, b 4, c 1 (9); user 2: c 6, b 2 (8). mean share of a = (4/9)/2; increase 1.0
    got = {(r.userid, r.tag): (r.count, round(r.pc_increase, 4)) for r in out.itertuples()}
    assert got[(1, "a")] == (4, 1.0)
    assert (1, "c") not in got  # one occurrence < min_tag_count
    c_mean = (1 / 9 + 6 / 8) / 2
    assert got[(2, "c")] == (6, round((6 / 8 - c_mean) / c_mean, 4))
    only_c, _ = K.tag_affinity(a, ITEMS, "tags", ",", 2, 0.5, keep_tags={"c"})
    assert set(only_c["tag"]) == {"c"}


def test_read_items_from_csv_and_tag_filter(storage):
    storage.write_text("raw/items/items.csv", "itemid,dimension\n1,sport\nx,bad\n2,\n")
    items = K.read_items(storage, "raw/items", "dimension")
    assert items.to_dict("list") == {"itemid": [1], "dimension": ["sport"]}
    storage.write_table("raw/items2", pa.table({"itemid": [5], "dimension": ["news"]}))
    assert K.read_items(storage, "raw/items2", "dimension")["itemid"].tolist() == [5]
    storage.write_text("tags.txt", "a\n\n b \n")
    assert K.read_tag_filter(storage, "tags.txt") == {"a", "b"}
