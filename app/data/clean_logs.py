"""Stage 3, clean show and click logs (and, fused into the same per-bucket pass, the later stages).

Step 1, one Ray Data ``map_batches`` task per raw row group of either log (lookup tables shipped
once through the object store): whitelist slot ids and add ``media_category``; join keyword (via
spread_app_id) and persona (gender, age, did_bucket); parse the timestamp. Every rejected row goes
to the quarantine with one reason, checked in this order: ``missing_did``, ``bad_time``,
``unknown_slot``, ``unknown_app``, ``rare_keyword``, ``unknown_did``. Clean rows are handed to
step 2 through a staging area, one Arrow IPC file per (row group, did_bucket).

Step 2, one task per did_bucket (both logs): remove exact duplicates (a duplicate has the same did
and timestamp as its original, so the same bucket and day: no global shuffle), quarantine the
extra copies as ``duplicate``, and write the final ``(day, did_bucket)`` partitions of
``tables/showlog``, ``tables/clicklog`` *and* ``tables/logs`` (the unify stage's output). All
three are swapped in atomically (journaled commits, :mod:`app.storage`).

Why it is built this way (10M raw rows on 2 cores; see BENCHMARKS.md):

- String columns stay dictionary-encoded from the Parquet read to the Parquet write: lookups,
  hashes and the missing-did test run on the few distinct values of a row group, and the writer
  takes the codes as they are. Only the timestamp is a plain string; it is parsed with numpy
  (:func:`app.data.transforms.parse_time_fields`).
- Deduplication compares a 64-bit hash of the 9 raw fields per row, computed in step 1 from the
  per-value hashes of the dictionaries; only rows whose hash occurs twice are then grouped on the
  real values, so the result is exact (a hash collision only costs a comparison).
- Unify is folded into step 2 because it needs exactly what step 2 holds in memory (a bucket's
  clean show and click rows with their parsed seconds); as its own stage it re-read and re-parsed
  every row (about a third of the old clean time). ``python -m app data unify`` still rebuilds
  ``tables/logs`` from the cleaned tables alone (:mod:`app.data.unify`), and the pipeline records
  the fusion in the unify report.
- In a run that includes them, train-ready and samples follow in the same bucket task, on the rows
  it holds (``fuse``, :func:`_downstream_bucket`); their output is committed only where it equals
  what the stage run alone would write (:func:`_commit_downstream`), else they run alone after.
"""

from __future__ import annotations

import posixpath
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app import constants as C
from app.data import samples, trainready
from app.data.config import DataConfig, TrainReadyConfig
from app.data.io import StageReport, map_tasks, pack_units, quarantine_schema, read_unit, write_parquet
from app.data.keywords import load_keywords
from app.data.persona import load_persona
from app.data.raw_input import MALFORMED, log_inputs, read_input
from app.data.transforms import (
    StringIndex,
    as_dictionary,
    days_to_strings,
    mix_hash,
    parse_time_fields,
    stable_hash,
    unify_chunk_dictionaries,
)
from app.storage import Storage

LOGS = {"showlog": (C.SHOW_TIME, C.T_SHOWLOG), "clicklog": (C.CLICK_TIME, C.T_CLICKLOG)}
LOG_RAW_COLUMNS = {"showlog": C.SHOWLOG_COLUMNS, "clicklog": C.CLICKLOG_COLUMNS}
REASONS = ["missing_did", "bad_time", "unknown_slot", "unknown_app", "rare_keyword", "unknown_did"]

#: the raw fields of a cleaned row; every other column is a function of these (lookups, the day)
DEDUP_KEY = [C.DID, C.ADV_ID, C.MEDIA, C.SLOT_ID, C.SPREAD_APP_ID, C.DEVICE_NAME, C.NET_TYPE, C.PRICE_MODEL,
             C.ACTION_TIME]
#: row groups smaller than this are cleaned together in one task
MIN_TASK_ROWS = 250_000
#: internal columns of the staged rows (never written to a table)
SECS, DAYNUM, HASH = "_secs", "_day", "_hash"
#: step 1 statistic (a maximum, not a sum): the newest clean timestamp, epoch seconds
NEWEST = "newest_secs"
#: step 1 statistic: task milliseconds (the stage report gives the task seconds of both steps)
TASK_MS = "task_ms"
#: the columns of a (day, did_bucket) partition file (partition values live in the path)
BODY_COLUMNS = [c for c in C.CLEAN_LOG_COLUMNS if c not in (C.DAY, C.DID_BUCKET)]
#: raw column -> the cleaned column that holds its value unchanged (the timestamp: ACTION_TIME)
RAW_FROM_CLEAN = {C.DID: C.DID, C.ADV_ID: C.ADV_ID, C.ADV_TYPE: C.MEDIA, C.SLOT_ID: C.SLOT_ID,
                  C.SPREAD_APP_ID: C.SPREAD_APP_ID, C.DEVICE_NAME: C.DEVICE_NAME, C.NET_TYPE: C.NET_TYPE,
                  C.ADV_BILL_MODE_CD: C.PRICE_MODEL}


