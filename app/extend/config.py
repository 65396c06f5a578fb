"""Config of the score table and the audience-extension job (``configs/extend.yaml``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from app.config import StrictModel


class ScoresConfig(StrictModel):
    """Score-table generation (Ray Data batch inference with an actor pool)."""

    model_name: str = "din"
    #: ``module:function(storage, name) -> (version, scorer)``; tests pass a stand-in here
    loader: str = "app.train.export:load_current_scorer"
    samples_run: str = Field("default", description="samples/<run>/stats.json gives the history window")
    batch_rows: int = Field(4096, ge=1, description="users per map_batches call")
    num_actors: int | None = Field(None, ge=1, description="scoring actors (each loads the model once); "
                                   "default: one per GPU, else one per cpus_per_actor CPUs of the cluster")
    cpus_per_actor: float = Field(2.0, gt=0, description="CPUs reserved by, and TensorFlow threads of, a CPU actor")
    use_gpu: Literal["auto", "yes", "no"] = "auto"


class JsdConfig(StrictModel):
    """Seed 001's feature strategy."""

    threshold: float = Field(0.05, ge=0.0, le=1.0, description="minimum JS divergence (base 2)")
    max_features: int = Field(20, ge=1)
    bins: int = Field(20, ge=2, description="histogram bins of a continuous feature")
    population_sample: int = Field(20000, ge=100)
    histogram_features: int = Field(6, ge=1, description="top features drawn in lookalike.png")
    recommended_seeds: tuple[int, int] = (5000, 50000)


class ValidationConfig(StrictModel):
    """Honest validation: seeds from clicks before the cutting date, outcomes after it."""

    cutting_date: dt.date | None = Field(None, description="None = the samples' cutting_date")
    keywords: list[str] | None = Field(None, description="None = the most clicked keywords")
    num_keywords: int = Field(3, ge=1)
    seed_sizes: list[int] = [100, 1000, 10000]
    #: independent seed draws per (keyword, seed size), pooled: more draws, narrower intervals
    repeats: int = Field(1, ge=1)
    extension_factors: list[int] = [1, 3, 5, 9]
    strategies: list[Literal["din", "jsd"]] = ["din", "jsd"]
    bootstrap: int = Field(500, ge=50)
    min_seeds: int = Field(20, ge=1, description="skip a (keyword, size) with fewer eligible seeds")
    report_dir: str = "reports/extend_validation"


class ExtendConfig(StrictModel):
    """The extension job: seed reader -> clustering -> similarity -> selection (spec 000)."""

    strategy: Literal["din", "jsd"] = "din"
    #: audience size M: absolute, or as a percentage of the found seeds (500 = 5x the seeds)
    size: int | None = Field(None, ge=1)
    percentage: float | None = Field(None, gt=0)
    default_percentage: float = Field(500.0, gt=0, description="used when neither size nor percentage")
    top_n: int = Field(10, ge=1, description="similarities averaged per user")
    max_clusters: int = Field(8, ge=1)
    min_silhouette: float = Field(0.2, description="below it the seed set is called incoherent")
    max_coherent_clusters: int = Field(5, ge=1, description="more clusters than this: incoherent")
    cluster_sample: int = Field(5000, ge=10, description="seeds used for k-means / silhouette")
    min_found_seeds: int = Field(1, ge=1, description="fewer found seeds is a SeedError")
    max_seeds: int = Field(1_000_000, ge=1, description="more input lines is a SeedError")
    recommended_seeds: tuple[int, int] = (100, 50000)
    score_table: str | None = Field(None, description="score-table version; None = current")
    #: one point in time for everything the job reads: a score table made from history before it
    #: (found or generated), JSD features counted before it, and the eligible pool. None = now.
    as_of: dt.date | None = Field(None, description="use only what was known before this date")
    #: who may be in an audience (and, in validation, in the random and popularity baselines):
    #: ``active_before`` = users with at least one impression before ``as_of`` (a user seen only
    #: after it is future information); ``all`` = every train-ready user (leaky; for comparison)
    eligible: Literal["active_before", "all"] = "active_before"
    backend: Literal["auto", "numpy", "tf", "torch"] = "auto"
    user_block: int = Field(512, ge=1, description="users per GEMM tile (numpy backend)")
    seed_block: int = Field(1024, ge=1, description="seeds per GEMM tile (numpy backend)")
    batch_rows: int = Field(65536, ge=1, description="users per Ray Data batch")
    num_actors: int = Field(2, ge=1, description="similarity actors (seeds fetched once per actor)")
    distribution_sample: int = Field(2000, ge=0, description="scores sampled per batch for the report")
    seed: int = 0
    scores: ScoresConfig = ScoresConfig()
    jsd: JsdConfig = JsdConfig()
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _one_size(self):
        if self.size is not None and self.percentage is not None:
            raise ValueError(f"give size ({self.size}) or percentage ({self.percentage}), not both")
        lo, hi = self.recommended_seeds
        if lo > hi:
            raise ValueError(f"recommended_seeds {self.recommended_seeds} is not a range")
        return self
