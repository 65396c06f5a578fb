"""Actions grouping (spec 003, "Actions Grouping Job"): one day of raw JSON action lines ->
grouped-actions Parquet partitions ``<output_path_dir>/client=<c>/day=<YYYY-MM-DD>``.

Input: the files matching ``input_path_pattern`` for the day (``%y``/``%m``/``%d`` replaced,
then glob), one JSON object per line::

    {"client": "myapp", "client_itemid": "http://myapp.com/somepage", "client_userid": "nveof-3242",
     "itemid": 2301, "rectag": "default", "timestamp_utc": "1998-12-02T05:56:13Z", "type": 1,
     "userid": 69878, "value": 2.0}

``client``, ``userid``, ``itemid``, ``type``, ``value`` and ``timestamp_utc`` are required; the
``client_*`` ids and ``rectag`` are optional. Every rejected line goes to
``tables/quarantine/offline_actions/day=D`` with the line itself, its file and the reason
(:data:`REASONS`); nothing is dropped silently.

Work split: plain files are cut into byte ranges of ``bytes_per_task`` (a range owns the lines
that start in it), compressed ones are one task each. A task parses its lines in blocks with
pyarrow's JSON reader (fast, all-or-nothing per block); a block the reader refuses is parsed
again line by line to find and quarantine the culprits. Re-running a day replaces that day's
partitions of every client it finds, atomically (Storage.commit_partitions).

The spec writes the day's folder for the day processed, whatever each action's own timestamp
says; so does this job. Actions whose timestamp falls on another day are kept and counted
(``outside_day``) in the report.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import posixpath
import re
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from app import constants as C
from app.data.io import quarantine_schema
from app.errors import SchemaError
from app.offline import common as O
from app.offline.config import ActionsConfig, parse_day
from app.storage import Storage

QUARANTINE = f"{C.T_QUARANTINE}/offline_actions"
#: lines per block handed to pyarrow's JSON reader
BLOCK_LINES = 2_000
_ROW = re.compile(r"in row (\d+)")
#: quarantined lines are cut to this many characters
MAX_LINE_CHARS = 4096
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CLIENT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
REQUIRED = (O.CLIENT, O.USER, O.ITEM, O.TYPE, O.VALUE, O.TIMESTAMP)
OPTIONAL = (O.CLIENT_USER, O.CLIENT_ITEM, O.RECTAG)
#: every quarantine reason: malformed_json, not_an_object, missing_<field>, bad_<field>
#: (wrong JSON type), bad_timestamp (not YYYY-MM-DDTHH:MM:SSZ), bad_client (not [A-Za-z0-9_.-]+)
REASONS = ("malformed_json", "not_an_object", *(f"missing_{f}" for f in REQUIRED),
           *(f"bad_{f}" for f in REQUIRED if f != O.TIMESTAMP), "bad_timestamp", "bad_client")
QUARANTINE_COLUMNS = ["source", "line"]

#: what pyarrow's reader is asked for; timestamps are parsed after, so a bad one is one row's fault
_JSON_SCHEMA = pa.schema([
    (O.CLIENT, pa.string()), (O.USER, pa.int64()), (O.ITEM, pa.int64()), (O.TYPE, pa.int32()),
    (O.VALUE, pa.float64()), (O.TIMESTAMP, pa.string()),
    (O.CLIENT_USER, pa.string()), (O.CLIENT_ITEM, pa.string()), (O.RECTAG, pa.string()),
])
_INTS = {O.USER: pa.int64(), O.ITEM: pa.int64(), O.TYPE: pa.int32()}


# ------------------------------------------------------------------ finding the input
def expand_pattern(pattern: str, day: dt.date) -> str:
    """``%y`` -> four-digit year, ``%m`` -> month, ``%d`` -> day of month (zero-padded)."""
    return pattern.replace("%y", f"{day.year:04d}").replace("%m", f"{day.month:02d}").replace("%d", f"{day.day:02d}")


def _locate(storage: Storage, path: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path on it, URI scheme) of a root-relative path, absolute path or URI."""
    if "://" in path:
        fs, where = pafs.FileSystem.from_uri(path)
        scheme = "" if isinstance(fs, pafs.LocalFileSystem) else path.split("://", 1)[0]
        return fs, where, scheme
    if path.startswith("/"):
        return pafs.LocalFileSystem(), path, ""
    return storage.fs, storage.path(path), storage._scheme


