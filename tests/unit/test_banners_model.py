"""Sweep pieces without Ray (one K fitted in-process), K selection, PCA/predict round trip, registry."""

import numpy as np
import pyarrow as pa
import pytest

from app.banners import schema as S
from app.banners.config import BannerGenerateConfig, BannersConfig, SweepConfig
from app.banners.model import ClusterModel, load_current, register_model
from app.banners.predict import assign_batch, source_name
from app.banners.sweep import fit_one_k, fit_pca, metric_table, select_k
from app.banners.synthetic import plant_banners
from app.config import validate
from app.errors import ConfigError, ModelNotReady


def _planted(seed=1, clusters=5, banners=1500, dim=12):
    cfg = BannerGenerateConfig(banners=banners, dim=dim, clusters=clusters, advertisers=25, centre_scale=2.5, seed=seed)
    return plant_banners(cfg, np.random.default_rng(seed))


@pytest.mark.parametrize("values, select_by, tolerance, chosen", [
    ({4: 0.30, 6: 0.50, 8: 0.49}, "silhouette", 0.0, 6),
    ({4: 0.30, 6: 0.50, 8: 0.49}, "silhouette", 0.2, 4),  # within 0.2 of the best: the smallest K
    ({4: 0.9, 6: float("nan"), 8: 0.1}, "recall", 0.0, 4),
    ({4: 3.0, 6: 1.0, 8: 2.0}, "heuristic3", 0.0, 6),  # a distance: lowest wins
])
def test_select_k(values, select_by, tolerance, chosen):
    rows = [{"k": k, select_by: v} for k, v in values.items()]
    k, rule = select_k(rows, select_by, tolerance)
    assert k == chosen and select_by in rule


def test_bad_k_grid_is_refused():
    with pytest.raises(ConfigError, match="k_grid"):
        validate(SweepConfig, {"k_grid": [1, 4]})
    assert validate(SweepConfig, {"k_grid": [8, 4]}).k_grid == [4, 8]


def test_sweep_finds_the_planted_k_with_ari_at_least_0_9():
    from sklearn.metrics import adjusted_rand_score

    planted = _planted()
    params = SweepConfig(n_init=2, silhouette_sample=800).model_dump(mode="json")
    rows = [fit_one_k(planted["vectors"], planted["advertiser"], k, params) for k in (3, 5, 7)]
    k, _ = select_k(rows, "silhouette", 0.0)
    assert k == 5
    best = next(r for r in rows if r["k"] == k)
    assert adjusted_rand_score(planted["cluster"], best["labels"]) >= 0.9
    assert {"recall", "recall_sum", "heuristic1", "heuristic2", "heuristic3", "fit_seconds", "peak_mib"} <= set(best)
    table = metric_table(rows, chosen=k)
    assert "| 5 * |" in table and table.count("\n") == 4


def test_pca_keeps_reported_variance_and_round_trips_through_bytes():
    planted = _planted(dim=20)
    x = planted["vectors"]
    mean, comps, kept = fit_pca(x, 4, seed=0)
    assert comps.shape == (4, 20) and 0.5 < kept <= 1.0
    z = (x - mean) @ comps.T
    from sklearn.cluster import KMeans

    km = KMeans(5, n_init=2, random_state=0).fit(z)
    model = ClusterModel(km.cluster_centers_.astype(np.float32), 20, mean, comps)
    again = ClusterModel.from_bytes(model.to_bytes())
    labels, dist = again.assign(x)
    assert (labels == km.labels_).mean() > 0.999
    assert np.allclose(dist, np.linalg.norm(z - km.cluster_centers_[labels], axis=1), atol=1e-3)
    assert fit_pca(x, None, 0) == (None, None, 1.0)


def test_register_then_load_current(storage):
    with pytest.raises(ModelNotReady):
        load_current(storage)
    model = ClusterModel(np.eye(3, dtype=np.float32), 3)
    version = register_model(storage, model, {"chosen": {"k": 3}}, BannersConfig(dim=3))
    got_version, got = load_current(storage)
    assert got_version == version and np.array_equal(got.centres, model.centres) and got.pca_components is None
    assert storage.exists(f"models/{S.MODEL_NAME}/{version}/config.yaml")


def test_source_names_partition_what_was_assigned():
    assert source_name("tables/banners") == "banners"
    assert source_name("raw/banners/part-011.parquet") == "raw_banners_part-011.parquet"


def test_assign_batch_marks_unusable_rows():
    model = ClusterModel(np.array([[0.0, 0.0], [10.0, 10.0]], dtype=np.float32), 2)
    batch = pa.table({S.BANNER_ID: ["a", "b", "c", None],
                      S.EMBEDDING: pa.array([[9.0, 9.0], [1.0], [0.0, float("nan")], [1.0, 1.0]],
                                            pa.list_(pa.float32()))})
    out = assign_batch(batch, model.to_bytes(), 2).to_pydict()
    assert out[S.CLUSTER_ID] == [1, -1, -1, -1]
    assert out[S.REASON] == [None, S.WRONG_DIMENSION, S.NOT_FINITE, S.MISSING_ID]
    assert out[S.DISTANCE][0] == pytest.approx(np.sqrt(2)) and out[S.DISTANCE][1] is None