def build_lookups(storage: Storage, cfg: DataConfig) -> dict[str, pa.Table]:
    slots = read_input(storage, "slot", cfg.raw.slot, C.SLOT_TABLE_COLUMNS)
    apps = read_input(storage, "keyword", cfg.raw.keyword, C.KEYWORD_TABLE_COLUMNS)
    keywords = load_keywords(storage, kept_only=False)
    apps = apps.join(keywords.select([C.KEYWORD, C.KEYWORD_INDEX, "kept"]), C.KEYWORD, join_type="left outer")
    return {
        "slots": slots.group_by(C.SLOT_ID).aggregate([(C.MEDIA_CATEGORY, "min")]).rename_columns(
            [C.SLOT_ID, C.MEDIA_CATEGORY]
        ),
        "apps": apps.group_by(C.SPREAD_APP_ID).aggregate(
            [(C.KEYWORD, "min"), (C.KEYWORD_INDEX, "min"), ("kept", "min")]
        ).rename_columns([C.SPREAD_APP_ID, C.KEYWORD, C.KEYWORD_INDEX, "kept"]),
        "persona": load_persona(storage),
    }


def _encode(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int32 code per row, distinct values) of a small lookup column, for dictionary outputs."""
    d = as_dictionary(values)
    return pc.fill_null(d.indices, 0).to_numpy().astype(np.int32), d.dictionary


class Lookups:
    """The lookup tables as numpy arrays indexed by position in each table's key column."""

    def __init__(self, tables: dict[str, pa.Table]):
        slots, apps, persona = tables["slots"], tables["apps"], tables["persona"]
        self.slot_ids = slots[C.SLOT_ID].combine_chunks()
        self.media_code, self.media_values = _encode(slots[C.MEDIA_CATEGORY])
        self.app_ids = apps[C.SPREAD_APP_ID].combine_chunks()
        self.keyword_code, self.keyword_values = _encode(apps[C.KEYWORD])
        kwi = apps[C.KEYWORD_INDEX].combine_chunks()
        self.app_known = kwi.is_valid().to_numpy(zero_copy_only=False)
        self.keyword_index = pc.fill_null(kwi, 0).to_numpy().astype(np.int32)
        self.kept = pc.fill_null(apps["kept"].combine_chunks(), False).to_numpy(zero_copy_only=False)
        # persona in did_bucket order: a bucket's dids are one slice of ``dids``, the did dictionary
        # every staged file of that bucket shares (see :meth:`bucket_dids`)
        bucket = persona[C.DID_BUCKET].to_numpy().astype(np.int32)
        if len(bucket) and not np.all(bucket[1:] >= bucket[:-1]):
            persona = persona.take(pa.array(np.argsort(bucket, kind="stable")))
        self.dids = persona[C.DID].combine_chunks()
        self.did_index = StringIndex(self.dids)
        self.gender = persona[C.GENDER].to_numpy().astype(np.int32)
        self.age = persona[C.AGE].to_numpy().astype(np.int32)
        self.bucket = persona[C.DID_BUCKET].to_numpy().astype(np.int32)
        self.bucket_start = np.searchsorted(self.bucket, np.arange(int(self.bucket.max(initial=-1)) + 2))

    def bucket_dids(self, col: pa.DictionaryArray, bucket: int) -> pa.DictionaryArray:
        """A did column over ``dids`` (the clean rows' dictionary) whose rows all lie in ``bucket``,
        re-based onto that bucket's slice of ``dids``."""
        lo, hi = int(self.bucket_start[bucket]), int(self.bucket_start[bucket + 1])
        idx = col.indices.to_numpy() - np.int32(lo)
        return pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), self.dids.slice(lo, hi - lo))


def _codes(col: pa.DictionaryArray) -> tuple[np.ndarray, np.ndarray | None]:
    """(dictionary index per row with nulls as 0, null mask or None)."""
    if col.null_count:
        return pc.fill_null(col.indices, 0).to_numpy(), col.is_null().to_numpy(zero_copy_only=False)
    return col.indices.to_numpy(), None


