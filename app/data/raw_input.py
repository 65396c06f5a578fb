"""Raw input tables as users have them: Parquet or CSV, one file or a directory, anywhere pyarrow reads.

Each table of ``DataConfig.raw`` is resolved first (:func:`resolve`): its filesystem (a path
relative to the storage root, an absolute local path, or a URI such as ``s3://...``), its data
files (names starting with ``_`` or ``.`` skipped, as pyarrow does) and their format (from the
file names unless the config sets it). Then:

- **Parquet** is read where it is: the two logs by row group (:func:`log_inputs`), the small tables
  whole (:func:`read_input`). Every file must have the table's columns.
- **CSV logs** are converted once, streaming, into Parquet under the root's hidden
  ``_raw_csv/<table>-<fingerprint>/`` (one Ray Data task per CSV file). The fingerprint covers the
  files' paths, sizes and modification times, so a changed input is converted again and an
  unchanged one is reused by every later stage and run. The stages then read the converted row
  groups on the same path as Parquet input (dictionary-coded columns, one task per row group),
  so what CSV adds is the conversion (BENCHMARKS.md). **Small CSV tables** are read whole.
- **CSV rules**: a header row is required (extra columns are ignored); every column is read as a
  string; an empty field, quoted or not, is a missing value; a line whose number of fields differs
  from the header's is a ``malformed_line``. Its fields are kept under the header's column names
  (fields beyond the header joined onto the last column with the delimiter, missing ones null)
  and it goes to the stage's quarantine like any other rejected row (logs, persona); in the keyword
  and slot tables, the whitelists every log row is checked against, it is an error naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app import constants as C
from app.data.config import RawTable, RawTables
from app.data.io import PARQUET_OPTIONS, map_tasks, quarantine_schema
from app.errors import SchemaError
from app.storage import Storage

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
#: compressed CSV: the extensions pyarrow's ``compression="detect"`` recognises
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
#: quarantine reason of a CSV line with the wrong number of fields
MALFORMED = "malformed_line"
#: root-relative folder of converted CSV inputs (hidden: never read as a table)
CSV_CACHE = "_raw_csv"
#: rows per row group of a converted CSV file: about two clean tasks' worth (``MIN_TASK_ROWS``)
CSV_ROW_GROUP_ROWS = 1 << 19
#: bytes the CSV reader parses at a time (1 MiB streamed fastest here: 2.6M rows/s)
CSV_BLOCK_BYTES = 1 << 20
#: part of every conversion's fingerprint: bump it when the converted files change
CSV_CACHE_VERSION = 1
_MANIFEST = "_manifest.json"


def file_format(name: str) -> str | None:
    """``parquet``, ``csv`` or None (unknown) from a file name: ``.parquet``/``.pq``, ``.csv`` with
    an optional compression suffix (``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, ``.csv.lz4``)."""
    low = name.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    for suffix in COMPRESSION_SUFFIXES:
        if low.endswith(suffix):
            low = low[: -len(suffix)]
            break
    return "csv" if low.endswith(CSV_SUFFIXES) else None


@dataclass(frozen=True)
class RawSource:
    """One raw table, resolved: where its files are and how to read them."""

    table: str
    where: str  # the path as configured (for messages)
    fs: pafs.FileSystem
    files: tuple[str, ...]  # paths on ``fs``, sorted
    format: str  # parquet | csv
    delimiter: str = ","
    scheme: str = ""  # URI scheme of ``fs`` for paths handed to tasks ("" = local)
    #: (path, size, modification time in ns) per file: the CSV conversion's fingerprint
    stamps: tuple[tuple[str, int, int], ...] = field(default=())

    def uri(self, path: str) -> str:
        return f"{self.scheme}://{path}" if self.scheme else path


def _locate(storage: Storage, table: str, path: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path on it, URI scheme) of a configured path."""
    if "://" in path:
        try:
            fs, where = pafs.FileSystem.from_uri(path)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise SchemaError(f"input table {table!r}: cannot open {path!r} ({exc})") from exc
        scheme = "" if isinstance(fs, pafs.LocalFileSystem) else path.split("://", 1)[0]
        return fs, where, scheme
    if os.path.isabs(path):
        return pafs.LocalFileSystem(), path, ""
    return storage.fs, storage.path(path), storage._scheme


