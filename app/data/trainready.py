"""Stage 5, train-ready: one row per user with newest-first, element-aligned nested arrays.

Columns: age, gender, did, did_index, interval_starting_time (list<int64>), kwi, kwi_show_counts,
kwi_click_counts (list<list<int32>>: per interval, the keyword indices and their counts), did_bucket.
Typed nested lists, not the seed's comma strings. Within an interval keywords are ascending.

Clicks of a (user, interval, keyword) that has no show are dropped (a click needs its impression)
and counted as ``click_without_show``; they go to the quarantine aggregated per group. User filters
(``min_traffic``, ``max_traffic``, ``min_active_intervals``) replace the seed's hard-coded rule.

``did_index`` is unique and stable for a given input: ``rank of did within its bucket *
did_bucket_num + did_bucket``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app import constants as C
from app.data.config import DataConfig, TrainReadyConfig
from app.data.io import StageReport
from app.storage import Storage

READ_COLUMNS = [C.DID, C.IS_CLICK, C.KEYWORD_INDEX, C.INTERVAL_STARTING_TIME, C.GENDER, C.AGE]


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def build_trainready(
    logs: pa.Table, filters: TrainReadyConfig, bucket: int, num_buckets: int
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Pure: unified logs of one bucket -> (train-ready rows, orphan-click groups, counts)."""
    g = logs.group_by([C.DID, C.INTERVAL_STARTING_TIME, C.KEYWORD_INDEX], use_threads=False).aggregate(
        [(C.IS_CLICK, "sum"), (C.IS_CLICK, "count"), (C.AGE, "min"), (C.GENDER, "min")]
    )
    clicks = g[f"{C.IS_CLICK}_sum"].to_numpy().astype(np.int64)
    shows = g[f"{C.IS_CLICK}_count"].to_numpy().astype(np.int64) - clicks
    orphan = shows == 0
    orphans = g.filter(pa.array(orphan)).select([C.DID, C.INTERVAL_STARTING_TIME, C.KEYWORD_INDEX])
    orphans = orphans.append_column("clicks", pa.array(clicks[orphan]))
    keep = pa.array(~orphan)
    g = g.filter(keep)
    clicks, shows = clicks[~orphan], shows[~orphan]
    counts = {"click_without_show": int(orphans["clicks"].to_numpy().sum()) if orphans.num_rows else 0}

    did = g[C.DID].to_numpy(zero_copy_only=False).astype(object)
    ist = g[C.INTERVAL_STARTING_TIME].to_numpy().astype(np.int64)
    kwi = g[C.KEYWORD_INDEX].to_numpy().astype(np.int32)
    # user ids in did order (so did_index is stable), then intervals newest first, keywords asc
    uniq, uid = np.unique(did, return_inverse=True)
    order = np.lexsort((kwi, -ist, uid))
    uid, ist, kwi, shows, clicks = uid[order], ist[order], kwi[order], shows[order], clicks[order]
    age = g[f"{C.AGE}_min"].to_numpy()[order]
    gender = g[f"{C.GENDER}_min"].to_numpy()[order]

    # user filters
    n_users = len(uniq)
    user_shows = np.bincount(uid, weights=shows, minlength=n_users)
    new_interval = np.ones(len(uid), dtype=bool)
    new_interval[1:] = (uid[1:] != uid[:-1]) | (ist[1:] != ist[:-1])
    user_intervals = np.bincount(uid[new_interval], minlength=n_users)
    ok = (user_shows >= filters.min_traffic) & (user_intervals >= filters.min_active_intervals)
    if filters.max_traffic is not None:
        ok &= user_shows <= filters.max_traffic
    counts["filtered_users"] = int((~ok).sum())
    rows_ok = ok[uid]
    uid, ist, kwi, shows, clicks = uid[rows_ok], ist[rows_ok], kwi[rows_ok], shows[rows_ok], clicks[rows_ok]
    age, gender, new_interval = age[rows_ok], gender[rows_ok], new_interval[rows_ok]

    # offsets: rows -> intervals -> users
    interval_starts = np.nonzero(new_interval)[0]
    inner_offsets = np.append(interval_starts, len(uid))
    interval_uid = uid[interval_starts]
    user_first_interval = np.nonzero(np.r_[True, interval_uid[1:] != interval_uid[:-1]])[0] if len(interval_uid) else np.array([], np.int64)
    outer_offsets = np.append(user_first_interval, len(interval_starts))
    user_rows = interval_starts[user_first_interval] if len(interval_starts) else np.array([], np.int64)
    kept_uid = interval_uid[user_first_interval] if len(interval_uid) else np.array([], np.int64)

    def nested(values: np.ndarray) -> pa.Array:
        return _lists(outer_offsets, _lists(inner_offsets, pa.array(values.astype(np.int32))))

    table = pa.table(
        {
            C.AGE: pa.array(age[user_rows].astype(np.int32)),
            C.GENDER: pa.array(gender[user_rows].astype(np.int32)),
            C.DID: pa.array(uniq[kept_uid].tolist() if len(kept_uid) else [], pa.string()),
            C.DID_INDEX: pa.array(kept_uid.astype(np.int64) * num_buckets + bucket),
            C.INTERVAL_STARTING_TIME: _lists(outer_offsets, pa.array(ist[interval_starts])),
            C.KWI: nested(kwi),
            C.KWI_SHOW_COUNTS: nested(shows),
            C.KWI_CLICK_COUNTS: nested(clicks),
        }
    )
    counts["users"] = table.num_rows
    return table, orphans, counts