def glob_files(fs: pafs.FileSystem, pattern: str) -> list[pafs.FileInfo]:
    """Files matching ``pattern`` (``*``/``?``/``[..]`` within one path segment), sorted; hidden
    names (``_``/``.``) skipped."""
    parts = pattern.split("/")
    fixed = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        fixed.append(part)
    top = "/".join(fixed) or "/"
    if len(fixed) == len(parts):  # no wildcard: one file or a directory
        info = fs.get_file_info(top)
        if info.type == pafs.FileType.File:
            return [info]
        pattern, parts = pattern.rstrip("/") + "/**", parts + ["**"]
    if fs.get_file_info(top).type != pafs.FileType.Directory:
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(top, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        segs = info.path.split("/")
        rel = segs[len(fixed):]
        if any(s.startswith(("_", ".")) for s in rel):
            continue
        if parts[-1] == "**":
            ok = len(segs) >= len(parts) - 1 and all(
                fnmatch.fnmatchcase(s, p) for s, p in zip(segs, parts[:-1], strict=False))
        else:
            ok = len(segs) == len(parts) and all(fnmatch.fnmatchcase(s, p) for s, p in zip(segs, parts, strict=True))
        if ok:
            out.append(info)
    return sorted(out, key=lambda i: i.path)


def plan_ranges(files: list[pafs.FileInfo], bytes_per_task: int, scheme: str) -> list[dict[str, Any]]:
    """Work items: ``{"file", "start", "end"}`` byte ranges (``end`` -1 = the whole, compressed, file)."""
    items = []
    for info in files:
        uri = f"{scheme}://{info.path}" if scheme else info.path
        size = int(info.size or 0)
        if info.path.endswith((".gz", ".bz2", ".zst", ".lz4")) or size <= bytes_per_task:
            items.append({"file": uri, "start": 0, "end": -1})
            continue
        items += [{"file": uri, "start": s, "end": min(s + bytes_per_task, size)} for s in range(0, size, bytes_per_task)]
    return items


def read_range(fs: pafs.FileSystem, path: str, start: int, end: int) -> bytes:
    """The lines that start in ``[start, end)`` of a plain file (``end`` -1: the whole file,
    decompressed by its suffix)."""
    if end < 0:
        with fs.open_input_stream(path, compression="detect") as f:
            return f.read()
    with fs.open_input_file(path) as f:
        size = f.size()
        pos = max(start - 1, 0)
        f.seek(pos)
        data = f.read(end - pos)
        if start > 0:
            nl = data.find(b"\n")
            if nl < 0:
                return b""
            data = data[nl + 1:]
        if data and not data.endswith(b"\n") and end < size:
            tail = [data]
            while True:
                more = f.read(1 << 16)
                if not more:
                    break
                nl = more.find(b"\n")
                if nl >= 0:
                    tail.append(more[: nl + 1])
                    break
                tail.append(more)
            data = b"".join(tail)
        return data


# ------------------------------------------------------------------ parsing
def _fast_block(block: bytes) -> tuple[pa.Table | None, int | None]:
    """(the block's rows via pyarrow's JSON reader, None) or, if it refuses a line, (None, the
    0-based row its message names, or None)."""
    try:
        return pajson.read_json(
            pa.py_buffer(block),
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(block) + 1, 1 << 20)),
            parse_options=pajson.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"),
        ), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        found = _ROW.search(str(exc))
        return None, int(found.group(1)) if found else None


