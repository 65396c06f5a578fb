"""Environment-specific values, read in this one place.

``LOOKALIKE_ROOT``   storage root: a local path or a pyarrow filesystem URI (s3://, gs://, hdfs://).
``RAY_ADDRESS``      cluster to join (``auto`` on a ``ray up`` cluster); unset means a local Ray.
``LOOKALIKE_NUM_CPUS`` caps the CPUs a *local* Ray may use (tests and benchmarks).

A local root is made absolute here, once, against the caller's working directory: every Ray
worker, Ray Train worker and Serve replica runs in a working directory of its own, so a relative
root handed to one of them would name another folder (or nothing). Everything downstream of
:func:`get_settings` and :class:`app.storage.Storage` sees an absolute path or a URI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.errors import ConfigError

#: default storage root, relative to the working directory of the command that starts the work
DEFAULT_ROOT = "var/lookalike"
#: the project's checkout: ``configs/`` lives beside the ``app`` package
PROJECT_DIR = Path(__file__).resolve().parent.parent
#: set by Ray's job supervisor in the driver of a job started with ``ray job submit``
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


@dataclass(frozen=True)
class Settings:
    root: str
    ray_address: str | None
    num_cpus: int | None


def is_uri(root: str) -> bool:
    return "://" in root


def resolve_root(root: str) -> str:
    """A URI unchanged; a local path as an absolute path (``~`` expanded).

    In a job started with ``ray job submit`` the working directory is a temporary copy of the
    uploaded ``--working-dir``, deleted with the job: a relative root there would put every
    table into that copy. Such a job must name its root absolutely (or as a URI).
    """
    if is_uri(root):
        return root
    path = os.path.expanduser(root)
    if not os.path.isabs(path) and os.environ.get(SUBMITTED_JOB_ENV):
        raise ConfigError(
            f"storage root {root!r} is relative, but this is a job started with `ray job submit`: it runs in "
            "a temporary copy of the working directory. Set LOOKALIKE_ROOT (runtime env) or --root to an "
            "absolute path on shared storage or to a URI such as s3://bucket/lookalike"
        )
    return os.path.abspath(path)


def get_settings(root: str | None = None) -> Settings:
    num_cpus = os.environ.get("LOOKALIKE_NUM_CPUS")
    return Settings(
        root=resolve_root(root or os.environ.get("LOOKALIKE_ROOT") or DEFAULT_ROOT),
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        num_cpus=int(num_cpus) if num_cpus else None,
    )


def config_path(path: str | Path) -> Path:
    """A config file as given, or, when a relative ``configs/...`` path is not found from here,
    the project's own copy, so the shipped defaults work from any working directory."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    shipped = PROJECT_DIR / p
    return shipped if shipped.is_file() else p
