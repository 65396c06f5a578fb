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


def test_score_table_is_registered_with_its_similarity_space(scored_root):
    from app.extend.kernel import l2_normalize
    from app.extend.scores import read_score_vectors, score_space

    storage = Storage(scored_root)
    version, info = Registry(storage).current_score_table()
    t = storage.read_table(f"scores/{version}")
    k = len(info["keywords"])
    assert t.num_rows == info["num_users"] > 1000 and "scores_norm" not in t.column_names
    raw = np.asarray(t.column("scores").combine_chunks().flatten()).reshape(-1, k)
    space = score_space(storage, version, k)
    assert space.transform == "unit_z" and space.users == t.num_rows
    np.testing.assert_allclose(space.mean, l2_normalize(raw).mean(0), rtol=1e-4, atol=1e-6)
    vecs = read_score_vectors(storage, version, t.column("did").to_numpy(zero_copy_only=False)[:50])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs, space.apply(raw[:50]), atol=1e-6)
    assert storage.read_json(f"scores/{version}/keywords.json") == info["keywords"]
    assert sorted(storage.list_partitions(f"scores/{version}")) == ["did_bucket=0", "did_bucket=1"]


def _clickers_of_top_keyword(storage) -> list[str]:
    """A coherent seed set: the train-ready users who clicked the most clicked keyword."""
    logs = storage.read_table("tables/logs", columns=["did", "is_click", "keyword"]).to_pandas()
    clicks = logs[logs.is_click == 1]
    top_kw = clicks.keyword.value_counts().index[0]
    dids = sorted(set(clicks[clicks.keyword == top_kw].did))
    known = set(storage.read_table("tables/trainready", columns=["did"]).column("did").to_pylist())
    return [d for d in dids if d in known]


@pytest.mark.parametrize("strategy", ["din", "jsd"])
def test_extend_audience_writes_files_without_seeds(scored_root, cfg, strategy):
    storage = Storage(scored_root)
    dids = _clickers_of_top_keyword(storage)
    assert len(dids) >= 150
    seeds = dids[:150] + dids[:10] + ["nobody-1", "nobody-2"]
    run = cfg.model_copy(update={"strategy": strategy, "size": 300})
    report = extend_audience(storage, seeds, run, f"jobs/test-{strategy}")
    assert report["seeds"] == {"submitted": 162, "found": 150, "unknown": 2, "duplicate": 10}
    spread = report["similarity_spread"]
    assert spread["n"] > 100 and spread["p10"] <= spread["p50"] <= spread["p90"]
    if strategy == "din":  # cosine in the population-scaled space discriminates
        assert spread["width_p10_p90"] > 0.1, spread
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


def test_audience_larger_than_the_pool_is_delivered_with_a_warning(scored_root, cfg):
    storage = Storage(scored_root)
    dids = storage.read_table("tables/trainready", columns=["did"]).column("did").to_pylist()
    seeds = _clickers_of_top_keyword(storage)[:100]
    run = cfg.model_copy(update={"strategy": "jsd", "size": len(dids) * 2})
    report = extend_audience(storage, seeds, run, "jobs/too-big")
    assert report["audience_size"] == report["eligible_users"] - 100 < report["requested_size"]
    assert any(f"requested an audience of {len(dids) * 2}" in w for w in report["warnings"])
    assert storage.read_json("jobs/too-big/report.json")["warnings"] == report["warnings"]


def _plant_future_users(root: str, keyword: str, cut_s: int, n: int = 150) -> list[str]:
    """Users seen only after the cut who click ``keyword`` a lot: what a leaky validation picks."""
    import pyarrow as pa

    storage = Storage(root)
    kw = storage.read_table("tables/keywords").to_pydict()
    kwi = kw["keyword_index"][kw["keyword"].index(keyword)]
    first = storage.list_files("tables/trainready", suffix=".parquet")[0]
    schema = pq.read_schema(first, filesystem=storage.fs)
    top = int(pc_max(storage.read_table("tables/trainready", columns=["did_index"]).column("did_index"))) + 1
    dids = [f"future-{i:04d}" for i in range(n)]
    day = cut_s + 86400
    rows = {
        "age": [3] * n, "gender": [1] * n, "did": dids, "did_index": list(range(top, top + n)),
        "interval_starting_time": [[day]] * n, "kwi": [[[kwi]]] * n,
        "kwi_show_counts": [[[6]]] * n, "kwi_click_counts": [[[6]]] * n,
    }
    table = pa.table({f.name: pa.array(rows[f.name], f.type) for f in schema if f.name in rows})
    pq.write_table(table, storage.path("tables/trainready/did_bucket=0/planted.parquet"), filesystem=storage.fs)
    logs = pa.table({"did": pa.array(dids * 6), "is_click": pa.array([1] * (6 * n), pa.int32()),
                     "keyword": pa.array([keyword] * (6 * n)),
                     "action_time_seconds": pa.array([day + 60] * (6 * n), pa.int64())})
    day_dir = "tables/logs/day=planted/did_bucket=0"
    storage.makedirs(day_dir)
    pq.write_table(logs, storage.path(day_dir, "planted.parquet"), filesystem=storage.fs)
    return dids


