"""Starting or joining Ray the same way from every entry point."""

from __future__ import annotations

import os
from typing import Any

from app.settings import get_settings

# every Ray worker, actor and Serve replica needs Keras 2 before TensorFlow loads
RUNTIME_ENV: dict[str, Any] = {"env_vars": {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}}

#: Ray Train gives a worker group 60 s to start by default; on a loaded 2-core machine starting two
#: TensorFlow workers took about 46 s, so allow more before calling it a failure.
TRAIN_START_TIMEOUT_S = "300"


def init_ray(num_cpus: int | None = None, include_dashboard: bool = False, **kwargs: Any) -> None:
    """Join ``$RAY_ADDRESS`` if set, else start a small local Ray (no-op if already initialised).

    The dashboard is off by default (it costs a process and startup time); Tune needs it on
    (STACK_NOTES: with it off, finished trials keep their resources and the next one hangs).
    """
    import ray

    if ray.is_initialized():
        return
    settings = get_settings()
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", TRAIN_START_TIMEOUT_S)
    if settings.ray_address:
        ray.init(address=settings.ray_address, runtime_env=RUNTIME_ENV, **kwargs)
        return
    ray.init(
        num_cpus=num_cpus or settings.num_cpus,
        include_dashboard=include_dashboard,
        runtime_env=RUNTIME_ENV,
        object_store_memory=kwargs.pop("object_store_memory", None),
        **kwargs,
    )
