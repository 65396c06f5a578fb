"""Integration: generate -> dedupe -> sweep a small K grid -> register -> predict -> user features,
on one local Ray (the smoke configs)."""

import pytest

from app.banners import schema as S
from app.banners.commands import run_steps
from app.banners.config import BannerGenerateConfig, BannersConfig
from app.banners.model import load_current
from app.banners.synthetic import generate_banners
from app.config import load_config
from app.storage import Storage

pytestmark = pytest.mark.integration


def test_banner_clustering_end_to_end(ray_local, tmp_path):
    storage = Storage(str(tmp_path / "root"))
    gen = load_config(BannerGenerateConfig, "configs/banners/smoke/generate.yaml")
    planted = generate_banners(gen, storage)
    cfg = load_config(BannersConfig, "configs/banners/smoke/banners.yaml")
    out = run_steps(cfg, storage, ["dedupe", "sweep", "predict", "features"])

    dedupe = out["dedupe"]
    assert dedupe["quarantined"] == {k: v for k, v in planted["dirty_rows"].items() if v}
    assert dedupe["banners"] + dedupe["duplicate_rows"] == dedupe["rows_valid"]

    sweep = out["sweep"]
    assert sweep["chosen"]["k"] == gen.clusters  # the planted K, by the silhouette rule
    assert sweep["chosen"]["ari_truth"] >= 0.9
    assert [row["k"] for row in sweep["table"]] == cfg.sweep.k_grid
    version, model = load_current(storage)
    assert version == sweep["model_version"] and model.k == gen.clusters

    predict = out["predict"]
    assert predict["rows"] == predict["assigned"] == dedupe["banners"]
    assert sum(predict["cluster_sizes"]) == dedupe["banners"]

    features = out["features"]["features"]
    table = storage.read_table(S.T_USER_FEATURES)
    assert table.num_rows == gen.users == features["users"]
    assert features["features"] == 3 * gen.clusters == len(table.column_names) - 1
    analytics = out["features"]["analytics"]
    assert sum(r["images"] for r in analytics) == dedupe["banners"]
    clicks = sum(r["clicks"] for r in analytics)
    assert 0 < clicks < sum(r["impressions"] for r in analytics)
