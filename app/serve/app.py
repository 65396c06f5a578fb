"""Application builder: the ``import_path`` of ``configs/serve.yaml`` (``app.serve.app:build_app``).

``serve run configs/serve.yaml`` hands the file's ``args`` to :func:`build_app`; the CLI
(``python -m app serve start``) does the same in-process. Nothing here runs on import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray.serve import Application

from app.config import validate
from app.serve.config import ServeConfig, describe_keys, resolve_api_keys
from app.serve.deployments import Ingress, Scorer
from app.serve.queue import JobQueue
from app.settings import get_settings

log = logging.getLogger("app.serve")


def resolve_config(args: dict[str, Any] | None) -> ServeConfig:
    """Validated config with an absolute storage root (replicas do not share the caller's cwd)."""
    cfg = validate(ServeConfig, dict(args or {}), source="serve args")
    root = get_settings(cfg.root).root
    if "://" not in root:
        root = os.path.abspath(root)  # a no-op once settings return absolute local roots
    return cfg.model_copy(update={"root": root})


def deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    return {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": cfg.replica_num_cpus},
        "logging_config": {"enable_access_log": cfg.access_log},
    }


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Ingress -> (Scorer, JobQueue). API keys reach only the ingress, as a constructor argument;
    their owners (never the keys) are logged."""
    cfg = resolve_config(args)
    keys = resolve_api_keys(cfg)
    log.info("lookalike service: %s", describe_keys(keys))
    plain = cfg.model_dump(mode="json")
    plain["api_keys"] = {}
    opts = deployment_options(cfg)
    scorer = Scorer.options(**opts).bind(plain)
    queue = JobQueue.options(**opts).bind(plain)
    return Ingress.options(**opts).bind(scorer, queue, plain, keys)
