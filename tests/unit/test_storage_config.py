import pyarrow as pa
import pytest

from app.config import StrictModel, apply_overrides, load_config
from app.data.config import DataConfig
from app.errors import ConfigError, SchemaError


def test_partition_rewrite_replaces_only_its_partitions(storage):
    t = pa.table({"v": [1, 2, 3], "day": ["d1", "d1", "d2"]})
    storage.write_table("tables/t", t, ["day"])
    storage.write_table("tables/t", pa.table({"v": [9], "day": ["d1"]}), ["day"])
    got = storage.read_table("tables/t").sort_by("v").to_pydict()
    assert got == {"v": [3, 9], "day": ["d2", "d1"]}
    storage.write_table("tables/t", pa.table({"v": [9], "day": ["d1"]}), ["day"])  # re-run: same rows
    assert storage.read_table("tables/t").num_rows == 2


def test_interrupted_commit_is_rolled_forward(storage):
    storage.write_table("tables/t", pa.table({"v": [1], "day": ["d1"]}), ["day"])
    staging = storage.new_staging("t")
    import pyarrow.parquet as pq

    storage.makedirs(staging, "day=d1")
    pq.write_table(pa.table({"v": [2]}), storage.path(staging, "day=d1", "part-0.parquet"))
    # simulate a crash right after the old partition was moved to the trash
    plan = [{"src": f"{staging}/day=d1", "dest": "tables/t/day=d1", "trash": "tables/t/_trash-x-day=d1"}]
    storage.write_json("_txn/x.json", {"moves": plan, "cleanup": staging})
    storage.fs.move(storage.path("tables/t/day=d1"), storage.path("tables/t/_trash-x-day=d1"))
    assert storage.recover() == 1
    assert storage.read_table("tables/t").to_pydict() == {"v": [2], "day": ["d1"]}
    assert not storage.exists(staging) and not storage.exists("tables/t/_trash-x-day=d1")


def test_missing_table_and_column_are_named(storage):
    with pytest.raises(SchemaError, match="tables/none"):
        storage.read_table("tables/none")
    storage.write_table("tables/t", pa.table({"v": [1]}))
    with pytest.raises(SchemaError, match="'w'"):
        storage.read_table("tables/t", columns=["w"])


def test_config_unknown_key_refused():
    with pytest.raises(ConfigError, match="samples.lenght"):
        load_config(DataConfig, None, ["samples.lenght=3"])
    with pytest.raises(ConfigError, match="did_bucket_num"):
        load_config(DataConfig, None, ["did_bucket_num=0"])


def test_overrides_typed_and_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("did_bucket_num: 2\nsamples:\n  length: 3\n")
    cfg = load_config(DataConfig, p, ["samples.hist_len=8", "start_day=2020-01-02"])
    assert (cfg.did_bucket_num, cfg.samples.length, cfg.samples.hist_len) == (2, 3, 8)
    assert str(cfg.start_day) == "2020-01-02"
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])


def test_missing_config_file_named(tmp_path):
    class M(StrictModel):
        x: int = 1

    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(M, tmp_path / "nope.yaml")
