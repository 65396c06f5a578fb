"""Using the clusters (spec 002, "Use the stored clusters"): per-user cluster counts and analytics.

**User features.** Each user event (``did, banner_id, event, day``; event = request, impression or
click) of the window ``[as_of - window_days, as_of)`` takes its banner's cluster from the current
model's prediction table. Per user and level the counts per cluster become the columns
``req_c0..req_c{K-1}``, ``imp_c*``, ``clk_c*`` (spec 002's "Iter 3": K = 10 and three levels gives
30 features), joined to the lookalike pipeline's users (default ``tables/persona``, keyed by did):
a user without events gets zeros. ``as_of`` is one value for every reader (events on or after it
never count); events of unknown banners or of dids outside the user table are counted in the report,
not silently lost. Written to ``tables/banner_user_features`` with ``reports/banner_user_features.json``.

**Analytics** over the same window: per cluster the images (banners assigned), requests,
impressions, clicks, CTR = clicks / impressions, and distinct users and advertisers, in
``reports/banner_cluster_analytics.{json,md}``.

Both read whole (filtered) columns into one process with pyarrow's multithreaded group-by: a day
of events is a few tens of millions of short rows. Past that, run it per did bucket.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from app.banners import schema as S
from app.banners.config import BannersConfig
from app.errors import SchemaError
from app.registry import Registry
from app.storage import Storage


def read_any(storage: Storage, path: str, columns: list[str]) -> pa.Table:
    """A Parquet table at a root-relative path, an absolute local path or a URI."""
    if "://" not in path and not path.startswith("/"):
        return storage.read_table(path, columns=columns)
    ds = pads.dataset(path, format="parquet", partitioning="hive")
    missing = [c for c in columns if c not in ds.schema.names]
    if missing:
        raise SchemaError(f"table {path!r} lacks column(s) {missing}; it has {ds.schema.names}")
    return ds.to_table(columns=columns)


def window(events: pa.Table, as_of: dt.date | None, days: int) -> tuple[pa.Table, dt.date]:
    """Events with ``as_of - days <= day < as_of`` (ISO day strings compare as dates); ``as_of``
    defaults to the day after the newest event."""
    if as_of is None:
        newest = pc.max(events[S.DAY]).as_py()
        if newest is None:
            raise SchemaError("the event table is empty: set features.as_of")
        as_of = dt.date.fromisoformat(str(newest)[:10]) + dt.timedelta(days=1)
    start = (as_of - dt.timedelta(days=days)).isoformat()
    day = events[S.DAY].cast(pa.string())
    mask = pc.and_(pc.greater_equal(day, start), pc.less(day, as_of.isoformat()))
    return events.filter(mask), as_of


def with_clusters(events: pa.Table, predictions: pa.Table) -> tuple[pa.Table, int]:
    """Events with their banner's ``cluster_id``; (those, events whose banner has no cluster)."""
    assigned = predictions.filter(pc.greater_equal(predictions[S.CLUSTER_ID], 0))
    pos = pc.index_in(events[S.BANNER_ID], assigned[S.BANNER_ID])
    known = pc.is_valid(pos)
    events = events.filter(known)
    cluster = assigned[S.CLUSTER_ID].take(pos.filter(known))
    return events.append_column(S.CLUSTER_ID, cluster), int(len(known) - (pc.sum(known).as_py() or 0))


def count_matrix(events: pa.Table, dids: pa.Array, levels: list[str], k: int) -> tuple[np.ndarray, int]:
    """(users x (levels * k) int32 counts in ``dids`` order, events of dids not in ``dids``)."""
    grouped = events.group_by([S.DID, S.EVENT, S.CLUSTER_ID]).aggregate([([], "count_all")])
    user = pc.index_in(grouped[S.DID], dids).to_numpy(zero_copy_only=False)
    level = pc.index_in(grouped[S.EVENT], pa.array(levels)).to_numpy(zero_copy_only=False)
    count = grouped["count_all"].to_numpy()
    ok = ~np.isnan(user.astype(float))
    mat = np.zeros((len(dids), len(levels) * k), dtype=np.int32)
    col = level[ok].astype(np.int64) * k + grouped[S.CLUSTER_ID].to_numpy()[ok]
    np.add.at(mat, (user[ok].astype(np.int64), col), count[ok])
    return mat, int(count[~ok].sum())


