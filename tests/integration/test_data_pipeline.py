"""End to end under a local Ray: quarantine counts equal the injected dirt, re-runs are idempotent."""

import gzip
import io
import os
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from app import constants as C
from app.config import load_config
from app.data.config import DataConfig
from app.data.io import quarantine_schema
from app.data.pipeline import run_pipeline
from app.data.raw_input import read_input_rows
from app.data.tfrecord import read_samples
from app.data.trainready import ORPHAN_SCHEMA
from app.errors import SchemaError
from app.storage import Storage

pytestmark = pytest.mark.integration


def reports(storage):
    return {name: storage.read_json(f"reports/{name}.json")
            for name in ("persona", "clean_showlog", "clean_clicklog", "unify", "trainready", "samples")}


def test_quarantine_counts_equal_injected_dirt(generated_root):
    storage = Storage(generated_root)
    dirt = storage.read_json("raw/truth/dirt.json")
    rep = reports(storage)
    for log in ("showlog", "clicklog"):
        got = rep[f"clean_{log}"]["quarantined"]
        for reason in ("missing_did", "bad_time", "unknown_slot", "unknown_app", "unknown_did", "duplicate"):
            assert got.get(reason, 0) == dirt[log][reason], (log, reason)
        q = storage.read_table(f"{C.T_QUARANTINE}/{log}")
        assert q.num_rows == rep[f"clean_{log}"]["quarantined_total"]
        assert rep[f"clean_{log}"]["rows_in"] == rep[f"clean_{log}"]["rows_out"] + q.num_rows
    assert rep["persona"]["quarantined"]["conflicting_persona"] == dirt["persona_conflict_rows"]
    assert rep["trainready"]["quarantined"]["click_without_show"] == dirt["clicks_without_show"]
    assert rep["unify"]["rows_out"] == rep["clean_showlog"]["rows_out"] + rep["clean_clicklog"]["rows_out"]


def test_samples_readable_with_tf_data(generated_root):
    storage = Storage(generated_root)
    stats = storage.read_json("samples/default/stats.json")
    assert stats["train"]["rows"] > 1000 and stats["test"]["rows"] > 100
    files = storage.list_files("samples/default/test", suffix=".tfrecord")
    total, positives = 0, 0
    for batch in read_samples(files, stats["hist_len"], 4096):
        total += len(batch["label"])
        positives += int(batch["label"].numpy().sum())
        assert batch["target_kwi"].numpy().min() >= 1
        assert batch["hist_kwi"].numpy().max() < stats["num_keywords"]
        assert np.all(batch["interval_starting_time"].numpy() >= stats["cutting_seconds"])
    assert (total, positives) == (stats["test"]["rows"], stats["test"]["positives"])


def test_rerun_is_idempotent(generated_root, tmp_path):
    storage = Storage(generated_root)
    cfg = load_config(DataConfig, "configs/smoke/data.yaml")
    before = {t: storage.read_table(t).num_rows for t in (C.T_SHOWLOG, C.T_CLICKLOG, C.T_LOGS, C.T_TRAINREADY)}
    stats_before = storage.read_json("samples/default/stats.json")
    run_pipeline(cfg, storage, stages=["clean", "unify", "trainready", "samples"])
    after = {t: storage.read_table(t).num_rows for t in before}
    assert after == before
    stats_after = storage.read_json("samples/default/stats.json")
    assert stats_after["train"] == stats_before["train"] and stats_after["test"] == stats_before["test"]
    assert not storage.list_files("_staging")


def test_missing_input_table_named(ray_local, tmp_path):
    storage = Storage(str(tmp_path / "empty"))
    with pytest.raises(SchemaError, match="keyword"):
        run_pipeline(DataConfig(), storage, stages=["keywords"])


def _echo(batch):
    import os

    return {"item": batch["item"], "pid": np.array([os.getpid()])}


