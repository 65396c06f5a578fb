"""Integration: score table -> extend (both strategies) -> validation on the smoke data."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from app.config import load_config
from app.errors import ModelNotReady, SeedError
from app.extend.config import ExtendConfig
from app.extend.engine import extend_audience
from app.registry import Registry
from app.storage import Storage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cfg(request, scored_root) -> ExtendConfig:
    c = load_config(ExtendConfig, "configs/smoke/extend.yaml")
    c.scores = request.config.extend_scores_config
    return c


def _read(storage, rel):
    return pq.read_table(io.BytesIO(storage.read_bytes(rel)))


def test_score_table_is_registered_and_normalized(scored_root):
    storage = Storage(scored_root)
    version, info = Registry(storage).current_score_table()
    t = storage.read_table(f"scores/{version}")
    k = len(info["keywords"])
    assert t.num_rows == info["num_users"] > 1000
    norm = np.asarray(t.column("scores_norm").combine_chunks().flatten()).reshape(-1, k)
    raw = np.asarray(t.column("scores").combine_chunks().flatten()).reshape(-1, k)
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(norm * np.linalg.norm(raw, axis=1, keepdims=True), raw, atol=1e-5)
    assert storage.read_json(f"scores/{version}/keywords.json") == info["keywords"]
    assert sorted(storage.list_partitions(f"scores/{version}")) == ["did_bucket=0", "did_bucket=1"]


@pytest.mark.parametrize("strategy", ["din", "jsd"])
def test_extend_audience_writes_files_without_seeds(scored_root, cfg, strategy):
    storage = Storage(scored_root)
    logs = storage.read_table("tables/logs", columns=["did", "is_click", "keyword"]).to_pandas()
    clicks = logs[logs.is_click == 1]
    top_kw = clicks.keyword.value_counts().index[0]
    dids = sorted(set(clicks[clicks.keyword == top_kw].did))  # a coherent seed set: clickers of a keyword
    known = set(storage.read_table("tables/trainready", columns=["did"]).column("did").to_pylist())
    dids = [d for d in dids if d in known]
    assert len(dids) >= 150
    seeds = dids[:150] + dids[:10] + ["nobody-1", "nobody-2"]
    run = cfg.model_copy(update={"strategy": strategy, "size": 300})
    report = extend_audience(storage, seeds, run, f"jobs/test-{strategy}")
    assert report["seeds"] == {"submitted": 162, "found": 150, "unknown": 2, "duplicate": 10}
    aud = _read(storage, f"jobs/test-{strategy}/audience.parquet")
    assert aud.num_rows == 300 and aud.column_names == ["did", "score", "rank"]
    assert not set(aud.column("did").to_pylist()) & set(seeds)
    s = aud.column("score").to_numpy()
    assert np.all(np.diff(s) <= 0)
    assert storage.read_json(f"jobs/test-{strategy}/report.json")["audience_size"] == 300
    assert storage.read_bytes(f"jobs/test-{strategy}/audience.csv").startswith(b"\"did\",\"score\",\"rank\"")
    if strategy == "jsd":
        assert storage.exists(f"jobs/test-{strategy}/top_features.csv")
        assert storage.read_bytes(f"jobs/test-{strategy}/lookalike.png")[:4] == b"\x89PNG"
    else:
        assert report["clusters"]["k"] >= 1


def test_extend_errors(scored_root, cfg, tmp_path):
    with pytest.raises(SeedError, match="only 0"):
        extend_audience(Storage(scored_root), ["x", "y"], cfg, "jobs/bad")
    with pytest.raises(ModelNotReady):
        extend_audience(Storage(str(tmp_path / "empty")), ["x"], cfg, "jobs/none")


def test_validation_din_beats_random(scored_root, cfg):
    from app.extend.validate import run_validation

    report = run_validation(Storage(scored_root), cfg)
    rows = report["rows"]
    assert rows, "no keyword had enough pre-cut clickers"
    din = [r["sets"]["din"] for r in rows]
    best = max(din, key=lambda m: m["lift_ci95"][0])
    assert best["lift"] > 1 and best["lift_ci95"][0] > 1, din
    if Storage(scored_root).exists("raw/truth/model.json"):
        assert all("oracle" in r["sets"] for r in rows)
    md = Storage(scored_root).read_bytes(report["files"][1]).decode()
    assert "| keyword |" in md and "din" in md and "popularity" in md