def check_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """One line parsed with the JSON rules of the fast path: (row, None) or (None, reason)."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None, "malformed_json"
    if not isinstance(obj, dict):
        return None, "not_an_object"
    for f in REQUIRED:
        if obj.get(f) is None:
            return None, f"missing_{f}"
    for f in (O.CLIENT, O.TIMESTAMP):
        if not isinstance(obj[f], str):
            return None, f"bad_{f}" if f != O.TIMESTAMP else "bad_timestamp"
    for f in _INTS:
        v = obj[f]
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
            return None, f"bad_{f}"
    if not -(2**31) <= obj[O.TYPE] < 2**31:
        return None, f"bad_{O.TYPE}"
    v = obj[O.VALUE]
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None, f"bad_{O.VALUE}"
    row = {f: obj[f] for f in REQUIRED}
    row[O.VALUE] = float(v)
    for f in OPTIONAL:
        x = obj.get(f)
        row[f] = x if x is None or isinstance(x, str) else json.dumps(x)
    return row, None


def _slow_block(lines: list[bytes]) -> tuple[pa.Table, list[int], list[str]]:
    """(rows that parse, indices of the lines that do not, their reasons)."""
    rows, bad, reasons = [], [], []
    for i, line in enumerate(lines):
        row, reason = check_line(line)
        if reason:
            bad.append(i)
            reasons.append(reason)
        else:
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=_JSON_SCHEMA), bad, reasons


def _parse_block(chunk: list[bytes], out: list, row_lines: list, bad_lines: list, reasons: list) -> None:
    """Parse ``chunk`` with the fast reader; where it refuses a line (its message names the row),
    keep the rows before it, judge that line alone (:func:`check_line`) and go on after it. A
    message without a row number falls back to judging the rest line by line."""
    pos = 0
    while pos < len(chunk):
        rest = chunk[pos:]
        fast, bad_row = _fast_block(b"\n".join(rest))
        if fast is not None and fast.num_rows == len(rest):
            out.append(fast)
            row_lines += rest
            return
        if bad_row is None or bad_row >= len(rest):
            bad_row = len(rest)  # no row named: every line of the rest is judged alone
        if bad_row:
            head, _ = _fast_block(b"\n".join(rest[:bad_row]))
            if head is not None and head.num_rows == bad_row:
                out.append(head)
                row_lines += rest[:bad_row]
            else:
                _slow_lines(rest[:bad_row], out, row_lines, bad_lines, reasons)
        _slow_lines(rest[bad_row: bad_row + 1], out, row_lines, bad_lines, reasons)
        pos += bad_row + 1


def _slow_lines(lines: list[bytes], out: list, row_lines: list, bad_lines: list, reasons: list) -> None:
    table, bad, why = _slow_block(lines)
    out.append(table)
    rejected = set(bad)
    row_lines += [ln for i, ln in enumerate(lines) if i not in rejected]
    bad_lines += [lines[i] for i in bad]
    reasons += why


def parse_lines(data: bytes) -> tuple[pa.Table, list[bytes], list[bytes], list[str]]:
    """(parsed rows with ``timestamp_utc`` still text, the line of each row, rejected lines, their
    reasons)."""
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    tables: list[pa.Table] = []
    row_lines: list[bytes] = []
    bad_lines: list[bytes] = []
    reasons: list[str] = []
    for s in range(0, len(lines), BLOCK_LINES):
        _parse_block(lines[s: s + BLOCK_LINES], tables, row_lines, bad_lines, reasons)
    table = pa.concat_tables(tables) if tables else _JSON_SCHEMA.empty_table()
    return table, row_lines, bad_lines, reasons


def validate_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """(rows in the grouped-actions schema plus ``client``, reason per input row or '' if kept).

    The fast path lets JSON nulls through; they and unparsable timestamps/clients are judged here.
    """
    n = table.num_rows
    reason = np.full(n, "", dtype=object)
    for f in REQUIRED:
        miss = table[f].is_null().to_numpy(zero_copy_only=False)
        reason[(reason == "") & miss] = f"missing_{f}"
    ts = pc.strptime(table[O.TIMESTAMP], format=TIME_FORMAT, unit="s", error_is_null=True)
    bad_ts = ts.is_null().to_numpy(zero_copy_only=False) & (reason == "")
    reason[bad_ts] = "bad_timestamp"
    client_ok = pc.fill_null(pc.match_substring_regex(table[O.CLIENT], CLIENT_NAME.pattern), False)
    reason[(reason == "") & ~client_ok.to_numpy(zero_copy_only=False)] = "bad_client"
    out = pa.table({
        O.CLIENT: table[O.CLIENT], O.USER: table[O.USER], O.ITEM: table[O.ITEM], O.TYPE: table[O.TYPE],
        O.VALUE: table[O.VALUE], O.TIMESTAMP: pc.cast(ts, O.ACTION_SCHEMA.field(O.TIMESTAMP).type),
        O.CLIENT_USER: table[O.CLIENT_USER], O.CLIENT_ITEM: table[O.CLIENT_ITEM], O.RECTAG: table[O.RECTAG],
    })
    return out, reason


def group_task(item: dict[str, Any], root: str, staging: str, day: str, gzip_output: bool,
               index: int) -> dict[str, Any]:
    """Parse one byte range, write its rows per client and its rejected lines; return counters."""
    started = time.perf_counter()
    storage = Storage(root)
    fs, path = pafs.FileSystem.from_uri(item["file"]) if "://" in item["file"] else (pafs.LocalFileSystem(), item["file"])
    data = read_range(fs, path, item["start"], item["end"])
    table, row_lines, bad_lines, bad_reasons = parse_lines(data)
    rows, reason = validate_rows(table)
    keep = reason == ""
    lines_in = table.num_rows + len(bad_lines)
    for i in np.flatnonzero(~keep):
        bad_lines.append(row_lines[i])
        bad_reasons.append(reason[i])
    rows = rows.filter(pa.array(keep))
    day_start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp())
    secs = pc.cast(rows[O.TIMESTAMP], pa.int64()).to_numpy(zero_copy_only=False)
    outside = int(((secs < day_start) | (secs >= day_start + 86400)).sum())
    codec = "gzip" if gzip_output else "none"
    clients: dict[str, int] = {}
    if rows.num_rows:
        order = pc.sort_indices(rows, sort_keys=[(O.CLIENT, "ascending"), (O.USER, "ascending"),
                                                 (O.TIMESTAMP, "ascending")])
        rows = rows.take(order)
        names, starts = np.unique(rows[O.CLIENT].to_numpy(zero_copy_only=False), return_index=True)
        bounds = list(starts) + [rows.num_rows]
        for k, client in enumerate(names):
            part = rows.slice(bounds[k], bounds[k + 1] - bounds[k]).drop_columns([O.CLIENT])
            folder = storage.path(staging, f"{O.CLIENT}={client}", f"{O.DAY}={day}")
            storage.fs.create_dir(folder, recursive=True)
            pq.write_table(part.cast(O.ACTION_SCHEMA), posixpath.join(folder, f"part-{index:05d}.parquet"),
                           filesystem=storage.fs, compression=codec)
            clients[str(client)] = part.num_rows
    reasons: dict[str, int] = {}
    if bad_lines:
        text = [ln[:MAX_LINE_CHARS].decode("utf-8", errors="replace") for ln in bad_lines]
        q = pa.table({"source": [item["file"]] * len(text), "line": text, C.REASON: bad_reasons},
                     schema=quarantine_schema(QUARANTINE_COLUMNS))
        folder = storage.path(f"{staging}-quarantine", f"{O.DAY}={day}")
        storage.fs.create_dir(folder, recursive=True)
        pq.write_table(q, posixpath.join(folder, f"part-{index:05d}.parquet"), filesystem=storage.fs)
        for r in bad_reasons:
            reasons[r] = reasons.get(r, 0) + 1
    return {"lines": lines_in, "rows": int(rows.num_rows), "clients": clients, "quarantined": reasons,
            "outside_day": outside, "bytes": len(data), "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------ the job
def run_actions(cfg: ActionsConfig, storage: Storage) -> dict[str, Any]:
    """Group one day's raw action lines into per-client daily partitions; the report as a dict."""
    from app.offline.tasks import ensure_ray, run_tasks

    ensure_ray()
    started = time.perf_counter()  # the job's own time, not Ray's start
    day = parse_day(cfg.input_date_string)
    pattern = expand_pattern(cfg.input_path_pattern, day)
    fs, where, scheme = _locate(storage, pattern)
    files = glob_files(fs, where)
    if not files:
        raise SchemaError(f"no action files match {pattern!r} (input_path_pattern {cfg.input_path_pattern!r}, "
                          f"day {day})")
    items = plan_ranges(files, cfg.bytes_per_task, scheme)
    staging = storage.new_staging("offline-actions")
    stats = run_tasks(_indexed, list(enumerate(items)), storage.root, staging, day.isoformat(),
                      cfg.gzip_output, desc="group actions")
    # a client in an earlier run of this day but not in this one: its old partition goes too,
    # after the new ones are in (a crash between the two leaves a stale partition, never a gap)
    absent = [name for name in storage.iter_dirs(cfg.output_path_dir)
              if name.startswith(f"{O.CLIENT}=") and not storage.exists(staging, name)
              and storage.exists(cfg.output_path_dir, name, f"{O.DAY}={day.isoformat()}")]
    storage.commit_partitions(staging, cfg.output_path_dir)
    for name in absent:
        storage.delete(cfg.output_path_dir, name, f"{O.DAY}={day.isoformat()}")
    qstaging = f"{staging}-quarantine"
    if storage.exists(qstaging):
        storage.commit_partitions(qstaging, QUARANTINE)
    elif storage.exists(QUARANTINE, f"{O.DAY}={day.isoformat()}"):
        storage.delete(QUARANTINE, f"{O.DAY}={day.isoformat()}")
    clients: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for s in stats:
        for k, v in s["clients"].items():
            clients[k] = clients.get(k, 0) + v
        for k, v in s["quarantined"].items():
            reasons[k] = reasons.get(k, 0) + v
    seconds = time.perf_counter() - started
    lines = sum(s["lines"] for s in stats)
    report = {
        "job": "actions", "day": day.isoformat(), "pattern": pattern, "files": len(files), "tasks": len(items),
        "lines": lines, "rows": sum(s["rows"] for s in stats), "clients": dict(sorted(clients.items())),
        "quarantined": sum(reasons.values()), "quarantine_reasons": dict(sorted(reasons.items())),
        "outside_day": sum(s["outside_day"] for s in stats), "bytes": sum(s["bytes"] for s in stats),
        "output": f"{cfg.output_path_dir}", "gzip_output": cfg.gzip_output,
        "seconds": round(seconds, 3), "lines_per_s": round(lines / seconds, 1) if seconds else None,
    }
    storage.write_json(f"reports/offline/actions-{day.isoformat()}.json", report)
    return report


def _indexed(pair: tuple[int, dict[str, Any]], root: str, staging: str, day: str, gzip_output: bool) -> dict[str, Any]:
    index, item = pair
    return group_task(item, root, staging, day, gzip_output, index)