def test_map_tasks_one_task_per_item_and_context_restored(ray_local):
    import ray

    from app.data.io import map_tasks

    ctx = ray.data.DataContext.get_current()
    before = ctx.op_resource_reservation_enabled
    out = map_tasks([{"item": i} for i in range(5)], _echo, {})
    assert sorted(out["item"].tolist()) == list(range(5))
    assert ctx.op_resource_reservation_enabled == before


def _outputs(storage):
    """What the train-ready and samples stages produce, in comparable form."""
    files = storage.list_files("samples/default")
    return {
        "trainready": storage.read_table(C.T_TRAINREADY).to_pylist(),
        "orphans": sorted(map(str, storage.read_table(f"{C.T_QUARANTINE}/trainready").to_pylist())),
        "samples": {f.rsplit("samples/default/", 1)[1]: open(f, "rb").read() for f in files},
    }


def _copy_raw(src_root, dest):
    import shutil

    shutil.copytree(f"{src_root}/raw", f"{dest}/raw")
    return Storage(str(dest))


def test_fused_stages_match_stage_by_stage(generated_root, tmp_path):
    fused = Storage(generated_root)  # the shared fixture ran the pipeline fused (the default)
    for stage in ("trainready", "samples"):
        assert fused.read_json(f"reports/{stage}.json")["written_by"] == "clean"
    alone = _copy_raw(generated_root, tmp_path / "alone")
    cfg = load_config(DataConfig, "configs/smoke/data.yaml")
    rep = run_pipeline(cfg, alone, fuse=False)
    assert rep["fused"] == ["unify"] and "written_by" not in rep["samples"]
    assert _outputs(alone) == _outputs(fused)  # same rows, same TFRecord bytes, same stats.json
    for stage in ("trainready", "samples"):
        a, f = alone.read_json(f"reports/{stage}.json"), fused.read_json(f"reports/{stage}.json")
        assert {k: a[k] for k in ("rows_in", "rows_out", "quarantined")} == {
            k: f[k] for k in ("rows_in", "rows_out", "quarantined")}


def test_fused_output_dropped_when_an_older_partition_would_be_read(generated_root, tmp_path):
    """A ``tables/logs`` day the new input lacks is read by train-ready run alone, so the fused
    result (which lacks it) must not be committed: the stages run alone after clean."""
    import shutil

    storage = _copy_raw(generated_root, tmp_path / "stale")
    cfg = load_config(DataConfig, "configs/smoke/data.yaml")
    run_pipeline(cfg, storage)
    leaf = storage.list_partitions(C.T_LOGS)[0]
    stale = f"{C.T_LOGS}/day=2019-12-25/{leaf.split('/')[1]}"
    shutil.copytree(storage.path(C.T_LOGS, leaf), storage.path(stale))
    stale_rows = storage.read_table(stale).num_rows
    logs_before = storage.read_table(C.T_LOGS).num_rows
    rep = run_pipeline(cfg, storage, stages=["clean", "unify", "trainready", "samples"])
    assert rep["fused"] == ["unify"]
    assert "written_by" not in rep["trainready"] and "written_by" not in rep["samples"]
    assert rep["trainready"]["rows_in"] == logs_before  # the stale day's rows were read
    assert stale_rows > 0 and not storage.list_files("_staging")


# ---------------------------------------------------------------- raw input forms and quarantine
RAW_COLUMNS = {"persona": C.PERSONA_COLUMNS, "showlog": C.SHOWLOG_COLUMNS, "clicklog": C.CLICKLOG_COLUMNS}
STAGE_REPORT = {"persona": "persona", "showlog": "clean_showlog", "clicklog": "clean_clicklog"}


