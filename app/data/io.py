"""Reading Parquet row groups, running a stage's tasks, writing pipeline tables, and the per-stage report.

Where the raw inputs are and how they are read (Parquet or CSV): :mod:`app.data.raw_input`.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app import constants as C
from app.data.transforms import as_dictionary
from app.storage import Storage


def pack_units(units: list[dict[str, Any]], min_rows: int) -> list[dict[str, Any]]:
    """Consecutive work items merged until each holds at least ``min_rows`` rows (``file`` and
    ``row_group`` become lists). Ray Data spends about 0.1-0.2 s scheduling each task here, so
    small row groups are worth handing over together."""
    packed: list[dict[str, Any]] = []
    for unit in units:
        last = packed[-1] if packed else None
        same = last is not None and all(last[k] == unit[k] for k in unit if k not in ("file", "row_group", "rows"))
        if same and last["rows"] < min_rows:
            last["file"].append(unit["file"])
            last["row_group"].append(unit["row_group"])
            last["rows"] += unit["rows"]
        else:
            packed.append({**unit, "file": [unit["file"]], "row_group": [unit["row_group"]]})
    return packed


def read_unit(unit_file: str, row_group: int, columns: list[str], dictionary: tuple[str, ...] = ()) -> pa.Table:
    """Read one row group of a (local path or URI) Parquet file, columns cast to string.

    Columns named in ``dictionary`` come back as dictionary<int32, string>: Parquet stores
    low-cardinality columns dictionary-encoded, and keeping the codes makes the read about 3x
    cheaper and every lookup, hash and write after it work on the few distinct values.
    """
    if "://" in unit_file:
        fs, path = pafs.FileSystem.from_uri(unit_file)
        pf = pq.ParquetFile(path, filesystem=fs, read_dictionary=list(dictionary))
    else:
        pf = pq.ParquetFile(unit_file, read_dictionary=list(dictionary))
    table = pf.read_row_group(int(row_group), columns=columns)
    out = {}
    for c in columns:
        col = table[c]
        if c in dictionary:
            out[c] = as_dictionary(col)
        elif col.type != pa.string():
            out[c] = col.cast(pa.string())
        else:
            out[c] = col
    return pa.table(out)


#: glibc malloc settings of a data task's worker process (:func:`keep_heap`): arrays up to 256 MB
#: from the heap, and up to 1 GB of freed heap kept for the next array
HEAP_MMAP_THRESHOLD = 256 << 20
HEAP_TRIM_THRESHOLD = 1 << 30
_HEAP_SET = False


def keep_heap() -> None:
    """Let this process's numpy arrays reuse freed memory instead of fresh pages (once per process).

    glibc hands every allocation above 32 MB (less before it adapts) to ``mmap`` and unmaps it on
    free, so each big temporary array of a task is page-faulted in and zeroed by the kernel again:
    about a fifth of a data task's CPU time was kernel time, most of it zeroing pages. With these
    thresholds the arrays come from the heap and freed memory stays there (up to 1 GB above the
    live data) for the next one; a 10M-row pipeline run's kernel time fell by a quarter
    (BENCHMARKS.md). Only data-stage tasks call it. No-op where the C library is not glibc.
    """
    global _HEAP_SET
    if _HEAP_SET:
        return
    _HEAP_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, HEAP_MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, HEAP_TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _on_kept_heap(fn: Any) -> Any:
    """``fn`` run after :func:`keep_heap` (what :func:`map_tasks` hands Ray Data)."""
    import functools

    @functools.wraps(fn)
    def task(batch: dict, **kwargs: Any) -> Any:
        keep_heap()
        return fn(batch, **kwargs)

    return task


def map_tasks(items: list[dict[str, Any]], fn: Any, fn_kwargs: dict[str, Any]) -> Any:
    """Run ``fn`` once per work item as Ray Data tasks; their returned stats as one pandas frame.

    Every data stage is this shape: small work items (row groups, did_buckets), one task each,
    tasks that read and write storage themselves and return a few counters. Ray Data's default
    resource reservation is switched off for these jobs: with it on, a 2-CPU node ran one task at
    a time for the first second of every job and left the second CPU idle between tasks after
    that (8 tasks of 0.5 s took 3.2 s instead of 2.2 s; BENCHMARKS.md). Reservation exists to
    keep a multi-operator pipeline's stages from starving each other; these jobs have one.
    """
    import pandas as pd
    import ray

    from app.console import get_console

    ctx = ray.data.DataContext.get_current()
    saved = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        out = ds.map_batches(_on_kept_heap(fn), batch_size=1, fn_kwargs=fn_kwargs)
        frames = []
        with get_console().progress(getattr(fn, "__name__", "tasks"), total=len(items), unit="task") as bar:
            for frame in out.iter_batches(batch_size=None, batch_format="pandas"):
                frames.append(frame)
                bar.update(1)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    finally:
        ctx.op_resource_reservation_enabled = saved


#: Parquet settings of the tables the pipeline writes. Every reader of these tables is this
#: pipeline on the same storage, so write speed wins: no compression (lz4/snappy cost about 40%
#: more CPU per write for half the size; the bulk is the unique timestamp strings), no column
#: statistics (partition directories already prune by day and bucket), dictionary encoding on
#: (for input that is already dictionary-encoded: the writer takes the codes as they are).
PARQUET_OPTIONS: dict[str, Any] = {"compression": "none", "write_statistics": False}


def compact_dictionaries(table: pa.Table, min_size: int = 1024) -> pa.Table:
    """Drop unused entries of large dictionaries (a day's slice of a bucket uses a part of the
    bucket's did dictionary, and Parquet writes the whole dictionary with every file)."""
    cols = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_dictionary(col.type) and col.num_chunks == 1 and len(col.chunk(0).dictionary) >= min_size:
            arr = col.chunk(0)
            idx = arr.indices.to_numpy(zero_copy_only=False) if not arr.null_count else pc.fill_null(
                arr.indices, 0).to_numpy()
            used = np.bincount(idx, minlength=len(arr.dictionary)) > 0
            if not used.all():
                remap = (np.cumsum(used) - 1).astype(np.int32)
                mask = arr.indices.is_null() if arr.null_count else None
                col = pa.DictionaryArray.from_arrays(
                    pa.array(remap[idx], pa.int32(), mask=mask.to_numpy(zero_copy_only=False) if mask else None),
                    arr.dictionary.filter(pa.array(used)),
                )
        cols[name] = col
    return pa.table(cols)


def write_parquet(table: pa.Table | list[pa.Table], path: str, fs: pafs.FileSystem, flat: bool = True) -> None:
    """Write one Parquet file with :data:`PARQUET_OPTIONS`, one row group per table given.

    Dictionary columns are written as they are (their large dictionaries compacted first); other
    columns plain (a dictionary attempt on unique timestamps is wasted work). ``flat`` tables do
    not store the Arrow schema, so dictionary columns read back as plain strings (the tables'
    contract).
    """
    tables = [compact_dictionaries(t) for t in (table if isinstance(table, list) else [table]) if t.num_rows]
    if not tables:
        tables = [table if not isinstance(table, list) else table[0]]
    schema = tables[0].schema
    use_dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    with pq.ParquetWriter(path, schema, filesystem=fs, store_schema=not flat, use_dictionary=use_dictionary,
                          **PARQUET_OPTIONS) as writer:
        for t in tables:
            writer.write_table(t, row_group_size=max(t.num_rows, 1))


def quarantine_schema(columns: list[str]) -> pa.Schema:
    """The one schema of ``tables/quarantine/<stage>`` for a stage that reads raw ``columns``: each
    column as a string, then ``reason``, whatever the row was rejected for (so the table reads back
    as one dataset without nulled columns)."""
    return pa.schema([(c, pa.string()) for c in columns] + [(C.REASON, pa.string())])


class StageReport:
    """Rows in / out / quarantined by reason and wall time of one stage, written to reports/."""

    def __init__(self, stage: str):
        self.stage = stage
        self.started = time.perf_counter()
        self.rows_in = 0
        self.rows_out = 0
        self.quarantined: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        #: set for a stage run fused inside another one: its own task seconds, not wall time
        self.seconds: float | None = None

    def add_quarantine(self, counts: dict[str, int]) -> None:
        self.quarantined.update({k: int(v) for k, v in counts.items() if v})

    def finish(self, storage: Storage) -> dict[str, Any]:
        out = {
            "stage": self.stage,
            "rows_in": int(self.rows_in),
            "rows_out": int(self.rows_out),
            "quarantined": dict(sorted(self.quarantined.items())),
            "quarantined_total": int(sum(self.quarantined.values())),
            "seconds": round(time.perf_counter() - self.started if self.seconds is None else self.seconds, 3),
            **self.extra,
        }
        storage.write_json(f"{C.REPORTS}/{self.stage}.json", out)
        return out
