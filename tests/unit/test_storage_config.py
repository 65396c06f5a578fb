import pyarrow as pa
import pytest

from app.config import StrictModel, apply_overrides, load_config
from app.data.config import DataConfig
from app.errors import ConfigError, SchemaError
from app.storage import Storage


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


@pytest.mark.parametrize("given", ["var/lookalike", "./rel/../var/lookalike", "var/lookalike/"])
def test_local_roots_become_absolute_once(given, tmp_path, monkeypatch):
    """A relative root handed to a Ray worker names another folder: the driver resolves it."""
    from app.settings import get_settings, resolve_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOKALIKE_ROOT", raising=False)
    expected = str(tmp_path / "var" / "lookalike")
    assert resolve_root(given) == expected
    assert get_settings(given).root == expected
    assert get_settings().root == expected  # the default, from here
    monkeypatch.setenv("LOOKALIKE_ROOT", given)
    assert get_settings().root == expected
    assert Storage(given).root == expected


def test_uri_roots_pass_unchanged_and_home_expands(monkeypatch, tmp_path):
    from app.settings import resolve_root

    assert resolve_root("s3://bucket/lookalike") == "s3://bucket/lookalike"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_root("~/lk") == str(tmp_path / "lk")


def test_submitted_job_refuses_a_relative_root(monkeypatch, tmp_path):
    """``ray job submit`` runs in a temporary copy of the working dir: a relative root would vanish."""
    from app.settings import SUBMITTED_JOB_ENV, get_settings, resolve_root

    monkeypatch.setenv(SUBMITTED_JOB_ENV, "{}")
    monkeypatch.delenv("LOOKALIKE_ROOT", raising=False)
    with pytest.raises(ConfigError, match="ray job submit"):
        get_settings()
    assert resolve_root(str(tmp_path)) == str(tmp_path)
    assert resolve_root("s3://b/r") == "s3://b/r"


def test_shipped_configs_found_from_any_directory(tmp_path, monkeypatch):
    from app.settings import PROJECT_DIR, config_path

    monkeypatch.chdir(tmp_path)
    assert config_path("configs/data.yaml") == PROJECT_DIR / "configs" / "data.yaml"
    assert load_config(DataConfig, "configs/smoke/data.yaml").did_bucket_num == 2
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "data.yaml").write_text("did_bucket_num: 5\n")
    assert load_config(DataConfig, "configs/data.yaml").did_bucket_num == 5  # the caller's own copy wins


def test_storage_missing_table_names_the_absolute_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SchemaError, match=str(tmp_path / "rel")):
        Storage("rel").read_table("tables/none")
