"""Config of the data pipeline (``configs/data.yaml``), one section per stage."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator, model_validator

from app import constants as C
from app.config import StrictModel

#: how a raw table is stored; ``auto`` = from the file names (README, "Raw input")
RawFormat = Literal["auto", "parquet", "csv"]


class RawTable(StrictModel):
    """One raw input table: a Parquet or CSV file, or a directory of them."""

    path: str = Field(min_length=1, description="root-relative path, absolute local path, or a URI (s3://...)")
    format: RawFormat = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter")


class RawTables(StrictModel):
    """Where the raw inputs are. Each table is a path (format inferred from the file names) or a
    mapping ``{path, format, delimiter}``; a mapping without ``path`` keeps the default path, so
    ``--set raw.showlog.format=csv`` works on its own."""

    persona: RawTable = RawTable(path=C.RAW_PERSONA)
    showlog: RawTable = RawTable(path=C.RAW_SHOWLOG)
    clicklog: RawTable = RawTable(path=C.RAW_CLICKLOG)
    keyword: RawTable = RawTable(path=C.RAW_KEYWORD)
    slot: RawTable = RawTable(path=C.RAW_SLOT)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None:
                continue  # refused as an unknown key
            if isinstance(value, str):
                out[name] = {"path": value}
            elif isinstance(value, dict) and "path" not in value:
                out[name] = {"path": field.default.path, **value}
        return out


class KeywordsConfig(StrictModel):
    #: keep keywords with at least this fraction of all (valid) impressions; 0 keeps all
    keyword_threshold: float = Field(0.0, ge=0.0, lt=1.0)


class TrainReadyConfig(StrictModel):
    """User filters (replace the spec's hard-coded rule)."""

    min_traffic: int = Field(1, ge=0, description="minimum shows in the whole window")
    max_traffic: int | None = Field(None, ge=1, description="maximum shows (drops bots); None = no cap")
    min_active_intervals: int = Field(1, ge=1)


class SamplesConfig(StrictModel):
    run: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    cutting_date: dt.date | None = Field(
        None, description="target intervals starting on/after this date are test; None = last 3 days"
    )
    length: int = Field(7, ge=1, description="history window: previous intervals per sample")
    hist_len: int = Field(32, ge=1, description="distinct history keywords kept per sample")
    neg_sample_rate: float = Field(1.0, gt=0.0, le=1.0, description="fraction of negatives kept")
    seed: int = 0
    shards: int = Field(4, ge=1, description="TFRecord shards per split (per did_bucket group)")


class DataConfig(StrictModel):
    raw: RawTables = RawTables()
    did_bucket_num: int = Field(4, ge=1, le=1024)
    interval_time_in_seconds: int = Field(86400, ge=1)
    #: optional day range (inclusive) to process; None = every day found in the raw logs
    start_day: dt.date | None = None
    end_day: dt.date | None = None
    keywords: KeywordsConfig = KeywordsConfig()
    trainready: TrainReadyConfig = TrainReadyConfig()
    samples: SamplesConfig = SamplesConfig()

    @field_validator("start_day", "end_day", mode="before")
    @classmethod
    def _day(cls, v):
        return v or None

    @model_validator(mode="after")
    def _range(self):
        if self.start_day and self.end_day and self.start_day > self.end_day:
            raise ValueError(f"start_day {self.start_day} is after end_day {self.end_day}")
        return self