def _listing(fs: pafs.FileSystem, top: str) -> list[pafs.FileInfo]:
    """The files under a directory, recursively, skipping hidden names (``_``/``.``), sorted."""
    out = []
    for info in fs.get_file_info(pafs.FileSelector(top, recursive=True)):
        rel = posixpath.relpath(info.path, top)
        if info.type == pafs.FileType.File and not any(seg.startswith(("_", ".")) for seg in rel.split("/")):
            out.append(info)
    return sorted(out, key=lambda i: i.path)


def _choose(table: str, where: str, infos: list[pafs.FileInfo], fmt: str) -> tuple[list[pafs.FileInfo], str]:
    """The files of a directory that make up the table, and their format.

    ``auto``: the Parquet files or the CSV files (by name); both kinds, or neither, is an error.
    A set format: the files named for it, or every file if none is (``part-00000`` exports).
    """
    kinds = [file_format(posixpath.basename(i.path)) for i in infos]
    if fmt != "auto":
        named = [i for i, k in zip(infos, kinds, strict=True) if k == fmt]
        return named or infos, fmt
    found = sorted({k for k in kinds if k})
    if len(found) > 1:
        raise SchemaError(f"input table {table!r}: {where!r} holds both Parquet and CSV files; "
                          f"set raw.{table}.format to the one to read")
    if not found:
        names = [posixpath.basename(i.path) for i in infos[:3]]
        raise SchemaError(f"input table {table!r}: no Parquet or CSV files under {where!r} (found {names}...); "
                          f"name them *.parquet/*.csv or set raw.{table}.format")
    return [i for i, k in zip(infos, kinds, strict=True) if k == found[0]], found[0]


def resolve(storage: Storage, table: str, spec: RawTable) -> RawSource:
    """Where raw table ``table`` is and in which format; a SchemaError names what is wrong."""
    fs, top, scheme = _locate(storage, table, spec.path)
    info = fs.get_file_info(top)
    if info.type == pafs.FileType.NotFound:
        raise SchemaError(f"input table {table!r} not found: nothing at {spec.path!r}")
    if info.type == pafs.FileType.File:
        fmt = spec.format if spec.format != "auto" else file_format(posixpath.basename(top))
        if fmt is None:
            raise SchemaError(f"input table {table!r}: cannot tell the format of {spec.path!r} from its name; "
                              f"set raw.{table}.format to parquet or csv")
        infos = [info]
    else:
        infos = _listing(fs, top)
        if not infos:
            raise SchemaError(f"input table {table!r} not found: no files under {spec.path!r}")
        infos, fmt = _choose(table, spec.path, infos, spec.format)
    stamps = tuple((i.path, int(i.size or 0), int(i.mtime_ns or 0)) for i in infos)
    return RawSource(table, spec.path, fs, tuple(i.path for i in infos), fmt, spec.delimiter, scheme, stamps)


