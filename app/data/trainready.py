"""Stage 5, train-ready: one row per user with newest-first, element-aligned nested arrays.

Columns: age, gender, did, did_index, interval_starting_time (list<int64>), kwi, kwi_show_counts,
kwi_click_counts (list<list<int32>>: per interval, the keyword indices and their counts), did_bucket.
Typed nested lists, not the spec's comma strings. Within an interval keywords are ascending.

Clicks of a (user, interval, keyword) that has no show are dropped (a click needs its impression)
and counted as ``click_without_show``; they go to the quarantine aggregated per group. User filters
(``min_traffic``, ``max_traffic``, ``min_active_intervals``) replace the spec's hard-coded rule.

``did_index`` is unique and stable for a given input: ``rank of did within its bucket *
did_bucket_num + did_bucket``.

One Ray Data task per did_bucket reads the bucket's unified logs with the did column
dictionary-encoded and works on integer codes (the did's rank in string order), so grouping is one
sort of packed int64 keys instead of a hash aggregation on strings plus a sort of Python strings.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app import constants as C
from app.data.config import DataConfig, TrainReadyConfig
from app.data.io import StageReport, map_tasks, write_parquet
from app.data.transforms import as_dictionary
from app.storage import Storage

READ_COLUMNS = [C.DID, C.IS_CLICK, C.KEYWORD_INDEX, C.INTERVAL_STARTING_TIME, C.GENDER, C.AGE]
#: ``tables/quarantine/trainready``: one row per (user, interval, keyword) group of clicks without a show
ORPHAN_SCHEMA = pa.schema([(C.DID, pa.string()), (C.INTERVAL_STARTING_TIME, pa.int64()),
                           (C.KEYWORD_INDEX, pa.int32()), ("clicks", pa.int64()), (C.REASON, pa.string())])


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _bits(span: int) -> int:
    return max(1, int(span).bit_length())


def _group_rows(rank: np.ndarray, ist: np.ndarray, kwi: np.ndarray, is_click: np.ndarray, age: np.ndarray,
                gender: np.ndarray) -> dict[str, np.ndarray]:
    """Rows grouped by (user asc, interval desc, keyword asc): per group its user rank, interval,
    keyword, row count, clicks and smallest age and gender, in that group order.

    When all six fit one int64 (always at realistic sizes), each row is packed into one key with
    the group fields high and (is_click, age, gender) low, the keys are sorted by value (about 5x
    cheaper than an argsort here, and no gathers after it: a group's fields are its keys' high
    bits, its clicks and minima reductions of the low bits). Else a lexsort and gathers.
    """
    n = len(rank)
    if n == 0:
        z = np.zeros(0, np.int64)
        return {"rank": z, "ist": z, "kwi": z, "size": z, "clicks": z, "age": z, "gender": z}
    ist_lo, ist_hi = int(ist.min()), int(ist.max())
    step = max(int(np.gcd.reduce(ist - ist_lo)), 1)  # intervals are multiples of one length
    kw_lo, age_lo, g_lo = int(kwi.min()), int(age.min()), int(gender.min())
    widths = [_bits(int(rank.max())), _bits((ist_hi - ist_lo) // step), _bits(int(kwi.max()) - kw_lo), 1,
              _bits(int(age.max()) - age_lo), _bits(int(gender.max()) - g_lo)]
    if sum(widths) <= 63 and rank.min() >= 0:
        rb, ib, kb, _cb, ab, gb = widths
        key = rank.astype(np.int64) << ib
        key |= (ist_hi - ist) // step
        key <<= kb
        key |= kwi - kw_lo
        key <<= 1
        key |= is_click.astype(np.int64) != 0
        key <<= ab
        key |= age - age_lo
        key <<= gb
        key |= gender - g_lo
        key.sort()
        low = 1 + ab + gb
        group = key >> low
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        g = group[starts]
        return {
            "rank": g >> (ib + kb),
            "ist": ist_hi - ((g >> kb) & ((1 << ib) - 1)) * step,
            "kwi": (g & ((1 << kb) - 1)) + kw_lo,
            "size": np.diff(np.r_[starts, n]),
            "clicks": np.add.reduceat((key >> (ab + gb)) & 1, starts),
            "age": np.minimum.reduceat((key >> gb) & ((1 << ab) - 1), starts) + age_lo,
            "gender": np.minimum.reduceat(key & ((1 << gb) - 1), starts) + g_lo,
        }
    order = np.lexsort((kwi, -ist, rank))
    u, i, k = rank[order], ist[order], kwi[order]
    starts = np.flatnonzero(np.r_[True, (u[1:] != u[:-1]) | (i[1:] != i[:-1]) | (k[1:] != k[:-1])])
    return {
        "rank": u[starts], "ist": i[starts], "kwi": k[starts], "size": np.diff(np.r_[starts, n]),
        "clicks": np.add.reduceat((is_click[order] != 0).astype(np.int64), starts),
        "age": np.minimum.reduceat(age[order], starts), "gender": np.minimum.reduceat(gender[order], starts),
    }


def build_trainready(
    logs: pa.Table, filters: TrainReadyConfig, bucket: int, num_buckets: int
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Pure: unified logs of one bucket -> (train-ready rows, orphan-click groups, counts).

    Vectorized on integer codes: the did column as dictionary indices ranked by did (string
    order), groups found with one value sort of packed row keys (:func:`_group_rows`).
    """
    did = as_dictionary(logs[C.DID])
    code_of_rank = pc.sort_indices(did.dictionary).to_numpy()
    dict_rank = np.empty(len(did.dictionary), dtype=np.int64)
    dict_rank[code_of_rank] = np.arange(len(did.dictionary))
    codes = pc.fill_null(did.indices, 0).to_numpy()
    rank = dict_rank[codes] if len(codes) else np.zeros(0, np.int64)
    col = lambda name: logs[name].to_numpy().astype(np.int64)  # noqa: E731
    g = _group_rows(rank, col(C.INTERVAL_STARTING_TIME), col(C.KEYWORD_INDEX), col(C.IS_CLICK), col(C.AGE),
                    col(C.GENDER))
    clicks, shows = g["clicks"], g["size"] - g["clicks"]
    g_rank, g_ist, g_kwi, age, gender = g["rank"], g["ist"], g["kwi"], g["age"], g["gender"]
    g_code = code_of_rank[g_rank] if len(g_rank) else np.zeros(0, np.int64)

    orphan = shows == 0
    orphans = pa.table({
        C.DID: did.dictionary.take(pa.array(g_code[orphan])) if orphan.any() else pa.array([], pa.string()),
        C.INTERVAL_STARTING_TIME: pa.array(g_ist[orphan], pa.int64()),
        C.KEYWORD_INDEX: pa.array(g_kwi[orphan].astype(np.int32), pa.int32()),
        "clicks": pa.array(clicks[orphan], pa.int64()),
    })
    counts = {"click_without_show": int(clicks[orphan].sum())}
    ok_g = ~orphan
    g_rank, ist, kwi, g_code = g_rank[ok_g], g_ist[ok_g], g_kwi[ok_g], g_code[ok_g]
    shows, clicks, age, gender = shows[ok_g], clicks[ok_g], age[ok_g], gender[ok_g]
    # dense user ids in did order (so did_index is stable): groups are sorted by did rank already
    new_user = np.r_[True, g_rank[1:] != g_rank[:-1]] if len(g_rank) else np.zeros(0, bool)
    uid = np.cumsum(new_user) - 1
    n_users = int(new_user.sum())

    # user filters
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
    age, gender, new_interval, g_code = age[rows_ok], gender[rows_ok], new_interval[rows_ok], g_code[rows_ok]

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
            C.DID: did.dictionary.take(pa.array(g_code[user_rows])) if len(user_rows) else pa.array([], pa.string()),
            C.DID_INDEX: pa.array(kept_uid.astype(np.int64) * num_buckets + bucket),
            C.INTERVAL_STARTING_TIME: _lists(outer_offsets, pa.array(ist[interval_starts])),
            C.KWI: nested(kwi),
            C.KWI_SHOW_COUNTS: nested(shows),
            C.KWI_CLICK_COUNTS: nested(clicks),
        }
    )
    counts["users"] = table.num_rows
    return table, orphans, counts


