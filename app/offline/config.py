"""Typed configs of the offline jobs (spec 003), one per job, with the spec's option names in
snake case (``minItemsPerUser`` -> ``min_items_per_user``).

The spec keeps each job's options in Zookeeper under ``/all_clients/<client>/offline/<job>``; here
they are a YAML file per job (``configs/offline/<job>.yaml``) with ``--set`` overrides, and the
spec's ``inputPath``/``outputPath`` are paths relative to the storage root (or URIs).

Days. The spec's ``startDay``/``days`` select the daily action folders a model reads: ``days``
days ending at ``startDay``. Here ``start_day`` is a date (``YYYY-MM-DD``) or null for the newest
day the client has, and ``days`` counts back from it.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from app.config import StrictModel

#: root-relative homes of the grouped actions and of every offline model
ACTIONS_TABLE = "offline/actions"
MODELS_DIR = "offline/models"


class ActionsConfig(StrictModel):
    """``offline actions``: raw JSON action lines of one day -> ``<output_path_dir>/client=C/day=D``.

    ``input_path_pattern``: ``%y`` (four-digit year), ``%m``, ``%d`` are replaced by the day's
    date, then ``*``/``?`` match file and folder names (``raw/actions/actions.%y/%m%d/*/*``).
    ``input_date_string``: the day to process, ``YYYYMMDD`` (the spec's script) or ``YYYY-MM-DD``.
    """

    input_path_pattern: str = "raw/actions/actions.%y/%m%d/*/*"
    input_date_string: str = "20150101"
    output_path_dir: str = ACTIONS_TABLE
    gzip_output: bool = Field(False, description="gzip-compressed Parquet (else uncompressed, fastest)")
    bytes_per_task: int = Field(64 << 20, ge=1024, description="bytes of plain input each Ray task parses")

    @field_validator("input_date_string", mode="before")
    @classmethod
    def _date(cls, v: object) -> str:
        text = str(v)  # ``--set input_date_string=20150102`` arrives as an int
        parse_day(text)
        return text


def parse_day(text: str) -> dt.date:
    """``YYYYMMDD`` or ``YYYY-MM-DD``; a ValueError names the text otherwise."""
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a day (YYYYMMDD or YYYY-MM-DD): {text!r}")


class ModelJobConfig(StrictModel):
    """What every model job shares: whose actions, which days, where the model goes."""

    client: str = Field("client1", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    input_path: str = ACTIONS_TABLE
    output_path: str = MODELS_DIR
    start_day: dt.date | None = Field(None, description="last day read; null = the client's newest day")
    days: int = Field(1, ge=1, description="days read, ending at start_day")
    activate: bool = Field(True, description="make the new model version current in the registry")
    seed: int = 0


class MatrixFactorizationConfig(ModelJobConfig):
    """``offline matrix-factorization``: implicit ALS (Hu, Koren, Volinsky 2008) via ``implicit``."""

    rank: int = Field(30, ge=1)
    lambda_: float = Field(0.01, ge=0, alias="lambda", description="regularization")
    alpha: float = Field(1.0, gt=0, description="confidence = 1 + alpha * value")
    iterations: int = Field(5, ge=1)
    top_n: int = Field(10, ge=1, description="recommendations kept per user")
    exclude_seen: bool = True
    users_per_task: int = Field(50_000, ge=1, description="users each Ray scoring task ranks")
    threads: int = Field(0, ge=0, description="ALS training threads (0 = the CPUs Ray grants the task)")

    model_config = {**ModelJobConfig.model_config, "populate_by_name": True}


class SimilarItemsConfig(ModelJobConfig):
    """``offline similar-items``: item-item cosine over users, exact or DIMSUM-sampled."""

    item_type: int = Field(-1, description="only actions of this type; -1 = every type")
    limit: int = Field(100, ge=1, description="similar items kept per item")
    min_items_per_user: int = Field(0, ge=0)
    min_users_per_item: int = Field(0, ge=0)
    max_users_per_item: int = Field(2_000_000, ge=1,
                                    description="users with more items than this are dropped (bot filter)")
    dimsum_threshold: float = Field(0.1, ge=0)
    sample: float = Field(1.0, gt=0, le=1, description="fraction of actions used")
    method: Literal["auto", "exact", "dimsum"] = "auto"
    exact_max_items: int = Field(20_000, ge=1, description="auto: exact up to this many items")
    measure_error_max_items: int = Field(20_000, ge=0,
                                         description="DIMSUM runs also compute exact to report the error, up to this many items")
    users_per_task: int = Field(100_000, ge=1)


class SessionItemsConfig(ModelJobConfig):
    """``offline session-items``: each user's actions cut into sessions (item2vec's sentences)."""

    max_intra_session_gap_secs: int = Field(-1, ge=-1, description="-1 = one session per user")
    min_actions_per_user: int = Field(0, ge=0)
    max_actions_per_user: int = Field(100_000, ge=1)
    min_session_items: int = Field(2, ge=1, description="shorter sessions teach word2vec nothing")


class Word2VecConfig(ModelJobConfig):
    """``offline word2vec``: item vectors from sessions (gensim skip-gram) and nearest items.
    It reads a ``session-items`` version, so ``start_day``/``days`` are not used."""

    input_path: str = MODELS_DIR  # where the session-items versions are
    source_version: str | None = Field(None, description="session-items version read; null = the current one")
    min_word_count: int = Field(50, ge=1)
    vector_size: int = Field(200, ge=1)
    window: int = Field(5, ge=1)
    epochs: int = Field(5, ge=1)
    negative: int = Field(5, ge=0)
    sg: bool = Field(True, description="skip-gram (else CBOW)")
    workers: int = Field(0, ge=0, description="gensim threads (0 = the CPUs Ray grants the task)")
    top_n: int = Field(20, ge=1, description="nearest items kept per item")


class ItemMetaConfig(ModelJobConfig):
    """Jobs that need item metadata (the spec reads it over JDBC from the Seldon database): a
    Parquet or CSV table with ``itemid`` and the attribute column, root-relative, absolute or URI."""

    items_path: str = "raw/items"
    min_actions_per_user: int = Field(0, ge=0)


class ClusterByDimensionConfig(ItemMetaConfig):
    """``offline cluster-by-dimension``: users in the dimensions they use more than average."""

    dimension_attr: str = "dimension"
    delta: float = Field(0.1, ge=0, description="min excess of a user's share of a dimension over the mean share")
    min_cluster_size: int = Field(200, ge=1)


class TagAffinityConfig(ItemMetaConfig):
    """``offline tag-affinity``: users and the tags they use more than average."""

    tag_attr: str = "tags"
    tag_separator: str = ","
    min_tag_count: int = Field(10, ge=1)
    min_pc_increase: float = Field(0.2, ge=0, description="min (user share - mean share) / mean share")
    tag_filter_path: str | None = Field(None, description="text file, one tag a line: keep only these")


class BasketAnalysisConfig(ModelJobConfig):
    """``offline basket-analysis``: add/remove-from-basket events -> one basket per session."""

    max_intra_session_gap_secs: int = Field(3600, ge=-1)
    min_actions_per_user: int = Field(0, ge=0)
    max_actions_per_user: int = Field(100_000, ge=1)
    add_to_basket_type: int = 1
    remove_from_basket_type: int = 2


class FpGrowthConfig(ModelJobConfig):
    """``offline fpgrowth``: frequent item sets (FP-growth, mlxtend) and rules ``itemset -> item``.
    It reads a ``basket-analysis`` version, so ``start_day``/``days`` are not used."""

    input_path: str = MODELS_DIR  # where the basket-analysis versions are
    source_version: str | None = Field(None, description="basket-analysis version read; null = the current one")
    min_support: float = Field(0.01, gt=0, le=1)
    min_confidence: float = Field(0.2, ge=0, le=1)
    min_interest: float = Field(0.1, description="confidence - support of the consequent")
    min_lift: float = Field(0.0, ge=0)
    min_item_set_freq: int = Field(0, ge=0, description="min absolute count of the rule's item set")
    max_item_set_size: int = Field(4, ge=2)