# ---------------------------------------------------------------------------------------- Parquet
def _parquet_file(source: RawSource, path: str, columns: list[str]) -> pq.ParquetFile:
    """An input Parquet file, checked to have ``columns``."""
    try:
        pf = pq.ParquetFile(path, filesystem=source.fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"input table {source.table!r}: {path!r} is not a readable Parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"input table {source.table!r}: {path!r} lacks column(s) {missing} (has {names})")
    return pf


def parquet_units(source: RawSource, columns: list[str], paths: list[str] | None = None) -> list[dict[str, Any]]:
    """One work item per Parquet row group (``file`` as a URI tasks can open, ``row_group``,
    ``rows``), so big input files still spread over many tasks. Every file is schema-checked."""
    units = []
    for path in source.files if paths is None else paths:
        meta = _parquet_file(source, path, columns).metadata
        units += [{"file": source.uri(path), "row_group": rg, "rows": meta.row_group(rg).num_rows}
                  for rg in range(meta.num_row_groups)]
    return units


def _strings(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.select(columns).cast(pa.schema([(c, pa.string()) for c in columns]))


# ---------------------------------------------------------------------------------------- CSV
def _convert_options(columns: list[str]) -> pacsv.ConvertOptions:
    """Only ``columns``, all strings; an empty field (quoted or not) is null, nothing else is."""
    return pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=columns,
                                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True)


def _csv_error(source: RawSource, path: str, exc: Exception) -> SchemaError:
    return SchemaError(f"input table {source.table!r}: {path!r} is not a readable CSV file ({exc})")


def csv_header(source: RawSource, path: str, columns: list[str]) -> list[str]:
    """The column names of a CSV file's header row, checked to include ``columns``."""
    try:
        with source.fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=source.delimiter, newlines_in_values=True,
                                                 invalid_row_handler=lambda _row: "skip"),
                convert_options=pacsv.ConvertOptions(column_types={}, null_values=[""], strings_can_be_null=True))
            names = reader.schema.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(source, path, exc) from exc
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"input table {source.table!r}: {path!r} lacks column(s) {missing} "
                          f"(its header row has {names})")
    return names


def csv_batches(source: RawSource, path: str, columns: list[str], invalid: list) -> Iterator[pa.RecordBatch]:
    """The rows of a CSV file (``columns`` as strings), streamed; lines with the wrong number of
    fields are appended to ``invalid`` (pyarrow ``InvalidRow``) instead."""

    def keep(row: Any) -> str:
        invalid.append(row)
        return "skip"

    try:
        with source.fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(
                stream, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=source.delimiter, newlines_in_values=True,
                                                 invalid_row_handler=keep),
                convert_options=_convert_options(columns))
            yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(source, path, exc) from exc


def malformed_rows(invalid: list, header: list[str], columns: list[str], delimiter: str) -> pa.Table:
    """Quarantine rows (``columns`` + reason ``malformed_line``) of lines with the wrong number of
    fields: each line's fields under the header's names, positionally; fields beyond the header
    joined onto its last column with the delimiter; missing fields null.

    The lines are split by pyarrow's own CSV parser (same quoting rules), one parse per field count.
    """
    schema = quarantine_schema(columns)
    if not invalid:
        return schema.empty_table()
    by_width: dict[int, list[str]] = {}
    for row in invalid:
        by_width.setdefault(int(row.actual_columns), []).append(row.text)
    parts, n = [], len(header)
    for width, texts in sorted(by_width.items()):
        names = [f"f{i}" for i in range(width)]
        fields = pacsv.read_csv(
            io.BytesIO("\n".join(texts).encode()),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=_convert_options(names))
        rows = len(texts)
        out = {}
        for i, name in enumerate(header):
            if name not in columns:
                continue
            if i == n - 1 and width > n:
                rest = [fields[f] for f in names[i:]]
                out[name] = pc.binary_join_element_wise(*rest, delimiter, null_handling="replace",
                                                        null_replacement="")
            else:
                out[name] = fields[names[i]] if i < width else pa.nulls(rows, pa.string())
        out[C.REASON] = pa.array([MALFORMED] * rows, pa.string())
        parts.append(pa.table(out).select(schema.names))
    return pa.concat_tables(parts).cast(schema)


def read_csv_file(source: RawSource, path: str, columns: list[str]) -> tuple[pa.Table, pa.Table]:
    """(rows, malformed rows) of one CSV file, read whole."""
    header = csv_header(source, path, columns)
    invalid: list = []
    rows = pa.Table.from_batches(list(csv_batches(source, path, columns, invalid)),
                                 schema=pa.schema([(c, pa.string()) for c in columns]))
    return rows, malformed_rows(invalid, header, columns, source.delimiter)