def stage_bucket(storage: Storage, logs: pa.Table, bucket: int, final: str, qstaging: str,
                 filters: TrainReadyConfig, num_buckets: int) -> tuple[dict[str, int], pa.Table]:
    """Build one bucket's train-ready rows from its unified logs and write them (and its orphan
    clicks) to the staging areas; return the counters and the rows. The clean stage calls it too
    when it runs this stage fused (:mod:`app.data.pipeline`). A bucket whose users were all
    filtered out still gets its (empty) partition, so a re-run replaces the old one."""
    table, orphans, counts = build_trainready(logs, filters, bucket, num_buckets)
    part = f"{C.DID_BUCKET}={bucket}"
    storage.makedirs(final, part)
    write_parquet(table, storage.path(final, part, "part-0.parquet"), storage.fs, flat=False)
    if orphans.num_rows:
        pq.write_table(
            orphans.append_column(C.REASON, pa.array(["click_without_show"] * orphans.num_rows)).cast(ORPHAN_SCHEMA),
            storage.path(qstaging, f"b{bucket}.parquet"), filesystem=storage.fs,
        )
    newest = pc.max(pc.list_flatten(table[C.INTERVAL_STARTING_TIME])).as_py()
    counts["rows_in"] = logs.num_rows
    counts["max_interval"] = -1 if newest is None else int(newest)
    return counts, table