def _quarantine_is_one_dataset(storage, cfg, stage):
    """``tables/quarantine/<stage>`` read back as one dataset: every file has the stage's raw
    columns + reason, every row is one of the raw input's rows (a nulled column would not be),
    and the counts by reason are the stage report's."""
    columns = RAW_COLUMNS[stage]
    files = storage.list_files(f"{C.T_QUARANTINE}/{stage}", suffix=".parquet")
    assert files and all(pq.read_schema(f) == quarantine_schema(columns) for f in files)
    table = pads.dataset(storage.path(C.T_QUARANTINE, stage), format="parquet").to_table()
    assert table.schema == quarantine_schema(columns)
    report = storage.read_json(f"reports/{STAGE_REPORT[stage]}.json")
    assert dict(Counter(table[C.REASON].to_pylist())) == report["quarantined"]
    rows, malformed = read_input_rows(storage, stage, getattr(cfg.raw, stage), columns)

    def multiset(t):
        return Counter(zip(*[t[c].to_pylist() for c in columns], strict=True))

    assert not multiset(table) - (multiset(rows) + multiset(malformed))  # each row a raw row, copies counted
    return table


def test_quarantine_reads_back_as_one_dataset(generated_root):
    """Duplicates used to be quarantined with the cleaned columns and early rejects with the raw
    ones, so reading the show log's quarantine as one dataset nulled one kind's columns."""
    import ray

    storage = Storage(generated_root)
    cfg = load_config(DataConfig, "configs/smoke/data.yaml")
    for stage in RAW_COLUMNS:
        table = _quarantine_is_one_dataset(storage, cfg, stage)
        assert table.num_rows > 0
    shows = ray.data.read_parquet(storage.path(C.T_QUARANTINE, "showlog")).to_pandas()
    dup = shows[shows[C.REASON] == "duplicate"]
    assert len(dup) == storage.read_json("reports/clean_showlog.json")["quarantined"]["duplicate"]
    assert not dup[C.SHOWLOG_COLUMNS].isna().any().any()  # every raw field of a duplicate is there
    orphans = pads.dataset(storage.path(C.T_QUARANTINE, "trainready"), format="parquet").to_table()
    assert orphans.schema == ORPHAN_SCHEMA and set(orphans[C.REASON].to_pylist()) == {"click_without_show"}
    assert sum(orphans["clicks"].to_pylist()) == storage.read_json("reports/trainready.json")["quarantined"][
        "click_without_show"]


def _csv_text(table, extra_lines=()):
    buf = io.BytesIO()
    pacsv.write_csv(table.cast(pa.schema([(f.name, pa.string()) for f in table.schema])), buf)
    return buf.getvalue() + "".join(extra_lines).encode()


def _export_as_csv(src, dest):
    """The generated raw tables in the forms users bring, with a few malformed CSV lines.
    Returns (data config overrides, malformed lines per stage)."""

    def raw(table):
        return pa.concat_tables([pq.read_table(f) for f in src.list_files(f"raw/{table}", suffix=".parquet")])

    base = dest.makedirs("exports")
    first_show = raw("showlog").slice(0, 1).to_pylist()[0]
    too_many = ",".join(first_show[c] for c in C.SHOWLOG_COLUMNS) + ",surplus\n"  # a valid row plus a field
    show_bad = [too_many, "u-short,1,native\n"]
    with gzip.open(f"{base}/showlog.csv.gz", "wb") as f:  # one gzipped file, root-relative
        f.write(_csv_text(raw("showlog"), show_bad))
    os.makedirs(f"{base}/clicks/2020")
    for i, f in enumerate(src.list_files("raw/clicklog", suffix=".parquet")):  # a directory, by file:// URI
        with open(f"{base}/clicks/2020/part-{i:05d}.csv", "wb") as out:
            out.write(_csv_text(pq.read_table(f)))
    persona_bad = ["did-only\n"]
    with open(f"{base}/persona.csv", "wb") as f:  # one file, absolute path
        f.write(_csv_text(raw("persona"), persona_bad))
    shutil.copy(src.list_files("raw/keyword", suffix=".parquet")[0], f"{base}/keyword.parquet")  # a Parquet file
    with open(f"{base}/slots", "wb") as f:  # ';'-delimited, no suffix: the format is set
        f.write(_csv_text(raw("slot")).replace(b",", b";"))
    overrides = ["raw.showlog=exports/showlog.csv.gz", f"raw.clicklog=file://{base}/clicks",
                 f"raw.persona={base}/persona.csv", "raw.keyword=exports/keyword.parquet",
                 "raw.slot.path=exports/slots", "raw.slot.format=csv", "raw.slot.delimiter=;"]
    return overrides, {"showlog": len(show_bad), "clicklog": 0, "persona": len(persona_bad)}


