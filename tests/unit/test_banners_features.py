"""User cluster-count features (window, levels, join to users) and per-cluster analytics."""

import datetime as dt

import numpy as np
import pyarrow as pa

from app.banners import schema as S
from app.banners.config import BannersConfig, FeaturesConfig
from app.banners.features import cluster_analytics, count_matrix, user_features, window, with_clusters
from app.registry import Registry

PREDICTIONS = pa.table({S.BANNER_ID: ["b0", "b1", "b2", "bad"], S.ADVERTISER: ["x", "x", "y", "y"],
                        S.CLUSTER_ID: pa.array([0, 1, 1, -1], pa.int32())})


def _events(rows):
    did, banner, event, day = zip(*rows, strict=True)
    return pa.table({S.DID: list(did), S.BANNER_ID: list(banner), S.EVENT: list(event), S.DAY: list(day)})


EVENTS = _events([
    ("u1", "b0", "request", "2026-01-05"), ("u1", "b0", "impression", "2026-01-05"),
    ("u1", "b0", "click", "2026-01-05"), ("u1", "b1", "request", "2026-01-06"),
    ("u2", "b2", "request", "2026-01-06"), ("u2", "b2", "impression", "2026-01-06"),
    ("u2", "bad", "request", "2026-01-06"),  # a banner without a cluster
    ("u9", "b1", "request", "2026-01-06"),  # a did outside the user table
    ("u1", "b1", "request", "2026-01-07"),  # on the as_of day: after the window
    ("u1", "b1", "request", "2025-12-01"),  # before the window
])


def test_window_is_half_open_and_defaults_to_the_day_after_the_newest():
    got, as_of = window(EVENTS, dt.date(2026, 1, 7), 7)
    assert got.num_rows == 8 and as_of == dt.date(2026, 1, 7)
    _, default = window(EVENTS, None, 7)
    assert default == dt.date(2026, 1, 8)


def test_counts_per_level_and_cluster():
    events, unmapped = with_clusters(window(EVENTS, dt.date(2026, 1, 7), 7)[0], PREDICTIONS)
    assert unmapped == 1
    mat, unknown = count_matrix(events, pa.array(["u1", "u2", "u3"]), list(S.LEVELS), 2)
    assert unknown == 1
    # columns: req_c0 req_c1 imp_c0 imp_c1 clk_c0 clk_c1
    assert mat.tolist() == [[1, 1, 1, 0, 1, 0], [0, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]


def test_analytics_ctr_and_volumes():
    events, _ = with_clusters(window(EVENTS, dt.date(2026, 1, 7), 7)[0], PREDICTIONS)
    rows = cluster_analytics(events, PREDICTIONS, 2)
    assert [r["images"] for r in rows] == [1, 2]
    assert [(r["requests"], r["impressions"], r["clicks"]) for r in rows] == [(1, 1, 1), (3, 1, 0)]
    assert [r["ctr"] for r in rows] == [1.0, 0.0]
    assert [r["users"] for r in rows] == [1, 3] and [r["advertisers"] for r in rows] == [1, 2]


def test_user_features_table_joins_every_user(storage):
    storage.write_table(f"{S.T_PREDICTIONS}/v1", PREDICTIONS)
    storage.write_table("raw/banner_events", EVENTS)
    storage.write_table("users", pa.table({S.DID: ["u1", "u2", "u3", "u3"]}))
    Registry(storage).add_model_version(S.MODEL_NAME, "v1", {"path": "models/x", "k": 2}, make_current=True)
    cfg = BannersConfig(features=FeaturesConfig(users="users", as_of=dt.date(2026, 1, 7), window_days=7,
                                                levels=["request", "click"]))
    out = user_features(cfg, storage)
    table = storage.read_table(S.T_USER_FEATURES).sort_by(S.DID).to_pydict()
    assert table == {S.DID: ["u1", "u2", "u3"], "req_c0": [1, 0, 0], "req_c1": [1, 1, 0],
                     "clk_c0": [1, 0, 0], "clk_c1": [0, 0, 0]}
    rep = out["features"]
    assert (rep["users"], rep["users_with_events"], rep["features"]) == (3, 2, 4)
    assert (rep["events_other_levels"], rep["events_unmapped_banner"], rep["events_unknown_user"]) == (2, 1, 1)
    assert storage.exists(f"{S.REPORTS}/banner_cluster_analytics.md")


def test_empty_window_still_writes_zero_features(storage):
    storage.write_table(f"{S.T_PREDICTIONS}/v1", PREDICTIONS)
    storage.write_table("raw/banner_events", EVENTS)
    storage.write_table("users", pa.table({S.DID: ["u1"]}))
    Registry(storage).add_model_version(S.MODEL_NAME, "v1", {"path": "models/x", "k": 2}, make_current=True)
    cfg = BannersConfig(features=FeaturesConfig(users="users", as_of=dt.date(2020, 1, 1)))
    user_features(cfg, storage)
    t = storage.read_table(S.T_USER_FEATURES)
    assert t.num_rows == 1 and np.all(np.array([t[c][0].as_py() for c in t.column_names[1:]]) == 0)