#: the per-bucket counters of :func:`stage_bucket` that add up over buckets
COUNTERS = ("rows_in", "users", "click_without_show", "filtered_users")


def trainready_bucket(batch: dict, root: str, final: str, qstaging: str, filters: dict, num_buckets: int,
                      days: list[str] | None) -> dict:
    storage = Storage(root)
    out = dict.fromkeys(COUNTERS, 0)
    for bucket in batch["bucket"]:
        files = []
        for day in storage.iter_dirs(C.T_LOGS):
            if days is not None and day.split("=", 1)[1] not in days:
                continue
            files += storage.list_files(C.T_LOGS, f"{day}/{C.DID_BUCKET}={bucket}", suffix=".parquet")
        if not files:
            continue
        logs = pq.read_table(files, columns=READ_COLUMNS, filesystem=storage.fs, partitioning=None,
                             read_dictionary=[C.DID])
        counts, _table = stage_bucket(storage, logs, int(bucket), final, qstaging, TrainReadyConfig(**filters),
                                      num_buckets)
        for k in COUNTERS:
            out[k] += counts[k]
    return {k: np.array([v]) for k, v in out.items()}


def new_staging(storage: Storage) -> dict[str, str]:
    return {"final": storage.new_staging("trainready"), "qstaging": storage.new_staging("trainready-quarantine")}


def commit(storage: Storage, staging: dict[str, str], totals: dict[str, int], report: StageReport) -> dict:
    """Swap the staged train-ready partitions and quarantine in; write the stage report."""
    storage.commit_partitions(staging["final"], C.T_TRAINREADY)
    if not storage.list_files(staging["qstaging"]):  # an empty quarantine still reads as its schema
        pq.write_table(ORPHAN_SCHEMA.empty_table(), storage.path(staging["qstaging"], "empty.parquet"),
                       filesystem=storage.fs)
    storage.commit_replace(staging["qstaging"], f"{C.T_QUARANTINE}/trainready")
    report.rows_in = int(totals["rows_in"])
    report.rows_out = int(totals["users"])
    report.add_quarantine({"click_without_show": int(totals["click_without_show"])})
    report.extra.update({"users": report.rows_out, "filtered_users": int(totals["filtered_users"])})
    return report.finish(storage)


def run(cfg: DataConfig, storage: Storage) -> dict:
    from app.data.unify import selected_days

    report = StageReport("trainready")
    staging = new_staging(storage)
    stats = map_tasks([{"bucket": b} for b in range(cfg.did_bucket_num)], trainready_bucket,
                      {"root": storage.root, **staging, "filters": cfg.trainready.model_dump(),
                       "num_buckets": cfg.did_bucket_num, "days": selected_days(cfg)})
    return commit(storage, staging, {k: int(stats[k].sum()) for k in COUNTERS}, report)
