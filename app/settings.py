"""Environment-specific values, read in this one place.

``LOOKALIKE_ROOT``   storage root: a local path or a pyarrow filesystem URI (s3://, gs://, hdfs://).
``RAY_ADDRESS``      cluster to join (``auto`` on a ``ray up`` cluster); unset means a local Ray.
``LOOKALIKE_NUM_CPUS`` caps the CPUs a *local* Ray may use (tests and benchmarks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ROOT = "var/lookalike"


@dataclass(frozen=True)
class Settings:
    root: str
    ray_address: str | None
    num_cpus: int | None


def get_settings(root: str | None = None) -> Settings:
    num_cpus = os.environ.get("LOOKALIKE_NUM_CPUS")
    return Settings(
        root=root or os.environ.get("LOOKALIKE_ROOT") or DEFAULT_ROOT,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        num_cpus=int(num_cpus) if num_cpus else None,
    )
