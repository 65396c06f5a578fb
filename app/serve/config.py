"""Config of the lookalike service (the ``args`` of ``configs/serve.yaml``).

API keys come from the config (``api_keys: {key: owner}``) and from ``$LOOKALIKE_API_KEYS``
(``key1:owner1,key2:owner2``); the environment wins for a key present in both. Jobs belong to the
*owner*, so two keys of one owner (a rotation) see the same jobs, and keys of different owners never
see each other's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from app.config import StrictModel
from app.errors import ConfigError

API_KEYS_ENV = "LOOKALIKE_API_KEYS"
_KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{8,256}$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


class ServeConfig(StrictModel):
    #: storage root; None = ``$LOOKALIKE_ROOT`` or the default (app.settings)
    root: str | None = None
    #: API key -> owner; merged with ``$LOOKALIKE_API_KEYS``
    api_keys: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: bytes of one extend-audience request body (all seed files together)
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: bytes of any other request body (e.g. ``POST /score``)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_seed_files: int = Field(16, ge=1)
    #: uploads buffered and parsed at once per ingress replica (bounds memory: this x max_upload_bytes)
    max_concurrent_uploads: int = Field(4, ge=1)
    #: distinct seeds needed (audience tools ask for at least 100)
    min_seeds: int = Field(100, ge=1)
    max_seeds: int = Field(1_000_000, ge=1)
    #: largest absolute audience size a request may ask for
    max_audience_size: int = Field(50_000_000, ge=1)
    #: largest extension percentage (audience = percentage/100 x seeds)
    max_percentage: float = Field(100_000.0, gt=0)
    #: extension jobs running at once (one worker actor each)
    max_concurrent_jobs: int = Field(1, ge=1, le=64)
    #: attempts per job when its worker dies or fails unexpectedly; then Failed with the reason
    max_job_attempts: int = Field(3, ge=1, le=20)
    #: CPUs each worker actor reserves (the engine's own Ray tasks reserve theirs)
    worker_num_cpus: float = Field(0.0, ge=0)
    #: the default (5) collapses under 100 concurrent clients (docs/operations.md)
    max_ongoing_requests: int = Field(100, ge=1)
    #: CPUs each replica reserves (0: the proxy-bound replicas must fit a 2-core machine)
    replica_num_cpus: float = Field(0.0, ge=0)
    access_log: bool = False
    #: ``POST /score`` limits and batching
    max_score_dids: int = Field(10_000, ge=1)
    score_max_batch_size: int = Field(32, ge=1)
    score_batch_wait_s: float = Field(0.002, ge=0)
    #: answer /score from the current model's score table when it has every did (no DIN call,
    #: no hop to the scorer; exact while the table was made by the current model)
    score_from_table: bool = True
    #: seconds between registry checks for a new model / score table
    score_table_refresh_s: float = Field(10.0, gt=0)
    #: default extension options (keys of app.extend.config.ExtendConfig); requests override some
    extend: dict[str, Any] = Field(default_factory=dict)
    #: injectable pieces, as ``module:attribute`` import paths (tests pass fakes)
    engine: str = "app.extend.engine:extend_audience"
    extend_config_class: str = "app.extend.config:ExtendConfig"
    scorer_loader: str = "app.serve.scoring:load_din_scorer"
    #: samples run whose stats.json gives the history window the scorer builds
    samples_run: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    #: seconds between scans for Queued jobs the queue does not hold (a lost submit call)
    rescan_interval_s: float = Field(30.0, gt=0)
    #: seconds between attempts to load the scorer while no model is ready
    scorer_retry_s: float = Field(30.0, ge=0)
    #: seconds between progress writes of a running job
    progress_interval_s: float = Field(0.5, ge=0)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, owner in v.items():
            check_key(key, owner)
        return v

    @field_validator("engine", "extend_config_class", "scorer_loader")
    @classmethod
    def _import_path(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(f"{v!r} is not an import path of the form 'package.module:name'")
        return v

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_seeds > self.max_seeds:
            raise ValueError(f"min_seeds {self.min_seeds} is above max_seeds {self.max_seeds}")
        return self


def check_key(key: str, owner: str) -> None:
    """Refuse keys too short (or with odd characters) and owners that are not plain names."""
    if not _KEY_RE.match(key):
        raise ValueError(
            f"API key {key[:4]!r}... must be 8-256 characters of letters, digits and ._~+/=-"
        )
    if not _OWNER_RE.match(owner):
        raise ValueError(f"API key owner {owner!r} must be 1-64 characters of letters, digits and ._@-")


def parse_api_keys_env(text: str) -> dict[str, str]:
    """``key1:owner1,key2:owner2`` -> {key: owner}; ConfigError names a bad entry."""
    out: dict[str, str] = {}
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, owner = item.rpartition(":")
        if not sep or not key or not owner:
            raise ConfigError(f"${API_KEYS_ENV} entry {i + 1} is not of the form key:owner")
        try:
            check_key(key.strip(), owner.strip())
        except ValueError as exc:
            raise ConfigError(f"${API_KEYS_ENV} entry {i + 1}: {exc}") from exc
        out[key.strip()] = owner.strip()
    return out


def resolve_api_keys(cfg: ServeConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """All keys the service accepts; ConfigError when there is none (the service never runs open)."""
    env = os.environ if environ is None else environ
    keys = dict(cfg.api_keys)
    keys.update(parse_api_keys_env(env.get(API_KEYS_ENV, "")))
    if not keys:
        raise ConfigError(f"no API keys: set api_keys in the serve config or ${API_KEYS_ENV}")
    return keys