def _sorted_table(storage, name):
    t = storage.read_table(name)
    keys = [(c, "ascending") for c in t.column_names if not str(t.schema.field(c).type).startswith("list")]
    return t.sort_by(keys)


def test_csv_inputs_give_the_parquet_tables(generated_root, tmp_path):
    """The generated raw tables as CSV (a gzipped file, a directory by URI, an absolute path, a
    ';'-delimited file named by the config) plus a Parquet file: the same tables, TFRecords and
    counts as the Parquet run, the malformed lines quarantined, the conversion reused after."""
    parquet = Storage(generated_root)
    storage = Storage(str(tmp_path / "csv"))
    overrides, bad = _export_as_csv(parquet, storage)
    cfg = load_config(DataConfig, "configs/smoke/data.yaml", overrides)
    rep = run_pipeline(cfg, storage)
    assert _outputs(storage) == _outputs(parquet)  # train-ready rows, orphans, TFRecord bytes
    for table in (C.T_SHOWLOG, C.T_CLICKLOG, C.T_LOGS, C.T_PERSONA, C.T_KEYWORDS):
        assert _sorted_table(storage, table).equals(_sorted_table(parquet, table)), table
    for stage, name in STAGE_REPORT.items():
        got, want = storage.read_json(f"reports/{name}.json"), parquet.read_json(f"reports/{name}.json")
        assert got["rows_in"] == want["rows_in"] + bad[stage]
        assert got["rows_out"] == want["rows_out"]
        assert got["quarantined"] == {**want["quarantined"], **({"malformed_line": bad[stage]} if bad[stage] else {})}
        if stage != "persona":  # (persona merges exact duplicates without quarantining them)
            assert got["rows_in"] == got["rows_out"] + got["quarantined_total"]
        _quarantine_is_one_dataset(storage, cfg, stage)
    assert rep["keywords"]["showlog_csv_conversion_seconds"] > 0
    cache = sorted(storage.iter_dirs("_raw_csv"))
    assert [d.split("-")[0] for d in cache] == ["clicklog", "showlog"]

    again = run_pipeline(cfg, storage, stages=["clean"])  # unchanged CSV: converted once, reused
    assert again["clean"]["showlog"]["csv_conversion_seconds"] == 0
    assert again["clean"]["clicklog"]["csv_conversion_seconds"] == 0
    with open(storage.path("exports/clicks/2020/part-00000.csv"), "ab") as f:
        f.write(b"one,field,too,few\n")  # a changed file: converted again, the old conversion dropped
    again = run_pipeline(cfg, storage, stages=["clean"])
    assert again["clean"]["clicklog"]["csv_conversion_seconds"] > 0
    assert again["clean"]["clicklog"]["quarantined"]["malformed_line"] == 1
    new_cache = sorted(storage.iter_dirs("_raw_csv"))
    assert len(new_cache) == 2 and new_cache[1] == cache[1] and new_cache[0] != cache[0]


def test_csv_missing_column_named(ray_local, tmp_path):
    storage = Storage(str(tmp_path / "root"))
    storage.makedirs("raw")
    with open(storage.path("raw/shows.csv"), "w") as f:
        f.write("did,adv_id,adv_type,slot_id,spread_app_id,device_name,net_type,show_time\nu1,a,b,c,d,e,f,x\n")
    cfg = DataConfig(raw={"showlog": "raw/shows.csv"})
    storage.makedirs("raw/keyword")
    pq.write_table(pa.table({C.SPREAD_APP_ID: ["d"], C.KEYWORD: ["k"]}), storage.path("raw/keyword/part-0.parquet"))
    with pytest.raises(SchemaError, match=r"'showlog'.*shows\.csv.*adv_bill_mode_cd"):
        run_pipeline(cfg, storage, stages=["keywords"])
