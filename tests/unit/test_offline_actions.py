"""Actions grouping (spec 003): line parsing, quarantine reasons, byte ranges, glob, partitions."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from app.offline import actions as A
from app.offline import common as O
from app.offline.config import ActionsConfig, parse_day
from app.offline.generate import GenerateActionsConfig, generate_actions

GOOD = {"client": "shop", "client_itemid": "/i/7", "client_userid": "u1", "itemid": 7, "rectag": "default",
        "timestamp_utc": "2015-01-01T05:56:13Z", "type": 1, "userid": 1, "value": 2.0}


def line(**change) -> bytes:
    obj = {**GOOD, **change}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


@pytest.mark.parametrize("raw, reason", [
    (line(), None),
    (line()[:30], "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (line(userid=...), "missing_userid"),
    (line(value=None), "missing_value"),
    (line(userid="12"), "bad_userid"),
    (line(itemid=1.5), "bad_itemid"),
    (line(type=True), "bad_type"),
    (line(value="2"), "bad_value"),
    (line(timestamp_utc=5), "bad_timestamp"),
])
def test_check_line_reasons(raw, reason):
    row, why = A.check_line(raw)
    assert why == reason
    assert (row is None) == (reason is not None)


def test_fast_and_slow_paths_agree_and_every_bad_line_is_quarantined():
    good = [line(userid=i, itemid=i % 5) for i in range(3000)]
    lines = list(good)
    lines[10] = line()[:20]                       # bad JSON: the fast reader names the row
    lines[2500] = line(userid="x")                # wrong type
    lines[2900] = line(timestamp_utc="yesterday")  # parses; rejected by validate_rows
    lines[2901] = line(client="a/b")              # a client that cannot be a folder name
    table, row_lines, bad_lines, reasons = A.parse_lines(b"\n".join(lines) + b"\n\n")
    assert len(row_lines) == table.num_rows == 2998
    assert sorted(reasons) == ["bad_userid", "malformed_json"] and len(bad_lines) == 2
    rows, why = A.validate_rows(table)
    assert sorted(w for w in why if w) == ["bad_client", "bad_timestamp"]
    kept = rows.filter(why == "")
    assert kept.num_rows == 2996
    assert kept[O.TIMESTAMP][0].as_py() == dt.datetime(2015, 1, 1, 5, 56, 13, tzinfo=dt.UTC)
    assert kept[O.USER].to_pylist()[:3] == [0, 1, 2]


def test_byte_ranges_cover_every_line_once(tmp_path):
    lines = [line(userid=i) for i in range(997)]
    path = tmp_path / "a.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    info = pafs.LocalFileSystem().get_file_info(str(path))
    items = A.plan_ranges([info], 1024, "")
    assert len(items) > 50
    got = []
    for it in items:
        data = A.read_range(pafs.LocalFileSystem(), it["file"], it["start"], it["end"])
        got += [json.loads(x)["userid"] for x in data.split(b"\n") if x]
    assert got == list(range(997))


def test_pattern_and_glob(tmp_path):
    day = dt.date(2015, 3, 7)
    assert A.expand_pattern("logs/actions.%y/%m%d/*/*", day) == "logs/actions.2015/0307/*/*"
    for rel in ["actions.2015/0307/a/part-0.json", "actions.2015/0307/b/part-1.json", "actions.2015/0308/a/x.json",
                "actions.2015/0307/_tmp/x.json", "actions.2015/0307/c/d/deep.json"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}\n")
    found = A.glob_files(pafs.LocalFileSystem(), f"{tmp_path}/actions.2015/0307/*/*")
    assert [f.path.split("actions.2015/")[1] for f in found] == ["0307/a/part-0.json", "0307/b/part-1.json"]
    whole = A.glob_files(pafs.LocalFileSystem(), f"{tmp_path}/actions.2015/0307")
    assert len(whole) == 3  # a directory: every file below it, hidden names skipped


def test_parse_day_and_config():
    assert parse_day("20150101") == parse_day("2015-01-01") == dt.date(2015, 1, 1)
    with pytest.raises(ValueError):
        ActionsConfig(input_date_string="01/01/2015")


def test_group_task_writes_client_day_partitions_and_quarantine(storage):
    cfg = GenerateActionsConfig(n_users=50, n_items=40, n_groups=4, bundles_per_group=2, bundle_size=3,
                                clients=["c1", "c2"], malformed_rate=0.02, shards=1)
    summary = generate_actions(cfg, storage)
    files = A.glob_files(storage.fs, storage.path("raw/actions/actions.2015/0101/*/*"))
    items = A.plan_ranges(files, 4096, "")
    staging = storage.new_staging("t")
    stats = [A.group_task(it, storage.root, staging, "2015-01-01", True, i) for i, it in enumerate(items)]
    lines = sum(s["lines"] for s in stats)
    bad = sum(sum(s["quarantined"].values()) for s in stats)
    assert lines == summary["lines"] and bad == summary["malformed"] > 0
    assert sum(s["rows"] for s in stats) == lines - bad
    part = storage.list_files(staging, "client=c1", "day=2015-01-01", suffix=".parquet")[0]
    meta = pq.ParquetFile(part).metadata
    assert meta.row_group(0).column(0).compression == "GZIP"
    table = pq.read_table(part)
    assert table.schema.names == O.ACTION_SCHEMA.names
    q = storage.list_files(f"{staging}-quarantine", suffix=".parquet")
    assert sum(pq.read_table(f).num_rows for f in q) == bad