def trainready_bucket(batch: dict, root: str, final: str, qstaging: str, filters: dict, num_buckets: int,
                      days: list[str] | None) -> dict:
    storage = Storage(root)
    out = {"rows_in": 0, "users": 0, "click_without_show": 0, "filtered_users": 0}
    for bucket in batch["bucket"]:
        files = []
        for day in storage.iter_dirs(C.T_LOGS):
            if days is not None and day.split("=", 1)[1] not in days:
                continue
            files += storage.list_files(C.T_LOGS, f"{day}/{C.DID_BUCKET}={bucket}", suffix=".parquet")
        if not files:
            continue
        logs = pq.read_table(files, columns=READ_COLUMNS, filesystem=storage.fs, partitioning=None)
        table, orphans, counts = build_trainready(logs, TrainReadyConfig(**filters), int(bucket), num_buckets)
        part = f"{C.DID_BUCKET}={bucket}"
        storage.makedirs(final, part)
        pq.write_table(table, storage.path(final, part, "part-0.parquet"), filesystem=storage.fs)
        if orphans.num_rows:
            pq.write_table(
                orphans.append_column(C.REASON, pa.array(["click_without_show"] * orphans.num_rows)),
                storage.path(qstaging, f"b{bucket}.parquet"), filesystem=storage.fs,
            )
        out["rows_in"] += logs.num_rows
        for k in ("users", "click_without_show", "filtered_users"):
            out[k] += counts[k]
    return {k: np.array([v]) for k, v in out.items()}


def run(cfg: DataConfig, storage: Storage) -> dict:
    import ray

    from app.data.unify import selected_days

    report = StageReport("trainready")
    final = storage.new_staging("trainready")
    qstaging = storage.new_staging("trainready-quarantine")
    stats = ray.data.from_items([{"bucket": b} for b in range(cfg.did_bucket_num)]).map_batches(
        trainready_bucket, batch_size=1,
        fn_kwargs={"root": storage.root, "final": final, "qstaging": qstaging,
                   "filters": cfg.trainready.model_dump(), "num_buckets": cfg.did_bucket_num,
                   "days": selected_days(cfg)},
    ).to_pandas()
    storage.commit_partitions(final, C.T_TRAINREADY)
    storage.commit_replace(qstaging, f"{C.T_QUARANTINE}/trainready")
    report.rows_in = int(stats["rows_in"].sum())
    report.rows_out = int(stats["users"].sum())
    report.add_quarantine({"click_without_show": int(stats["click_without_show"].sum())})
    report.extra = {"users": report.rows_out, "filtered_users": int(stats["filtered_users"].sum())}
    return report.finish(storage)
