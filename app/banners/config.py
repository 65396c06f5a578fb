"""Configs of the banner-clustering stage: the generator's and the pipeline's (one model each)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from app.banners import schema as S
from app.config import StrictModel


class BannerGenerateConfig(StrictModel):
    """Synthetic banners with planted clusters and advertisers, plus user events (app/banners/synthetic.py).

    Defaults follow spec 002's ratios: 11 days of embeddings, 16.5M rows for 8.4M unique banners
    (``mean_days_per_banner`` = 1.96).
    """

    banners: int = Field(20_000, ge=10, description="unique banners")
    dim: int = Field(32, ge=2)
    clusters: int = Field(8, ge=1, description="planted clusters")
    advertisers: int = Field(60, ge=1)
    max_clusters_per_advertiser: int = Field(3, ge=1, description="each advertiser spreads over 1..this clusters")
    days: int = Field(11, ge=1)
    start_day: dt.date = dt.date(2026, 1, 1)
    mean_days_per_banner: float = Field(1.96, ge=1.0)
    centre_scale: float = Field(2.0, gt=0, description="std of the planted centres' coordinates")
    cluster_std: float = Field(1.0, gt=0, description="std of a banner around its centre, per coordinate")
    conflict_rate: float = Field(0.01, ge=0, le=1, description="banners seen twice+ whose later rows carry another vector")
    wrong_dim_rate: float = Field(0.002, ge=0, le=1)
    nan_rate: float = Field(0.002, ge=0, le=1)
    missing_id_rate: float = Field(0.002, ge=0, le=1)
    row_group_rows: int = Field(1 << 17, ge=1000)
    users: int = Field(2_000, ge=0, description="users with banner events (0: no events)")
    requests_per_user: float = Field(20.0, gt=0)
    impression_rate: float = Field(0.7, ge=0, le=1, description="share of requests that become impressions")
    ctr_min: float = Field(0.01, ge=0, le=1, description="planted per-cluster CTRs are spread over [min, max]")
    ctr_max: float = Field(0.08, ge=0, le=1)
    seed: int = 7


class SweepConfig(StrictModel):
    """PCA + k-means over a K grid (app/banners/sweep.py)."""

    k_grid: list[int] = Field(default_factory=lambda: [4, 6, 8, 10, 12], min_length=1)
    fit_rows: int = Field(200_000, ge=10, description="rows sampled from the deduped table to fit on")
    pca_components: int | None = Field(None, ge=1, description="null: no PCA")
    algorithm: Literal["kmeans", "minibatch"] = "kmeans"
    n_init: int = Field(3, ge=1)
    max_iter: int = Field(100, ge=1)
    silhouette_sample: int = Field(4000, ge=10, description="rows of the sampled silhouette (O(n^2))")
    #: the rule: the K with the best ``select_by`` (max; heuristic3 min); within ``tolerance`` of
    #: it, the smallest K (fewer features per user, a model that is cheaper to use)
    select_by: Literal["silhouette", "recall", "recall_sum", "heuristic1", "heuristic2", "heuristic3"] = "silhouette"
    tolerance: float = Field(0.0, ge=0)
    cpus_per_task: float = Field(1.0, gt=0)
    seed: int = 0

    @field_validator("k_grid")
    @classmethod
    def _grid(cls, grid: list[int]) -> list[int]:
        if any(k < 2 for k in grid) or len(set(grid)) != len(grid):
            raise ValueError(f"k_grid needs distinct values >= 2, got {grid}")
        return sorted(grid)


class FeaturesConfig(StrictModel):
    """User cluster-count features and per-cluster analytics (app/banners/features.py)."""

    users: str = Field("tables/persona", description="table keyed by did the features join to")
    as_of: dt.date | None = Field(None, description="events before this day count; null: the day after the last event")
    window_days: int = Field(30, ge=1)
    levels: list[Literal["request", "impression", "click"]] = Field(default_factory=lambda: list(S.LEVELS), min_length=1)


class BannersConfig(StrictModel):
    """The whole stage: where the inputs are, and each step's settings."""

    banners: str = Field(S.RAW_BANNERS, description="raw embedding table: root-relative path, absolute path or URI")
    events: str = Field(S.RAW_EVENTS, description="raw user events: did, banner_id, event, day")
    truth: str | None = Field(S.RAW_TRUTH, description="planted clusters (banner_id, true_cluster), if any: ARI per K")
    dim: int = Field(32, ge=1, description="embedding dimension; other lengths are quarantined")
    buckets: int = Field(8, ge=1, description="banner_id hash buckets of the dedupe shuffle")
    sweep: SweepConfig = SweepConfig()
    features: FeaturesConfig = FeaturesConfig()
    predict_batch_rows: int = Field(65_536, ge=1)
