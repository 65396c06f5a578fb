"""Golden tests of the pure stage functions (no Ray)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app import constants as C
from app.data.clean_logs import (
    Lookups,
    clean_batch,
    clean_table,
    dedup_partition,
    duplicate_quarantine,
    duplicate_rows,
)
from app.data.config import TrainReadyConfig
from app.data.io import quarantine_schema
from app.data.persona import clean_persona
from app.data.trainready import build_trainready
from app.data.unify import unify_tables


def test_did_with_two_ages_is_dropped():
    raw = pa.table({
        C.DID: ["a", "a", "b", "b", "c"],
        C.GENDER_RAW: ["0", "0", "1", "1", "0"],
        C.AGE_RAW: ["3", "4", "2", "2", "5"],  # a has two ages; b is an exact duplicate
    })
    clean, quarantine = clean_persona(raw, num_buckets=4)
    assert sorted(clean[C.DID].to_pylist()) == ["b", "c"]
    assert quarantine[C.REASON].to_pylist() == ["conflicting_persona"] * 2
    assert quarantine[C.DID].to_pylist() == ["a", "a"]
    row_b = clean.filter(pa.compute.equal(clean[C.DID], "b")).to_pylist()[0]
    assert (row_b[C.GENDER], row_b[C.AGE]) == (1, 2)


def _lookups():
    return {
        "slots": pa.table({C.SLOT_ID: ["s1"], C.MEDIA_CATEGORY: ["Huawei Video"]}),
        "apps": pa.table({C.SPREAD_APP_ID: ["a1", "a2"], C.KEYWORD: ["video", "rare"],
                          C.KEYWORD_INDEX: pa.array([1, 2], pa.int32()), "kept": [True, False]}),
        "persona": pa.table({C.DID: ["u1"], C.GENDER: pa.array([1], pa.int32()), C.AGE: pa.array([4], pa.int32()),
                             C.DID_BUCKET: pa.array([3], pa.int32())}),
    }


def test_clean_batch_reasons_in_order():
    n = 7
    raw = pa.table({
        C.DID: ["u1", "", "u1", "u1", "u1", "u1", "zz"],
        C.ADV_ID: ["x"] * n, C.ADV_TYPE: ["native"] * n,
        C.SLOT_ID: ["s1", "s9", "s1", "s9", "s1", "s1", "s1"],
        C.SPREAD_APP_ID: ["a1", "a1", "a1", "a1", "a9", "a2", "a1"],
        C.DEVICE_NAME: ["d"] * n, C.NET_TYPE: ["4G"] * n, C.ADV_BILL_MODE_CD: ["CPC"] * n,
        C.SHOW_TIME: ["2020-01-07 16:22:18.129", "bad", "bad", "2020-01-07 16:22:18", "2020-01-07 16:22:18",
                      "2020-01-07 16:22:18", "2020-01-07 16:22:18"],
    })
    clean, quarantine, counts = clean_batch(raw, C.SHOW_TIME, _lookups())
    assert counts == {"missing_did": 1, "bad_time": 1, "unknown_slot": 1, "unknown_app": 1,
                      "rare_keyword": 1, "unknown_did": 1}
    assert quarantine[C.REASON].to_pylist() == ["missing_did", "bad_time", "unknown_slot", "unknown_app",
                                                "rare_keyword", "unknown_did"]
    row = clean.to_pylist()[0]
    assert row[C.MEDIA_CATEGORY] == "Huawei Video" and row[C.KEYWORD] == "video" and row[C.KEYWORD_INDEX] == 1
    assert (row[C.GENDER], row[C.AGE], row[C.DID_BUCKET], row[C.DAY]) == (1, 4, 3, "2020-01-07")
    assert clean.column_names == C.CLEAN_LOG_COLUMNS


def test_duplicates_and_early_rejects_share_the_log_quarantine_schema():
    """Duplicates are found among cleaned rows; their quarantine rows are the raw columns they were
    cleaned from, so a log's quarantine is one table (it held two schemas, and reading it as one
    dataset nulled the columns of one kind)."""
    lookups = Lookups({
        "slots": pa.table({C.SLOT_ID: ["s1"], C.MEDIA_CATEGORY: ["m"]}),
        "apps": pa.table({C.SPREAD_APP_ID: ["a1"], C.KEYWORD: ["k"], C.KEYWORD_INDEX: pa.array([1], pa.int32()),
                          "kept": [True]}),
        "persona": pa.table({C.DID: ["u1"], C.GENDER: pa.array([1], pa.int32()), C.AGE: pa.array([2], pa.int32()),
                             C.DID_BUCKET: pa.array([0], pa.int32())}),
    })
    n = 3
    raw = pa.table({C.DID: ["u1", "u1", "u1"], C.ADV_ID: ["x1", "x2", "x3"], C.ADV_TYPE: ["native"] * n,
                    C.SLOT_ID: ["s1", "s1", "s9"], C.SPREAD_APP_ID: ["a1"] * n, C.DEVICE_NAME: ["d"] * n,
                    C.NET_TYPE: ["4G"] * n, C.ADV_BILL_MODE_CD: ["CPC"] * n,
                    C.CLICK_TIME: ["2020-01-07 16:22:18.1", "2020-01-07 16:22:19", "2020-01-07 16:22:20"]})
    raw = pa.table({c: pc.dictionary_encode(raw[c]) if c != C.CLICK_TIME else raw[c] for c in raw.column_names})
    clean, early, _counts = clean_table(raw, C.CLICK_TIME, lookups)
    dups = duplicate_quarantine(clean.slice(1, 1), C.CLICKLOG_COLUMNS, C.CLICK_TIME)
    assert early.schema == dups.schema == quarantine_schema(C.CLICKLOG_COLUMNS)
    assert early[C.REASON].to_pylist() == ["unknown_slot"] and dups[C.REASON].to_pylist() == ["duplicate"]
    raw_row = raw.slice(1, 1).to_pylist()[0]  # the raw values, under their raw names again
    assert {c: v for c, v in dups.to_pylist()[0].items() if c != C.REASON} == raw_row


def test_clean_rows_of_a_bucket_share_that_buckets_did_dictionary():
    # persona not in bucket order: the lookups sort it, so each bucket's dids are one slice
    dids = ["u5", "u1", "u4", "u2", "u3"]
    buckets = [1, 0, 1, 0, 2]
    tables = {**_lookups(), "persona": pa.table({
        C.DID: dids, C.GENDER: pa.array([5, 1, 4, 2, 3], pa.int32()), C.AGE: pa.array([50, 10, 40, 20, 30], pa.int32()),
        C.DID_BUCKET: pa.array(buckets, pa.int32())})}
    lookups = Lookups(tables)
    raw_dids = ["u3", "u4", "u1", "u5", "u2", "u4"]
    n = len(raw_dids)
    raw = pa.table({
        C.DID: raw_dids, C.ADV_ID: ["x"] * n, C.ADV_TYPE: ["native"] * n, C.SLOT_ID: ["s1"] * n,
        C.SPREAD_APP_ID: ["a1"] * n, C.DEVICE_NAME: ["d"] * n, C.NET_TYPE: ["4G"] * n,
        C.ADV_BILL_MODE_CD: ["CPC"] * n, C.SHOW_TIME: ["2020-01-07 16:22:18"] * n,
    })
    clean, _q, _counts = clean_table(raw, C.SHOW_TIME, lookups)
    assert clean[C.DID].to_pylist() == raw_dids
    assert clean[C.GENDER].to_pylist() == [3, 4, 1, 5, 2, 4]  # persona values follow the sort
    assert clean[C.DID_BUCKET].to_pylist() == [2, 1, 0, 1, 0, 1]
    per_bucket = {}
    for b in (0, 1, 2):
        rows = [i for i, x in enumerate(clean[C.DID_BUCKET].to_pylist()) if x == b]
        col = lookups.bucket_dids(clean[C.DID].chunk(0).take(pa.array(rows)), b)
        assert col.to_pylist() == [raw_dids[i] for i in rows]
        per_bucket[b] = sorted(col.dictionary.to_pylist())
    assert per_bucket == {0: ["u1", "u2"], 1: ["u4", "u5"], 2: ["u3"]}


def test_clean_rows_by_bucket_day_are_sorted_stably_before_1970_too():
    tables = {**_lookups(), "persona": pa.table({
        C.DID: ["u1", "u2"], C.GENDER: pa.array([1, 2], pa.int32()), C.AGE: pa.array([1, 2], pa.int32()),
        C.DID_BUCKET: pa.array([1, 0], pa.int32())})}
    times = ["2020-01-08 00:00:01", "1969-12-31 23:59:59", "2020-01-07 00:00:01", "2020-01-07 00:00:02",
             "1969-12-31 00:00:00", "2020-01-08 00:00:00"]
    dids = ["u1", "u1", "u2", "u1", "u2", "u2"]
    n = len(times)
    raw = pa.table({
        C.DID: dids, C.ADV_ID: [f"x{i}" for i in range(n)], C.ADV_TYPE: ["native"] * n, C.SLOT_ID: ["s1"] * n,
        C.SPREAD_APP_ID: ["a1"] * n, C.DEVICE_NAME: ["d"] * n, C.NET_TYPE: ["4G"] * n,
        C.ADV_BILL_MODE_CD: ["CPC"] * n, C.SHOW_TIME: times,
    })
    lookups = Lookups(tables)
    plain, _q, _c = clean_table(raw, C.SHOW_TIME, lookups)
    assert plain[C.ADV_ID].to_pylist() == [f"x{i}" for i in range(n)]  # raw order by default
    clean, _q, _c = clean_table(raw, C.SHOW_TIME, lookups, by_bucket_day=True)
    # bucket 0 (u2): 1969-12-31, 2020-01-07, 2020-01-08; bucket 1 (u1): 1969, 2020-01-07, 2020-01-08
    assert clean[C.ADV_ID].to_pylist() == ["x4", "x2", "x5", "x1", "x3", "x0"]
    assert clean[C.DID_BUCKET].to_pylist() == [0, 0, 0, 1, 1, 1]
    assert clean.to_pylist() == plain.take(pa.array([4, 2, 5, 1, 3, 0])).to_pylist()


def test_dedup_partition_counts_extra_copies():
    t = pa.table({"a": [1, 1, 1, 2, 3, 3], "b": ["x", "x", "x", "y", "z", "z"]})
    distinct, extra = dedup_partition(t)
    assert sorted(distinct.to_pylist(), key=str) == sorted([{"a": 1, "b": "x"}, {"a": 2, "b": "y"},
                                                          {"a": 3, "b": "z"}], key=str)
    assert sorted(extra["a"].to_pylist()) == [1, 1, 3]


def test_duplicate_rows_with_colliding_hashes_stays_exact():
    t = pa.table({"a": [1, 2, 1, 1, 3, 2], "b": ["x", "y", "x", "z", "z", "y"]})
    # every row gets the same hash: all are candidates, values decide
    assert duplicate_rows(t, ["a", "b"], np.zeros(6, np.uint64)).tolist() == [2, 5]
    # distinct hashes: nothing is compared, nothing is a duplicate
    assert duplicate_rows(t, ["a", "b"], np.arange(6, dtype=np.uint64)).tolist() == []


def _log_rows(rows):
    """rows: (did, time, keyword_index, is_click)"""
    def table(sel):
        sub = [r for r in rows if r[3] == sel]
        n = len(sub)
        return pa.table({
            C.DID: [r[0] for r in sub], C.ACTION_TIME: [r[1] for r in sub],
            C.KEYWORD: [f"k{r[2]}" for r in sub], C.KEYWORD_INDEX: pa.array([r[2] for r in sub], pa.int32()),
            C.MEDIA: ["native"] * n, C.MEDIA_CATEGORY: ["m"] * n, C.NET_TYPE: ["4G"] * n,
            C.GENDER: pa.array([0] * n, pa.int32()), C.AGE: pa.array([3] * n, pa.int32()), C.ADV_ID: ["x"] * n,
        })
    return table(0), table(1)


def test_trainready_arrays_for_three_users():
    d1, d2, d3 = "2020-01-01", "2020-01-02", "2020-01-03"
    rows = [
        ("A", f"{d1} 10:00:00.000", 2, 0), ("A", f"{d1} 11:00:00", 1, 0), ("A", f"{d1} 11:00:05", 1, 1),
        ("A", f"{d3} 09:00:00.5", 2, 0), ("A", f"{d3} 09:30:00", 2, 0),
        ("B", f"{d2} 08:00:00", 3, 0), ("B", f"{d2} 08:00:07", 3, 1), ("B", f"{d2} 09:00:07", 1, 1),  # orphan click
        ("C", f"{d1} 23:59:00", 1, 0),
    ]
    show, click = _log_rows(rows)
    logs = unify_tables(show, click, 86400)
    assert logs.num_rows == 9
    assert set(logs[C.INTERVAL_STARTING_TIME].to_pylist()) == {1577836800, 1577923200, 1578009600}
    table, orphans, counts = build_trainready(logs, TrainReadyConfig(), bucket=1, num_buckets=4)
    got = {r[C.DID]: r for r in table.to_pylist()}
    assert got["A"][C.INTERVAL_STARTING_TIME] == [1578009600, 1577836800]  # newest first
    assert got["A"][C.KWI] == [[2], [1, 2]]
    assert got["A"][C.KWI_SHOW_COUNTS] == [[2], [1, 1]]
    assert got["A"][C.KWI_CLICK_COUNTS] == [[0], [1, 0]]
    assert got["B"][C.KWI] == [[3]] and got["B"][C.KWI_CLICK_COUNTS] == [[1]]
    assert got["C"][C.KWI] == [[1]] and got["C"][C.KWI_SHOW_COUNTS] == [[1]]
    assert counts["click_without_show"] == 1 and orphans[C.DID].to_pylist() == ["B"]
    # did_index: rank within the bucket (A, B, C) * num_buckets + bucket
    assert [got[d][C.DID_INDEX] for d in "ABC"] == [1, 5, 9]


def test_trainready_user_filters():
    rows = [("A", "2020-01-01 10:00:00", 1, 0), ("A", "2020-01-02 10:00:00", 1, 0), ("B", "2020-01-01 10:00:00", 1, 0)]
    logs = unify_tables(*_log_rows(rows), 86400)
    table, _, counts = build_trainready(logs, TrainReadyConfig(min_active_intervals=2), 0, 1)
    assert table[C.DID].to_pylist() == ["A"] and counts["filtered_users"] == 1
    table, _, counts = build_trainready(logs, TrainReadyConfig(max_traffic=1), 0, 1)
    assert table[C.DID].to_pylist() == ["B"]
    assert np.all(table[C.DID_INDEX].to_numpy() >= 0)


def test_fused_samples_dropped_when_the_predicted_cut_was_wrong(tmp_path):
    """The fused samples stage guesses the cutting date from the newest clean row; if the newest
    train-ready interval says otherwise, its shards are dropped (train-ready is still committed)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app import constants as C
    from app.data import clean_logs
    from app.data.config import DataConfig
    from app.storage import Storage

    storage = Storage(str(tmp_path))
    cfg = DataConfig(did_bucket_num=1)
    leaf = "day=2020-01-10/did_bucket=0"
    storage.makedirs(C.T_LOGS, leaf)
    pq.write_table(pa.table({"x": [1]}), storage.path(C.T_LOGS, leaf, "part-0.parquet"))
    day10 = 1578614400  # 2020-01-10 00:00 UTC
    plan = clean_logs._plan_downstream(cfg, storage, ("trainready", "samples"), day10 + 3600)
    assert plan["samples"]["cut"] == day10 - 2 * 86400
    storage.makedirs(plan["trainready"]["final"], "did_bucket=0")
    pq.write_table(pa.table({"x": [1]}), storage.path(plan["trainready"]["final"], "did_bucket=0", "part-0.parquet"))
    done = pd.DataFrame({
        **{f"trainready_{k}": [1] for k in ("rows_in", "users", "click_without_show", "filtered_users", "seconds")},
        "trainready_max_interval": [day10 - 86400],  # the newest day's users were all filtered out
        **{f"samples_{k}": [1] for k in ("users", "train_rows", "train_pos", "test_rows", "test_pos", "seconds")},
    })
    assert clean_logs._commit_downstream(cfg, storage, plan, done, {leaf}) == ["trainready"]
    assert storage.list_partitions(C.T_TRAINREADY) == ["did_bucket=0"]
    assert not storage.exists(plan["samples"]["staging"]) and not storage.exists("samples/default")
    assert storage.read_json("reports/trainready.json")["written_by"] == "clean"


def test_keep_heap_lets_big_arrays_reuse_freed_memory():
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        import pytest

        pytest.skip("glibc malloc only")
    code = """
import resource, numpy as np
from app.data.io import keep_heap
def faults(fresh):
    for _ in range(3):
        a = np.ones(8_000_000); del a  # 64 MB: above glibc's largest default mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        a = np.ones(8_000_000); del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
plain = faults(True)
keep_heap(); keep_heap()
print(plain, faults(False))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    plain, kept = map(int, out.stdout.split())
    assert kept * 10 < plain, (plain, kept)  # freshly mapped pages each time vs reused heap


def test_empty_quarantines_read_back_with_their_schema(storage):
    """A stage that quarantined nothing still leaves a table that reads as one (empty) dataset."""
    import pyarrow.dataset as pads

    from app.data import trainready
    from app.data.io import StageReport

    staging = trainready.new_staging(storage)
    trainready.commit(storage, staging, dict.fromkeys(trainready.COUNTERS, 0), StageReport("trainready"))
    table = pads.dataset(storage.path(C.T_QUARANTINE, "trainready"), format="parquet").to_table()
    assert table.num_rows == 0 and table.schema == trainready.ORPHAN_SCHEMA