def current_predictions(storage: Storage) -> tuple[str, int, pa.Table]:
    version, info = Registry(storage).current_model(S.MODEL_NAME)
    table = storage.read_table(f"{S.T_PREDICTIONS}/{version}", columns=[S.BANNER_ID, S.ADVERTISER, S.CLUSTER_ID])
    return version, int(info["k"]), table


def user_features(cfg: BannersConfig, storage: Storage) -> dict[str, Any]:
    """Write the user feature table and the cluster analytics; return both reports."""
    started = time.perf_counter()
    fc = cfg.features
    version, k, predictions = current_predictions(storage)
    events = read_any(storage, cfg.events, [S.DID, S.BANNER_ID, S.EVENT, S.DAY])
    events, as_of = window(events, fc.as_of, fc.window_days)
    in_window = events.num_rows
    events = events.filter(pc.is_in(events[S.EVENT], pa.array(list(fc.levels))))
    other_events = in_window - events.num_rows
    events, unmapped = with_clusters(events, predictions)
    dids = pc.unique(read_any(storage, fc.users, [S.DID])[S.DID].cast(pa.string()))
    mat, unknown_users = count_matrix(events, dids, list(fc.levels), k)
    columns = {S.DID: dids}
    for i, level in enumerate(fc.levels):
        for c in range(k):
            columns[S.feature_column(level, c)] = mat[:, i * k + c]
    storage.write_table(S.T_USER_FEATURES, pa.table(columns))
    report = {
        "stage": "banner_user_features", "model_version": version, "k": k, "as_of": as_of.isoformat(),
        "window_days": fc.window_days, "levels": list(fc.levels), "users": len(dids),
        "users_with_events": int((mat.sum(axis=1) > 0).sum()), "features": len(columns) - 1,
        "events_in_window": in_window, "events_other_levels": other_events,
        "events_unmapped_banner": unmapped, "events_unknown_user": unknown_users,
        "seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_json(f"{S.REPORTS}/banner_user_features.json", report)
    analytics = cluster_analytics(events, predictions, k)
    storage.write_json(f"{S.REPORTS}/banner_cluster_analytics.json",
                       {"model_version": version, "as_of": as_of.isoformat(), "window_days": fc.window_days,
                        "clusters": analytics})
    storage.write_text(f"{S.REPORTS}/banner_cluster_analytics.md", analytics_table(analytics))
    return {"features": report, "analytics": analytics}


def cluster_analytics(events: pa.Table, predictions: pa.Table, k: int) -> list[dict[str, Any]]:
    """Per cluster: images, request / impression / click volume, CTR, users, advertisers."""
    assigned = predictions.filter(pc.greater_equal(predictions[S.CLUSTER_ID], 0))
    labels = assigned[S.CLUSTER_ID].to_numpy()
    images = np.bincount(labels, minlength=k)
    advertisers = assigned.group_by(S.CLUSTER_ID).aggregate([(S.ADVERTISER, "count_distinct")])
    adv = np.zeros(k, dtype=np.int64)
    adv[advertisers[S.CLUSTER_ID].to_numpy()] = advertisers[f"{S.ADVERTISER}_count_distinct"].to_numpy()
    volume = {level: np.zeros(k, dtype=np.int64) for level in S.LEVELS}
    if events.num_rows:
        g = events.group_by([S.EVENT, S.CLUSTER_ID]).aggregate([([], "count_all")]).to_pylist()
        for row in g:
            if row[S.EVENT] in volume:
                volume[row[S.EVENT]][row[S.CLUSTER_ID]] += row["count_all"]
    users = np.zeros(k, dtype=np.int64)
    if events.num_rows:
        u = events.group_by(S.CLUSTER_ID).aggregate([(S.DID, "count_distinct")])
        users[u[S.CLUSTER_ID].to_numpy()] = u[f"{S.DID}_count_distinct"].to_numpy()
    out = []
    for c in range(k):
        imp, clk = int(volume["impression"][c]), int(volume["click"][c])
        out.append({S.CLUSTER_ID: c, "images": int(images[c]), "advertisers": int(adv[c]),
                    "requests": int(volume["request"][c]), "impressions": imp, "clicks": clk,
                    "ctr": round(clk / imp, 5) if imp else None, "users": int(users[c])})
    return out


def analytics_table(rows: list[dict[str, Any]]) -> str:
    cols = [S.CLUSTER_ID, "images", "advertisers", "requests", "impressions", "clicks", "ctr", "users"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