def pc_max(col):
    import pyarrow.compute as pc

    return pc.max(col).as_py()


def test_validation_lift_ignores_users_seen_only_after_the_cut(scored_root, cfg, tmp_path):
    """Planting post-cut-only heavy clickers must not move the validation: they are future users."""
    import shutil

    from app.extend.validate import epoch, run_validation

    vcfg = cfg.validation.model_copy(update={"num_keywords": 1, "extension_factors": [1, 5]})
    run = cfg.model_copy(update={"validation": vcfg})
    base = run_validation(Storage(scored_root), run.model_copy(
        update={"validation": vcfg.model_copy(update={"report_dir": "reports/val-base"})}))
    assert base["rows"], "no keyword had enough pre-cut clickers"
    keyword = base["keywords"][0]
    planted_root = str(tmp_path / "planted")
    shutil.copytree(scored_root, planted_root)
    future = _plant_future_users(planted_root, keyword, epoch(dt_date(base["cutting_date"])))
    Storage(planted_root).delete(f"scores/{base['score_table']}")  # made again, now with the planted users
    honest = run_validation(Storage(planted_root), run)
    assert honest["excluded_users"] == base["excluded_users"] + len(future)
    assert honest["eligible_users"] == base["eligible_users"]
    for a, b in zip(base["rows"], honest["rows"], strict=True):
        for name in a["sets"]:
            assert a["sets"][name]["clicks"] == b["sets"][name]["clicks"], name
            assert a["sets"][name].get("lift") == b["sets"][name].get("lift"), name
    # the control: letting every train-ready user in lets the future users move the figures
    leaky = run_validation(Storage(planted_root), run.model_copy(update={"eligible": "all"}))
    assert leaky["eligible_users"] == honest["eligible_users"] + honest["excluded_users"]
    assert leaky["excluded_users"] == 0
    moved = [(a["sets"][n]["clicks"], b["sets"][n]["clicks"]) for a, b in zip(honest["rows"], leaky["rows"],
                                                                             strict=True) for n in a["sets"]]
    assert any(x != y for x, y in moved), moved


def dt_date(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


def test_jsd_log_scale_ranks_generated_lookalikes_better_than_raw_counts(generated_root):
    """The property that made JSD fail on real data, on generated data: heavy-tailed counts. On the
    raw scale the heaviest users set the std and the centroid, and users with more of the seeds'
    behaviour are pushed away; on the log scale (distance_scale) they are not."""
    import pyarrow.compute as pc

    from app import constants as C
    from app.extend.config import JsdConfig
    from app.extend.jsd import distance_scale, load_features, select_features, weighted_distance
    from app.extend.validate import epoch, per_user_counts
    from app.train.metrics import auc

    storage = Storage(generated_root)
    cut = dt_date(storage.read_json("samples/default/stats.json")["cutting_date"])
    dids, x, names = load_features(storage, cut, active_only=True)
    logs = storage.read_table(C.T_LOGS, columns=[C.DID, C.IS_CLICK, C.KEYWORD, C.ACTION_TIME_SECONDS])
    t = logs.column(C.ACTION_TIME_SECONDS)
    before, after = logs.filter(pc.less(t, epoch(cut))), logs.filter(pc.greater_equal(t, epoch(cut)))
    rng = np.random.default_rng(0)
    gains = []
    for kw in ("tools", "pet"):
        pre, _ = per_user_counts(before, dids, kw)
        post, _ = per_user_counts(after, dids, kw)
        seeds = rng.choice(np.flatnonzero(pre > 0), 100, replace=False)
        rest = np.setdiff1d(np.arange(dids.size), seeds)
        fw = select_features(x[seeds], x, names, JsdConfig())
        sel = fw.selected

        def rank(values, rest=rest, seeds=seeds, weights=fw.weights):
            sd = values.std(0)
            sd[sd == 0] = 1
            z = (values - values.mean(0)) / sd
            return -weighted_distance(z[rest], z[seeds].mean(0), weights)

        raw = auc(post[rest] > 0, rank(x[:, sel].astype(np.float64)))
        logged = auc(post[rest] > 0, rank(distance_scale(x[:, sel], [names[j] for j in sel])))
        gains.append(logged - raw)
        assert logged > 0.8, (kw, raw, logged)
    assert np.mean(gains) > 0.05, gains
