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
    (with it off, a finished trial's resources stay reserved and the next trial waits for ever;
    docs/operations.md).
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


def _import_data_modules() -> None:
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import ray.data  # noqa: F401

    from app.data import clean_logs, keywords  # noqa: F401


def prewarm_data_workers(limit: int = 64) -> list:
    """Start one worker per CPU (up to ``limit``) importing what the data stages' tasks import,
    without waiting; returns the refs.

    A new job's first Ray Data tasks otherwise wait for their worker processes to start and import
    pyarrow, pandas and Ray Data (about 4 s on 2 cores). Started here, that overlaps the driver's
    own start of the pipeline (importing Ray Data, the first job's set-up): 1-2 s less for a new
    job (BENCHMARKS.md). Later tasks of the job reuse these workers.
    """
    import ray

    cpus = int(ray.available_resources().get("CPU", 1))
    warm = ray.remote(num_cpus=1)(_import_data_modules)
    return [warm.remote() for _ in range(max(1, min(cpus, limit)))]