# ---------------------------------------------------------------------------------------- small tables
def read_input_rows(storage: Storage, table: str, spec: RawTable, columns: list[str],
                    strict: bool = False) -> tuple[pa.Table, pa.Table]:
    """A small raw input (persona, keyword, slot) read whole, every column a string, and its
    malformed CSV lines as quarantine rows (:func:`malformed_rows`; none for Parquet).
    ``strict``: a malformed line is a SchemaError naming the file instead."""
    source = resolve(storage, table, spec)
    bad = [quarantine_schema(columns).empty_table()]
    if source.format == "parquet":
        parts = [_strings(_parquet_file(source, f, columns).read(columns=columns), columns) for f in source.files]
    else:
        parts = []
        for f in source.files:
            rows, malformed = read_csv_file(source, f, columns)
            if strict and malformed.num_rows:
                example = malformed.slice(0, 1).drop_columns([C.REASON]).to_pylist()[0]
                raise SchemaError(f"input table {table!r}: {f!r} has {malformed.num_rows} line(s) with the wrong "
                                  f"number of fields, e.g. {example}")
            parts.append(rows)
            bad.append(malformed)
    return pa.concat_tables(parts), pa.concat_tables(bad)


def read_input(storage: Storage, table: str, spec: RawTable, columns: list[str]) -> pa.Table:
    """A small raw input read whole, strictly: the keyword and slot tables are whitelists, and a
    guessed line there would change which log rows pass."""
    return read_input_rows(storage, table, spec, columns, strict=True)[0]


# ---------------------------------------------------------------------------------------- logs
@dataclass
class LogInput:
    """A raw log table ready for the row-group tasks."""

    units: list[dict[str, Any]]  # one per Parquet row group: file (URI), row_group, rows
    files: int  # input files as configured
    format: str
    malformed: int = 0  # CSV lines with the wrong number of fields
    malformed_files: list[str] = field(default_factory=list)  # their quarantine rows (storage paths)
    conversion_seconds: float = 0.0  # CSV converted by this call (0 when reused)


def convert_csv_file(source: RawSource, path: str, columns: list[str], plain: list[str],
                     dest_fs: pafs.FileSystem, dest: str, bad_dest: str) -> tuple[int, int]:
    """Stream one CSV file into a Parquet file of ``CSV_ROW_GROUP_ROWS``-row groups, written as the
    pipeline's raw Parquet is read fastest: string columns dictionary-encoded except ``plain``
    (unique timestamps), no Arrow schema stored. Malformed lines go to ``bad_dest`` (quarantine
    rows) when there are any. Returns (rows, malformed lines)."""
    header = csv_header(source, path, columns)
    invalid: list = []
    schema = pa.schema([(c, pa.string()) for c in columns])
    rows = 0
    with pq.ParquetWriter(dest, schema, filesystem=dest_fs, store_schema=False,
                          use_dictionary=[c for c in columns if c not in plain], **PARQUET_OPTIONS) as writer:
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in csv_batches(source, path, columns, invalid):
            pending.append(batch)
            held += batch.num_rows
            if held >= CSV_ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=held)
                rows, pending, held = rows + held, [], 0
        if held:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=held)
            rows += held
    if invalid:
        pq.write_table(malformed_rows(invalid, header, columns, source.delimiter), bad_dest, filesystem=dest_fs)
    return rows, len(invalid)


def _source_of(item: dict[str, Any]) -> tuple[RawSource, str]:
    """The source and path of a conversion work item (the filesystem rebuilt from the URI)."""
    uri = item["src"]
    fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
    return RawSource(item["table"], item["where"], fs, (path,), "csv", item["delimiter"]), path


def convert_task(batch: dict, root: str) -> dict:
    """Ray Data task: convert CSV files (one work item each) into their staging folders."""
    storage = Storage(root)
    out: dict[str, list] = {"table": [], "index": [], "rows": [], "malformed": []}
    items = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    for item in items:
        source, path = _source_of(item)
        columns, plain = list(item["columns"]), list(item["plain"])
        rows, bad = convert_csv_file(source, path, columns, plain, storage.fs,
                                     storage.path(item["staging"], item["name"]),
                                     storage.path(item["staging"], item["bad_name"]))
        for k, v in (("table", item["table"]), ("index", item["index"]), ("rows", rows), ("malformed", bad)):
            out[k].append(v)
    return {k: np.array(v) for k, v in out.items()}


