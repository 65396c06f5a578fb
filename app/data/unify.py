"""Stage 4, log unification: ``is_click``, ``action_time_seconds``, ``interval_starting_time``.

Output ``tables/logs/day=D/did_bucket=B``: a (day, bucket)'s cleaned show rows labelled 0, then its
click rows labelled 1. ``interval_starting_time = t - t mod interval_time_in_seconds`` (the spec's
example: interval 5 over 100..109 gives 100 x5 then 105 x5).

In a pipeline run the clean stage writes this table itself, in the same per-bucket pass that
writes the cleaned logs (it holds exactly these rows with their parsed seconds; see
:mod:`app.data.clean_logs`), and :func:`app.data.pipeline.run_pipeline` reports that instead of
redoing the work. Run alone (``python -m app data unify``), this stage rebuilds the table from
``tables/showlog`` and ``tables/clicklog``: one Ray Data task per did_bucket, same rows, same
order, same :func:`unify_view`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app import constants as C
from app.data.config import DataConfig
from app.data.io import StageReport, map_tasks, write_parquet
from app.data.transforms import interval_start, parse_time_fields
from app.storage import Storage

LOG_COLUMNS = [
    C.DID, C.IS_CLICK, C.ACTION_TIME, C.KEYWORD, C.KEYWORD_INDEX, C.MEDIA, C.MEDIA_CATEGORY,
    C.NET_TYPE, C.GENDER, C.AGE, C.ADV_ID, C.INTERVAL_STARTING_TIME, C.ACTION_TIME_SECONDS,
]
#: cleaned-log columns the unified table takes over
SOURCE_COLUMNS = [c for c in LOG_COLUMNS if c not in (C.IS_CLICK, C.INTERVAL_STARTING_TIME, C.ACTION_TIME_SECONDS)]


def unify_view(rows: pa.Table, secs: np.ndarray, interval: int, is_click: int | None = None) -> pa.Table:
    """The unified-log columns of cleaned rows whose timestamps parse to ``secs``. ``rows`` has an
    ``is_click`` column unless ``is_click`` labels all of them."""
    label = rows[C.IS_CLICK] if is_click is None else pa.array(np.full(rows.num_rows, is_click, np.int32))
    secs = np.asarray(secs, dtype=np.int64)
    cols = {c: rows[c] for c in SOURCE_COLUMNS}
    cols[C.IS_CLICK] = label
    cols[C.INTERVAL_STARTING_TIME] = pa.array(interval_start(secs, interval))
    cols[C.ACTION_TIME_SECONDS] = pa.array(secs)
    return pa.table({c: cols[c] for c in LOG_COLUMNS})


def unify_tables(show: pa.Table, click: pa.Table, interval: int) -> pa.Table:
    """Pure: union of labelled show and click rows with the time columns (no partition columns)."""
    parts = []
    for table, is_click in ((show, 0), (click, 1)):
        if table.num_rows == 0:
            continue
        secs, _ok, _key = parse_time_fields(table[C.ACTION_TIME])  # cleaned rows: all valid
        parts.append(unify_view(table, secs, interval, is_click))
    if not parts:
        return pa.table({c: [] for c in LOG_COLUMNS})
    return pa.concat_tables(parts, promote_options="permissive").unify_dictionaries().combine_chunks()


def _read_part(storage: Storage, table: str, part: str) -> pa.Table:
    files = storage.list_files(table, part, suffix=".parquet")
    if not files:
        return pa.table({})
    dictionary = [c for c in SOURCE_COLUMNS if c not in (C.ACTION_TIME, C.KEYWORD_INDEX, C.GENDER, C.AGE)]
    return pq.read_table(files, columns=SOURCE_COLUMNS, filesystem=storage.fs, partitioning=None,
                         read_dictionary=dictionary)


def unify_bucket(batch: dict, root: str, final: str, interval: int, days: list[str] | None) -> dict:
    storage = Storage(root)
    rows_in = rows_out = 0
    for bucket in batch["bucket"]:
        all_days = sorted(set(storage.iter_dirs(C.T_SHOWLOG)) | set(storage.iter_dirs(C.T_CLICKLOG)))
        for day in all_days:
            if days is not None and day.split("=", 1)[1] not in days:
                continue
            part = f"{day}/{C.DID_BUCKET}={bucket}"
            show, click = _read_part(storage, C.T_SHOWLOG, part), _read_part(storage, C.T_CLICKLOG, part)
            if show.num_rows + click.num_rows == 0:
                continue
            logs = unify_tables(show, click, interval)
            storage.makedirs(final, part)
            write_parquet(logs, storage.path(final, part, "part-0.parquet"), storage.fs)
            rows_in += show.num_rows + click.num_rows
            rows_out += logs.num_rows
    return {"rows_in": np.array([rows_in]), "rows_out": np.array([rows_out])}


def selected_days(cfg: DataConfig) -> list[str] | None:
    if not cfg.start_day and not cfg.end_day:
        return None
    lo = np.datetime64(cfg.start_day or "1970-01-01", "D")
    hi = np.datetime64(cfg.end_day or "2100-01-01", "D")
    return [str(d) for d in np.arange(lo, hi + 1)]


def run(cfg: DataConfig, storage: Storage) -> dict:

    report = StageReport("unify")
    final = storage.new_staging("logs")
    stats = map_tasks([{"bucket": b} for b in range(cfg.did_bucket_num)], unify_bucket,
                      {"root": storage.root, "final": final, "interval": cfg.interval_time_in_seconds,
                       "days": selected_days(cfg)})
    leaves = storage.commit_partitions(final, C.T_LOGS)
    report.rows_in = int(stats["rows_in"].sum())
    report.rows_out = int(stats["rows_out"].sum())
    report.extra = {"partitions": len(leaves)}
    return report.finish(storage)
