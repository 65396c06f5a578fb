"""Config of the lookalike service (the ``args`` of ``configs/serve.yaml``).

API keys come from ``$LOOKALIKE_API_KEYS`` (``key1:owner1,key2:owner2``) or, when that is unset,
from the config (``api_keys: {key: owner}``): the environment *replaces* the file's keys, it never
adds to them. The published development key (:data:`DEV_KEY`, printed in the docs) is accepted
only with ``development: true``, only when no other key is configured, and only on a loopback
host; listed anywhere as a real key it is refused. Jobs belong to the *owner*, so two keys of one
owner (a rotation) see the same jobs, and keys of different owners never see each other's.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from app.config import StrictModel
from app.errors import ConfigError

API_KEYS_ENV = "LOOKALIKE_API_KEYS"
#: the development key the docs print; it works only in development mode (see resolve_api_keys)
DEV_KEY = "dev-key-change-me"
DEV_OWNER = "demo"
_KEY_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{8,256}$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MiB = 1024 * 1024


class PerKeyLimits(StrictModel):
    """What one API key owner may hold at once (so one key cannot starve the others)."""

    #: uploads of one owner in flight at once per ingress replica (429 with Retry-After beyond)
    max_uploads: int = Field(2, ge=1)
    #: Queued + Running jobs of one owner (429 with Retry-After beyond)
    max_queued_jobs: int = Field(20, ge=1)


class JobWatch(StrictModel):
    """How the queue watches a running job attempt."""

    #: longest wall time of one attempt; past it the worker is stopped and the job Failed (no retry)
    timeout_s: float = Field(3600.0, gt=0)
    #: the worker writes ``heartbeat_at`` into status.json this often
    heartbeat_s: float = Field(5.0, gt=0)
    #: no heartbeat for this long: the worker is stopped and the attempt retried (or Failed)
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    #: an attempt whose worker has not begun (no first heartbeat) this long: the same
    start_timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.heartbeat_timeout_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"heartbeat_timeout_s {self.heartbeat_timeout_s} must be at least twice heartbeat_s {self.heartbeat_s}"
            )
        return self


class Retention(StrictModel):
    """What the queue (every ``prune_interval_s``) and ``python -m app serve prune`` delete.
    Ages count from the time a job became final; null keeps for ever."""

    #: seeds.txt of Finished/Failed jobs (the uploaded user ids)
    seeds_after_s: float | None = Field(7 * 86400.0, ge=0)
    #: whole Finished/Failed jobs: status, audience files, report
    jobs_after_s: float | None = Field(None, ge=0)
    #: job folders without a status (a crash during a submit), counted from their request.json
    incomplete_after_s: float | None = Field(86400.0, ge=0)
    prune_interval_s: float = Field(3600.0, gt=0)


class ServeConfig(StrictModel):
    #: storage root; None = ``$LOOKALIKE_ROOT`` or the default (app.settings)
    root: str | None = None
    #: API key -> owner; ``$LOOKALIKE_API_KEYS``, when set, replaces these
    api_keys: dict[str, str] = Field(default_factory=dict)
    #: accept the published development key when no other key is set (loopback hosts only)
    development: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: bytes of one extend-audience request body (all seed files together)
    max_upload_bytes: int = Field(32 * MiB, ge=1024)
    #: bytes of any other request body (e.g. ``POST /score``: 10,000 dids take about 0.7 MB)
    max_body_bytes: int = Field(1 * MiB, ge=1024)
    #: a body must arrive within ``body_timeout_s`` plus one second per ``body_min_rate`` bytes
    #: received (HTTP 408 beyond), so a client trickling bytes holds nothing for long
    body_timeout_s: float = Field(10.0, gt=0)
    body_min_rate: int = Field(64 * 1024, ge=1)
    max_seed_files: int = Field(16, ge=1)
    #: uploads per ingress replica between their first body byte and their stored job (503 with
    #: Retry-After beyond, at once); bounds the replica's memory: see docs/serve.md
    max_concurrent_uploads: int = Field(4, ge=1)
    per_key: PerKeyLimits = Field(default_factory=PerKeyLimits)
    #: seconds the ingress waits for the job queue before answering 503 with Retry-After
    queue_timeout_s: float = Field(5.0, gt=0)
    #: seconds /healthz waits for the queue and the cluster to answer
    health_timeout_s: float = Field(2.0, gt=0)
    #: Retry-After of a 503 (queue or cluster unavailable, parsing slots busy)
    retry_after_s: int = Field(5, ge=1)
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
    jobs: JobWatch = Field(default_factory=JobWatch)
    retention: Retention = Field(default_factory=Retention)

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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_keys(cfg: ServeConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """All keys the service accepts: ``$LOOKALIKE_API_KEYS`` if set, else the config's; the
    development key only in development mode with no other key, on a loopback host. ConfigError
    when there is no usable key (the service never runs open) or the development key is misused."""
    env = os.environ if environ is None else environ
    text = env.get(API_KEYS_ENV, "")
    keys = parse_api_keys_env(text) if text.strip() else dict(cfg.api_keys)
    if DEV_KEY in keys:
        where = f"${API_KEYS_ENV}" if text.strip() else "api_keys"
        raise ConfigError(
            f"{where} lists the published development key; set your own keys "
            f"(development: true enables the development key on a loopback host when no key is set)"
        )
    if keys:
        return keys
    if not cfg.development:
        raise ConfigError(
            f"no API keys: set ${API_KEYS_ENV}=key:owner[,key:owner...] or api_keys in the serve config "
            "(or development: true for the published development key, loopback hosts only)"
        )
    if not is_loopback(cfg.host):
        raise ConfigError(
            f"refusing to serve on {cfg.host} with only the published development key: "
            f"set ${API_KEYS_ENV}, or serve on 127.0.0.1"
        )
    return {DEV_KEY: DEV_OWNER}


def describe_keys(keys: Mapping[str, str]) -> str:
    """What start-up logs about the keys: how many and whose (never a key)."""
    owners = sorted(set(keys.values()))
    dev = " (the published development key: development mode)" if DEV_KEY in keys else ""
    return f"{len(keys)} API key(s) for owner(s) {', '.join(owners)}{dev}"