def _fingerprint(source: RawSource, columns: list[str], plain: list[str]) -> str:
    key = {"version": CSV_CACHE_VERSION, "rows": CSV_ROW_GROUP_ROWS, "files": source.stamps,
           "scheme": source.scheme, "columns": columns, "plain": plain, "delimiter": source.delimiter}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _convert(storage: Storage, todo: dict[str, tuple[RawSource, list[str], list[str], str]]) -> None:
    """Convert the CSV files of every table in ``todo`` (table -> source, columns, plain columns,
    cache folder) in one Ray Data job, then commit each table's folder with its manifest."""
    for source, columns, _plain, _dest in todo.values():
        for f in source.files:
            csv_header(source, f, columns)  # a missing column fails here, named, before any task runs
    items, staging = [], {}
    for table, (source, columns, plain, _dest) in todo.items():
        staging[table] = storage.new_staging(f"csv-{table}")
        items += [{"table": table, "where": source.where, "src": source.uri(f), "delimiter": source.delimiter,
                   "columns": columns, "plain": plain, "staging": staging[table], "index": i,
                   "name": f"part-{i:05d}.parquet", "bad_name": f"_malformed-{i:05d}.parquet"}
                  for i, f in enumerate(source.files)]
    stats = map_tasks(items, convert_task, {"root": storage.root})
    for table, (source, _columns, _plain, dest) in todo.items():
        mine = stats[stats["table"] == table].sort_values("index")
        files = [{"source": source.files[int(i)], "parquet": f"part-{int(i):05d}.parquet", "rows": int(r),
                  "malformed": int(b), "malformed_parquet": f"_malformed-{int(i):05d}.parquet" if b else None}
                 for i, r, b in zip(mine["index"], mine["rows"], mine["malformed"], strict=True)]
        storage.write_json(f"{staging[table]}/{_MANIFEST}", {"table": table, "source": source.where, "files": files})
        storage.commit_replace(staging[table], dest)
        for name in storage.iter_dirs(CSV_CACHE):  # older conversions of this table
            if name.startswith(f"{table}-") and f"{CSV_CACHE}/{name}" != dest:
                storage.delete(CSV_CACHE, name)


def log_inputs(storage: Storage, raw: RawTables, logs: dict[str, tuple[list[str], str]]) -> dict[str, LogInput]:
    """The raw log tables ``logs`` (table -> (columns, timestamp column)) as row-group work items.

    Parquet inputs are used as they are. CSV inputs are converted first, all in one Ray Data job,
    unless an up-to-date conversion is in the root's ``_raw_csv/`` already (module docstring).
    """
    sources = {t: resolve(storage, t, getattr(raw, t)) for t in logs}
    todo = {}
    for table, source in sources.items():
        columns, time_col = logs[table]
        if source.format == "csv":
            dest = f"{CSV_CACHE}/{table}-{_fingerprint(source, columns, [time_col])}"
            if not storage.exists(dest, _MANIFEST):
                todo[table] = (source, columns, [time_col], dest)
    started = time.perf_counter()
    if todo:
        _convert(storage, todo)
    seconds = time.perf_counter() - started
    out = {}
    for table, source in sources.items():
        columns, time_col = logs[table]
        if source.format == "parquet":
            out[table] = LogInput(parquet_units(source, columns), len(source.files), "parquet")
            continue
        dest = f"{CSV_CACHE}/{table}-{_fingerprint(source, columns, [time_col])}"
        manifest = storage.read_json(f"{dest}/{_MANIFEST}")
        converted = RawSource(table, source.where, storage.fs, (), "parquet", scheme=storage._scheme)
        units = parquet_units(converted, columns, [storage.path(dest, f["parquet"]) for f in manifest["files"]])
        out[table] = LogInput(
            units, len(source.files), "csv",
            malformed=sum(f["malformed"] for f in manifest["files"]),
            malformed_files=[storage.path(dest, f["malformed_parquet"]) for f in manifest["files"]
                             if f["malformed_parquet"]],
            conversion_seconds=round(seconds, 3) if table in todo else 0.0,
        )
    return out
