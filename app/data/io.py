"""Reading raw inputs with clear errors, and the per-stage report."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app import constants as C
from app.errors import SchemaError
from app.storage import Storage


def input_files(storage: Storage, table: str, path: str, columns: list[str]) -> list[str]:
    """Parquet files of a raw input (root-relative path or URI), schema-checked.

    Raises SchemaError naming the table (and column) when the input is missing or malformed.
    """
    if "://" in path:
        other = Storage(path)
        files = other.list_files("", suffix=".parquet")
        fs = other.fs
        uri = lambda f: f"{path.split('://', 1)[0]}://{f}"  # noqa: E731
    else:
        files = storage.list_files(path, suffix=".parquet")
        fs = storage.fs
        uri = storage._scheme and (lambda f: f"{storage._scheme}://{f}") or (lambda f: f)
    if not files:
        raise SchemaError(f"input table {table!r} not found: no Parquet files under {path!r}")
    try:
        schema = pq.read_schema(files[0], filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"input table {table!r}: {files[0]!r} is not a readable Parquet file ({exc})") from exc
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise SchemaError(f"input table {table!r} lacks column(s) {missing} (has {schema.names})")
    return [uri(f) for f in files]


def read_input(storage: Storage, table: str, path: str, columns: list[str]) -> pa.Table:
    """A small raw input (persona, keyword, slot tables) read whole, all columns cast to string."""
    files = input_files(storage, table, path, columns)
    fs = None if "://" in files[0] else pafs.LocalFileSystem()
    parts = [pq.read_table(f, columns=columns, filesystem=fs) for f in files]
    out = pa.concat_tables([p.cast(pa.schema([(c, pa.string()) for c in columns])) for p in parts])
    return out


def row_group_units(files: list[str], fs: pafs.FileSystem | None = None) -> list[dict[str, Any]]:
    """One work item per Parquet row group, so big input files still spread over many tasks."""
    units = []
    for f in files:
        meta = pq.ParquetFile(f, filesystem=fs).metadata if fs else pq.ParquetFile(f).metadata
        units += [{"file": f, "row_group": rg} for rg in range(meta.num_row_groups)]
    return units


def read_unit(unit_file: str, row_group: int, columns: list[str]) -> pa.Table:
    """Read one row group of a (local path or URI) Parquet file, columns cast to string."""
    if "://" in unit_file:
        fs, path = pafs.FileSystem.from_uri(unit_file)
        pf = pq.ParquetFile(path, filesystem=fs)
    else:
        pf = pq.ParquetFile(unit_file)
    table = pf.read_row_group(int(row_group), columns=columns)
    return table.cast(pa.schema([(c, pa.string()) for c in columns]))


class StageReport:
    """Rows in / out / quarantined by reason and wall time of one stage, written to reports/."""

    def __init__(self, stage: str):
        self.stage = stage
        self.started = time.perf_counter()
        self.rows_in = 0
        self.rows_out = 0
        self.quarantined: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}

    def add_quarantine(self, counts: dict[str, int]) -> None:
        self.quarantined.update({k: int(v) for k, v in counts.items() if v})

    def finish(self, storage: Storage) -> dict[str, Any]:
        out = {
            "stage": self.stage,
            "rows_in": int(self.rows_in),
            "rows_out": int(self.rows_out),
            "quarantined": dict(sorted(self.quarantined.items())),
            "quarantined_total": int(sum(self.quarantined.values())),
            "seconds": round(time.perf_counter() - self.started, 3),
            **self.extra,
        }
        storage.write_json(f"{C.REPORTS}/{self.stage}.json", out)
        return out