def _position(col: pa.DictionaryArray, value_set: pa.Array) -> np.ndarray:
    """Row -> position of its value in ``value_set``; -1 where absent or null."""
    per_value = pc.fill_null(pc.index_in(col.dictionary, value_set=value_set), -1).to_numpy()
    idx, null = _codes(col)
    pos = per_value[idx] if len(per_value) else np.full(len(col), -1, np.int32)
    if null is not None:
        pos = np.where(null, -1, pos)
    return pos


def clean_table(
    raw: pa.Table, time_col: str, lookups: Lookups, day_range: tuple[int, int] | None = None,
    by_bucket_day: bool = False,
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """(clean rows, quarantined rows with reason, counts), vectorized over dictionary codes.

    The clean rows carry the internal columns ``_secs`` (epoch seconds), ``_day`` (epoch day)
    and ``_hash`` (equal for rows with equal :data:`DEDUP_KEY` fields) and no ``day`` string.
    They keep the raw order, or with ``by_bucket_day`` are sorted (stably) by (did_bucket, day):
    the clean rows are gathered once, already in that order, instead of a filter and a take.
    """
    n = raw.num_rows
    cols = {c: as_dictionary(raw[c]) for c in raw.column_names if c != time_col}
    reason = np.zeros(n, dtype=np.int8)  # 0 = clean, else 1 + index in REASONS

    def mark(mask: np.ndarray, name: str) -> None:
        reason[(reason == 0) & mask] = REASONS.index(name) + 1

    did = cols[C.DID]
    did_hash = stable_hash(did.dictionary)  # per distinct did: lookup and dedup hash
    empty = pc.fill_null(pc.equal(did.dictionary, ""), True).to_numpy(zero_copy_only=False)
    idx, null = _codes(did)
    missing = empty[idx] if len(empty) else np.ones(n, dtype=bool)
    mark(missing if null is None else missing | null, "missing_did")
    secs, time_ok, time_key = parse_time_fields(raw[time_col])
    mark(~time_ok, "bad_time")
    slot_pos = _position(cols[C.SLOT_ID], lookups.slot_ids)
    mark(slot_pos < 0, "unknown_slot")
    app_pos = _position(cols[C.SPREAD_APP_ID], lookups.app_ids)
    app_safe = np.maximum(app_pos, 0)
    known = (app_pos >= 0) & lookups.app_known[app_safe] if len(lookups.app_known) else app_pos >= 0
    mark(~known, "unknown_app")
    kept = known & lookups.kept[app_safe] if len(lookups.kept) else known
    mark(~kept, "rare_keyword")
    did_pos = lookups.did_index.positions(did.dictionary, did_hash)[idx] if len(did.dictionary) else np.full(n, -1)
    if null is not None:
        did_pos = np.where(null, -1, did_pos)
    mark(did_pos < 0, "unknown_did")

    free = reason == 0
    if day_range is not None:  # rows outside the requested days are not this run's business
        free &= (secs >= day_range[0]) & (secs < day_range[1])
    counts = np.bincount(reason, minlength=len(REASONS) + 1)
    rejected = reason > 0
    quarantine = raw.filter(pa.array(rejected))
    quarantine = quarantine.cast(pa.schema([(c, pa.string()) for c in quarantine.column_names]))
    quarantine = quarantine.append_column(
        C.REASON, pa.array(np.array(REASONS, dtype=object)[reason[rejected] - 1], pa.string())
    )  # the stage's quarantine schema (raw columns + reason), as duplicate_quarantine's rows

    rows = np.flatnonzero(free)
    if by_bucket_day and len(rows):
        day = secs[rows] // 86400
        key = lookups.bucket[did_pos[rows]].astype(np.int64) << 32 | (day - day.min())  # days before 1970 too
        if not np.all(key[1:] >= key[:-1]):
            rows = rows[np.argsort(key, kind="stable")]
    keep = pa.array(rows)
    kept_cols = {c: cols[c].take(keep) for c in cols if c != C.DID}
    slot_k, app_k, did_k = slot_pos[rows], app_pos[rows], did_pos[rows]
    secs_k = secs[rows]
    # dedup pre-selection key: did and timestamp (seconds + fraction) tell rows apart; rows with
    # equal hashes are then compared on all DEDUP_KEY values (duplicate_rows), so it stays exact
    h = mix_hash(mix_hash(did_hash[idx[rows]], secs_k), time_key[rows])
    clean = pa.table(
        {
            C.SPREAD_APP_ID: kept_cols[C.SPREAD_APP_ID],
            # over the persona dids (one dictionary for every task; see Lookups.bucket_dids)
            C.DID: pa.DictionaryArray.from_arrays(pa.array(did_k.astype(np.int32), pa.int32()), lookups.dids),
            C.ADV_ID: kept_cols[C.ADV_ID],
            C.MEDIA: kept_cols[C.ADV_TYPE],
            C.SLOT_ID: kept_cols[C.SLOT_ID],
            C.DEVICE_NAME: kept_cols[C.DEVICE_NAME],
            C.NET_TYPE: kept_cols[C.NET_TYPE],
            C.PRICE_MODEL: kept_cols[C.ADV_BILL_MODE_CD],
            C.ACTION_TIME: raw[time_col].take(keep),
            C.MEDIA_CATEGORY: pa.DictionaryArray.from_arrays(lookups.media_code[slot_k], lookups.media_values),
            C.GENDER: pa.array(lookups.gender[did_k]),
            C.AGE: pa.array(lookups.age[did_k]),
            C.KEYWORD: pa.DictionaryArray.from_arrays(lookups.keyword_code[app_k], lookups.keyword_values),
            C.KEYWORD_INDEX: pa.array(lookups.keyword_index[app_k]),
            C.DID_BUCKET: pa.array(lookups.bucket[did_k]),
            SECS: pa.array(secs_k),
            DAYNUM: pa.array((secs_k // 86400).astype(np.int32)),
            HASH: pa.array(h),
        }
    )
    named = {name: int(counts[i + 1]) for i, name in enumerate(REASONS) if counts[i + 1]}
    return clean, quarantine, named


def clean_batch(
    raw: pa.Table, time_col: str, lookups: dict[str, pa.Table], day_range: tuple[int, int] | None = None
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """(clean rows in the cleaned-log schema, quarantined rows with reason, counts). Pure: the unit
    tests call it directly; the pipeline uses :func:`clean_table` (same rows, internal columns)."""
    clean, quarantine, counts = clean_table(raw, time_col, Lookups(lookups), day_range)
    days = clean[DAYNUM].to_numpy()
    uniq, inv = np.unique(days, return_inverse=True)
    day = pa.DictionaryArray.from_arrays(inv.astype(np.int32), pa.array(days_to_strings(uniq), pa.string()))
    out = clean.append_column(C.DAY, day)
    return out.select(C.CLEAN_LOG_COLUMNS), quarantine, counts


_LOOKUP_CACHE: dict[str, Lookups] = {}


def _lookups(holder: list) -> Lookups:
    """The lookup tables, fetched from the object store once per worker process and run."""
    import ray

    ref = holder[0]
    key = ref.hex()
    if key not in _LOOKUP_CACHE:
        _LOOKUP_CACHE.clear()
        _LOOKUP_CACHE[key] = Lookups(ray.get(ref))
    return _LOOKUP_CACHE[key]


def _write_ipc(storage: Storage, path: str, table: pa.Table) -> None:
    storage.fs.create_dir(posixpath.dirname(path), recursive=True)
    with storage.fs.open_output_stream(path) as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _split_points(keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(order that sorts ``keys`` stably or None if already sorted, sorted keys, run boundaries in
    sorted order including both ends)."""
    order = None
    if len(keys) and not np.all(keys[1:] >= keys[:-1]):
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    edges = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True]) if len(keys) else np.array([0])
    return order, keys, edges


def clean_block(batch: dict, lookups_ref: list, logs: dict, root: str, day_range: tuple[int, int] | None) -> pa.Table:
    """Ray Data task: clean one row group, stage its clean rows per bucket (Arrow IPC) and write
    its quarantined rows.

    Tasks over row-group work items that read with pyarrow themselves: an actor pool holding both
    CPUs of a 2-CPU machine starves Ray Data's own read tasks (deadlock), and Ray Data's Parquet
    datasource cost 15+ s of scheduling for 100k rows here, against 0.1 s for the read itself.
    """
    storage = Storage(root)
    names, values, which = [], [], []
    work = [(f, int(rg), log) for files, groups, log in zip(batch["file"], batch["row_group"], batch["log"], strict=True)
            for f, rg in zip(files, groups, strict=True)]
    for f, rg, log in work:
        started = time.perf_counter()
        info = logs[log]
        columns = info["columns"]
        raw = read_unit(f, rg, columns, dictionary=tuple(c for c in columns if c != info["time_col"]))
        lookups = _lookups(lookups_ref)
        # sorted by (bucket, day): one staged file per bucket, each day a contiguous run in it
        clean, quarantine, counts = clean_table(raw, info["time_col"], lookups, day_range, by_bucket_day=True)
        tag = uuid.uuid4().hex[:12]
        if clean.num_rows:
            _order, buckets, edges = _split_points(clean[C.DID_BUCKET].to_numpy())
            did_at = clean.schema.get_field_index(C.DID)
            for lo, hi in zip(edges[:-1], edges[1:], strict=True):
                part = clean.slice(lo, hi - lo)
                part = part.set_column(did_at, C.DID, lookups.bucket_dids(part[C.DID].chunk(0), int(buckets[lo])))
                _write_ipc(storage, storage.path(info["staging"], f"{C.DID_BUCKET}={int(buckets[lo])}",
                                                 f"b-{tag}.arrow"), part)
        if quarantine.num_rows:
            pq.write_table(quarantine, storage.path(info["qstaging"], f"q-{tag}.parquet"), filesystem=storage.fs)
        row = {"rows_in": raw.num_rows, "rows_out": clean.num_rows, **counts,
               NEWEST: int(clean[SECS].to_numpy().max()) if clean.num_rows else -1,
               TASK_MS: round(1000 * (time.perf_counter() - started))}
        for k, v in row.items():
            names.append(k)
            values.append(int(v))
            which.append(log)
    return pa.table({"log": which, "name": names, "value": pa.array(values, pa.int64())})


def dedup_partition(
    table: pa.Table, key: list[str] | None = None, hashes: np.ndarray | None = None
) -> tuple[pa.Table, pa.Table]:
    """(distinct rows, extra copies of exact duplicates). Pure.

    Rows are compared on ``key`` (default: every column). For cleaned logs the raw fields suffice:
    the joined columns are functions of them. ``hashes``: see :func:`duplicate_rows`.
    """
    extra = duplicate_rows(table, key, hashes)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[extra] = False
    return table.filter(pa.array(keep)), table.take(pa.array(extra, pa.int64()))


def duplicate_rows(table: pa.Table, key: list[str] | None = None, hashes: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the extra copies of exact duplicates (every copy after a group's first row).

    With ``hashes`` (equal rows have equal hashes), only rows whose hash occurs more than once are
    compared on their values, which is what makes deduplicating millions of rows cheap.
    """
    key = key or table.column_names
    if hashes is not None:
        order = np.argsort(hashes)
        sorted_h = hashes[order]
        same = sorted_h[1:] == sorted_h[:-1]
        cand = np.zeros(len(hashes), dtype=bool)
        cand[1:] |= same
        cand[:-1] |= same
        rows = np.sort(order[cand])
    else:
        rows = np.arange(table.num_rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    sub = _plain(table.select(key).take(pa.array(rows)))
    grouped = sub.append_column("_row", pa.array(rows, pa.int64())).group_by(key, use_threads=False).aggregate(
        [("_row", "min")]
    )
    first = np.zeros(table.num_rows, dtype=bool)
    first[grouped["_row_min"].to_numpy()] = True
    return rows[~first[rows]]


def _staged_days(storage: Storage, staging: str, bucket: int) -> dict[int, list[pa.RecordBatch]]:
    """A bucket's staged rows: epoch day -> its runs (one per staged file), with the dictionaries
    of all files unified, so a day's runs concatenate without re-encoding. The did dictionary is
    the same in every file of a bucket, both logs (:meth:`Lookups.bucket_dids`): nothing to do."""
    files = storage.list_files(staging, f"{C.DID_BUCKET}={bucket}", suffix=".arrow")
    if not files:
        return {}
    parts = []
    for f in files:
        source = pa.memory_map(f) if not storage._scheme else storage.fs.open_input_file(f)
        parts.append(pa.ipc.open_file(source).read_all())
    runs: dict[int, list[pa.RecordBatch]] = {}
    for batch in unify_chunk_dictionaries(pa.concat_tables(parts)).to_batches():
        _order, days, edges = _split_points(batch.column(DAYNUM).to_numpy())  # staged day-sorted
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            runs.setdefault(int(days[lo]), []).append(batch.slice(lo, hi - lo))
    return runs


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded to their value type (for grouping and for the quarantine)."""
    return table.cast(pa.schema([(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                                 for f in table.schema]))


def duplicate_quarantine(extra: pa.Table, columns: list[str], time_col: str) -> pa.Table:
    """Quarantine rows of a log's extra duplicate copies (cleaned rows): the raw ``columns`` they
    were cleaned from (values unchanged, :data:`RAW_FROM_CLEAN`) + reason ``duplicate``, so every
    row of the log's quarantine has one schema. Pure."""
    raw = pa.table({c: extra[C.ACTION_TIME if c == time_col else RAW_FROM_CLEAN[c]] for c in columns})
    raw = _plain(raw).append_column(C.REASON, pa.array(["duplicate"] * extra.num_rows, pa.string()))
    return raw.cast(quarantine_schema(columns))


def finish_bucket(batch: dict, root: str, logs: dict, logs_final: str, interval: int,
                  downstream: dict | None = None) -> dict:
    """Ray Data task for did_buckets: per day, dedup each log's staged rows, then write the
    (day, did_bucket) partitions of the show log, the click log and the unified logs.

    An exact duplicate has the same did (so the same bucket) and the same timestamp (so the same
    day) as its original, so deduplicating a (day, bucket)'s rows at once finds every duplicate.

    ``downstream`` (fused run, see :func:`run`): then the bucket's unified rows, all days, go on
    in memory to the train-ready stage and its train-ready rows to the samples stage, each
    writing to its own staging area exactly as the stage run alone would.
    """
    from app.data.unify import unify_view

    storage = Storage(root)
    out = {f"{log}_{k}": 0 for log in LOGS for k in ("rows_out", "duplicate")}
    out["logs_rows"] = 0
    out.update({f"trainready_{k}": 0 for k in (*trainready.COUNTERS, "seconds")})
    out["trainready_max_interval"] = -1
    out.update({f"samples_{k}": 0 for k in (*samples.COUNTERS, "seconds")})
    out["seconds"] = 0.0  # this stage's own task seconds (without the fused stages')
    for bucket in batch["bucket"]:
        started = time.perf_counter()
        unified: list[pa.Table] = []
        staged = {log: _staged_days(storage, logs[log]["staging"], int(bucket)) for log in LOGS}
        dups: dict[str, list[pa.Table]] = {log: [] for log in LOGS}
        for daynum in sorted(set().union(*[set(runs) for runs in staged.values()])):
            day = days_to_strings([daynum])[0]
            part = f"{C.DAY}={day}/{C.DID_BUCKET}={bucket}"
            views = []
            for is_click, log in enumerate(LOGS):
                runs = staged[log].get(daynum)
                if not runs:
                    continue
                table = pa.Table.from_batches(runs).combine_chunks()
                table, extra = dedup_partition(table, DEDUP_KEY, table[HASH].to_numpy())
                n_extra = extra.num_rows
                if n_extra:
                    dups[log].append(duplicate_quarantine(extra, logs[log]["columns"], logs[log]["time_col"]))
                storage.makedirs(logs[log]["final"], part)
                write_parquet(table.select(BODY_COLUMNS), storage.path(logs[log]["final"], part, "part-0.parquet"),
                              storage.fs)
                views.append(unify_view(table, table[SECS].to_numpy(), interval, is_click))
                out[f"{log}_rows_out"] += table.num_rows
                out[f"{log}_duplicate"] += n_extra
            # the day's shows then its clicks, one row group each (each keeps its own dictionaries)
            storage.makedirs(logs_final, part)
            write_parquet(views, storage.path(logs_final, part, "part-0.parquet"), storage.fs)
            out["logs_rows"] += sum(v.num_rows for v in views)
            if downstream:
                unified += [v.select(trainready.READ_COLUMNS) for v in views]
        fused = time.perf_counter()
        if downstream and unified:
            _downstream_bucket(storage, pa.concat_tables(unified), int(bucket), downstream, out)
        started += time.perf_counter() - fused
        for log, tables in dups.items():
            if tables:
                pq.write_table(pa.concat_tables(tables), storage.path(
                    logs[log]["qstaging"], f"dup-b{int(bucket)}-{uuid.uuid4().hex[:12]}.parquet"), filesystem=storage.fs)
        out["seconds"] += time.perf_counter() - started
    return {k: np.array([v]) for k, v in out.items()}


def _downstream_bucket(storage: Storage, unified: pa.Table, bucket: int, downstream: dict, out: dict) -> None:
    """The fused train-ready (and samples) work of one bucket; adds its counters to ``out``."""
    t0 = time.perf_counter()
    tr = downstream["trainready"]
    counts, table = trainready.stage_bucket(storage, unified, bucket, tr["final"], tr["qstaging"],
                                            TrainReadyConfig(**tr["filters"]), tr["num_buckets"])
    for k in trainready.COUNTERS:
        out[f"trainready_{k}"] += counts[k]
    out["trainready_max_interval"] = max(out["trainready_max_interval"], counts["max_interval"])
    t1 = time.perf_counter()
    out["trainready_seconds"] += t1 - t0
    sm = downstream.get("samples")
    if sm:
        for k, v in samples.stage_bucket(storage, table, bucket, sm["staging"], sm["cut"], sm["params"]).items():
            out[f"samples_{k}"] += v
        out["samples_seconds"] += time.perf_counter() - t1


def day_bounds(cfg: DataConfig) -> tuple[int, int] | None:
    if not cfg.start_day and not cfg.end_day:
        return None
    lo = int(np.datetime64(cfg.start_day or "1970-01-01", "s").astype(np.int64))
    hi = int((np.datetime64(cfg.end_day, "s") + np.timedelta64(1, "D")).astype(np.int64)) if cfg.end_day else 2**62
    return lo, hi


def run(cfg: DataConfig, storage: Storage, fuse: tuple[str, ...] = ()) -> dict[str, Any]:
    """Both logs: clean (step 1), dedup + write (step 2). Returns the clean_showlog and
    clean_clicklog reports, and under ``fused`` the later stages whose output this run wrote and
    committed: always unify (``tables/logs``), and those of ``fuse`` it could.

    ``fuse=("trainready",)`` or ``("trainready", "samples")``: step 2's bucket tasks go on with
    those stages' per-bucket work on the rows they hold (no re-read of ``tables/logs`` and
    ``tables/trainready``, no extra Ray Data jobs). Their output is committed only if it is exactly
    what the stage run alone would produce now (:func:`_commit_downstream`); otherwise it is
    dropped and the stage is left to the caller to run.
    """
    import ray

    reports = {log: StageReport(f"clean_{log}") for log in LOGS}
    unify_report = StageReport("unify")
    lookups_ref = ray.put(build_lookups(storage, cfg))
    logs, units = {}, []
    inputs = log_inputs(storage, cfg.raw, {log: (LOG_RAW_COLUMNS[log], time_col) for log, (time_col, _d) in LOGS.items()})
    for log, (time_col, _dest) in LOGS.items():
        columns = LOG_RAW_COLUMNS[log]
        logs[log] = {
            "columns": columns, "time_col": time_col, "files": inputs[log].files,
            "staging": storage.new_staging(f"{log}-clean"), "final": storage.new_staging(f"{log}-final"),
            "qstaging": storage.new_staging(f"{log}-quarantine"),
        }
        units += pack_units([{**u, "log": log} for u in inputs[log].units], MIN_TASK_ROWS)
        for i, path in enumerate(inputs[log].malformed_files):  # malformed CSV lines, quarantine rows already
            storage.fs.copy_file(path, storage.path(logs[log]["qstaging"], f"malformed-{i:05d}.parquet"))
    logs_final = storage.new_staging("logs")
    stats = map_tasks(units, clean_block, {"lookups_ref": [lookups_ref], "logs": logs, "root": storage.root,
                                           "day_range": day_bounds(cfg)})
    newest = stats["name"] == NEWEST
    totals = stats[~newest].groupby(["log", "name"])["value"].sum().to_dict()
    clean_task_s = sum(v for (_log, name), v in totals.items() if name == TASK_MS) / 1000
    downstream = _plan_downstream(cfg, storage, fuse, int(stats.loc[newest, "value"].max()) if newest.any() else -1)
    done = map_tasks([{"bucket": b} for b in range(cfg.did_bucket_num)], finish_bucket,
                     {"root": storage.root, "logs": logs, "logs_final": logs_final,
                      "interval": cfg.interval_time_in_seconds, "downstream": downstream})
    out: dict[str, Any] = {}
    for log, (_time_col, dest) in LOGS.items():
        leaves = storage.commit_partitions(logs[log]["final"], dest)
        storage.delete(logs[log]["staging"])
        if not storage.list_files(logs[log]["qstaging"]):  # an empty quarantine still reads as its schema
            pq.write_table(quarantine_schema(logs[log]["columns"]).empty_table(),
                           storage.path(logs[log]["qstaging"], "empty.parquet"), filesystem=storage.fs)
        storage.commit_replace(logs[log]["qstaging"], f"{C.T_QUARANTINE}/{log}")
        rep = reports[log]
        rep.rows_in = int(totals.get((log, "rows_in"), 0)) + inputs[log].malformed
        rep.rows_out = int(done[f"{log}_rows_out"].sum())
        rep.add_quarantine({MALFORMED: inputs[log].malformed})
        rep.add_quarantine({r: totals.get((log, r), 0) for r in REASONS})
        rep.add_quarantine({"duplicate": int(done[f"{log}_duplicate"].sum())})
        rep.extra = {"partitions": len(leaves), "input_files": logs[log]["files"], "input_format": inputs[log].format,
                     # both logs together (one run): task seconds of step 1 and of step 2 (own part)
                     "task_seconds": {"clean": round(clean_task_s, 3),
                                      "dedup_write": round(float(done["seconds"].sum()), 3)}}
        if inputs[log].format == "csv":
            rep.extra["csv_conversion_seconds"] = inputs[log].conversion_seconds
        out[log] = rep.finish(storage)
    leaves = storage.commit_partitions(logs_final, C.T_LOGS)
    unify_report.rows_in = out["showlog"]["rows_out"] + out["clicklog"]["rows_out"]
    unify_report.rows_out = int(done["logs_rows"].sum())
    unify_report.extra = {"partitions": len(leaves), "written_by": "clean"}
    unify_report.finish(storage)  # the pipeline reports it as the unify stage's (see pipeline.py)
    out["fused"] = ["unify", *_commit_downstream(cfg, storage, downstream, done, set(leaves))]
    return out


def _plan_downstream(cfg: DataConfig, storage: Storage, fuse: tuple[str, ...], newest_secs: int) -> dict | None:
    """Staging areas and parameters of the fused stages, or None.

    The samples split needs the cutting date before any bucket is done. Unless the config sets
    it, it follows from the newest train-ready interval, which is predicted here from the newest
    clean row; :func:`_commit_downstream` checks the prediction against the real value.
    """
    from app.data.transforms import interval_start

    if "trainready" not in fuse:
        return None
    plan: dict[str, Any] = {"trainready": {**trainready.new_staging(storage), "filters": cfg.trainready.model_dump(),
                                           "num_buckets": cfg.did_bucket_num}}
    if "samples" in fuse:
        staging, params = samples.plan(cfg, storage)
        newest = int(interval_start(np.array([newest_secs]), cfg.interval_time_in_seconds)[0]) if newest_secs >= 0 else 0
        plan["samples"] = {"staging": staging, "params": params,
                           "cut": samples.cutting_seconds(cfg.samples.cutting_date, newest)}
    return plan


def _commit_downstream(cfg: DataConfig, storage: Storage, plan: dict | None, done: Any, logs_written: set[str]) -> list[str]:
    """Commit the fused stages' staged output where it equals what the stage run alone would make
    now; drop it otherwise. Returns the stages committed.

    Train-ready alone reads every ``tables/logs`` partition of the selected days (buckets below
    ``did_bucket_num``): the fused rows are those only if every such partition was written by
    this run (a day of an older run that the new input lacks would be missing). Samples alone
    reads every train-ready partition and derives the cut from them: the fused shards hold if the
    train-ready table is exactly the partitions just written and the predicted cut was right.
    """
    from app.data.unify import selected_days

    if plan is None:
        return []
    tr, sm = plan["trainready"], plan.get("samples")
    days, n = selected_days(cfg), cfg.did_bucket_num

    def read_alone(leaf: str) -> bool:
        day, bucket = (kv.split("=", 1)[1] for kv in leaf.split("/"))
        return (days is None or day in days) and int(bucket) < n

    stale = [leaf for leaf in storage.list_partitions(C.T_LOGS) if read_alone(leaf) and leaf not in logs_written]
    if stale:
        for path in (tr["final"], tr["qstaging"], sm and sm["staging"]):
            if path:
                storage.delete(path)
        return []
    report = StageReport("trainready")
    report.seconds = float(done["trainready_seconds"].sum())
    report.extra["written_by"] = "clean"
    tr_written = set(storage.list_partitions(tr["final"]))
    trainready.commit(storage, tr, {k: int(done[f"trainready_{k}"].sum()) for k in trainready.COUNTERS}, report)
    if not sm:
        return ["trainready"]
    newest = max(int(done["trainready_max_interval"].max()), 0)
    cut = samples.cutting_seconds(cfg.samples.cutting_date, newest)
    if set(storage.list_partitions(C.T_TRAINREADY)) != tr_written or cut != sm["cut"]:
        storage.delete(sm["staging"])
        return ["trainready"]
    report = StageReport("samples")
    report.seconds = float(done["samples_seconds"].sum())
    report.extra["written_by"] = "clean"
    samples.commit(cfg, storage, sm["staging"], cut, {k: int(done[f"samples_{k}"].sum()) for k in samples.COUNTERS},
                   report)
    return ["trainready", "samples"]
