"""Audience-extension jobs: ids, the job store under ``<root>/jobs/<job_id>/``, state transitions,
recovery after a restart, and the function a worker actor runs.

Files of one job (all written atomically by :class:`app.storage.Storage`)::

    request.json     owner, options, upload summary (written first)
    seeds.txt        the distinct seeds, one per line
    status.json      state machine below; its presence is what makes the job exist
    audience.parquet / audience.csv / report.json     written by the extension engine

States: ``Queued -> Running -> Finished | Failed``, and ``Running -> Queued`` when a worker died
and attempts are left. ``Finished`` and ``Failed`` are final. Only pure functions here decide a
transition (:func:`transition`, :func:`recovery_action`), so the rules have unit tests without Ray.
"""

from __future__ import annotations

import importlib
import re
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from app.errors import JobNotFound, LookalikeError
from app.storage import Storage

JOBS = "jobs"
QUEUED, RUNNING, FINISHED, FAILED = "Queued", "Running", "Finished", "Failed"
STATES = (QUEUED, RUNNING, FINISHED, FAILED)
FINAL = (FINISHED, FAILED)
_ALLOWED = {
    QUEUED: {RUNNING, FAILED},
    RUNNING: {RUNNING, FINISHED, FAILED, QUEUED},  # Running -> Running: progress, next attempt
    FINISHED: set(),
    FAILED: set(),
}
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class InvalidJobId(JobNotFound):
    """A job id that is not 32 lowercase hex characters (never turned into a path)."""


class InvalidTransition(LookalikeError):
    """A status change the state machine does not allow (e.g. out of Finished)."""


def new_job_id() -> str:
    return uuid.uuid4().hex


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is a uuid4 hex string; raise before any path is built otherwise."""
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        shown = job_id[:40] if isinstance(job_id, str) else type(job_id).__name__
        raise InvalidJobId(f"{shown!r} is not a job id (32 lowercase hex characters)")
    return job_id


def job_dir(job_id: str) -> str:
    return f"{JOBS}/{validate_job_id(job_id)}"


def now() -> float:
    return round(time.time(), 3)


def transition(status: dict[str, Any], state: str, **fields: Any) -> dict[str, Any]:
    """A new status dict after moving to ``state``; InvalidTransition if the move is not allowed."""
    if state not in STATES:
        raise InvalidTransition(f"unknown job state {state!r}")
    old = status["state"]
    if state not in _ALLOWED[old]:
        raise InvalidTransition(f"job {status['job_id']}: {old} -> {state} is not allowed")
    out = {**status, **fields, "state": state, "updated_at": now()}
    if state == RUNNING and old != RUNNING:
        out["attempts"] = status.get("attempts", 0) + 1
        out["started_at"] = out["updated_at"]
        out["progress"] = 0.0
        out["message"] = f"attempt {out['attempts']}"
    if state in FINAL:
        out["finished_at"] = out["updated_at"]
        if state == FINISHED:
            out["progress"] = 1.0
    return out


def recovery_action(status: dict[str, Any], max_attempts: int) -> str | None:
    """What a starting service does with a job it finds: 'requeue', 'fail' or None (final)."""
    state = status.get("state")
    if state in FINAL:
        return None
    if state == QUEUED:
        return "requeue"
    if status.get("attempts", 0) >= max_attempts:
        return "fail"
    return "requeue"


def failure_action(status: dict[str, Any], max_attempts: int, retryable: bool) -> str:
    """After a failed attempt: 'retry' while attempts are left (and the error may pass), else 'fail'."""
    if retryable and status.get("attempts", 0) < max_attempts:
        return "retry"
    return "fail"


class JobStore:
    """Job files in one storage root. Every method validates the job id first."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def _rel(self, job_id: str, name: str) -> str:
        return f"{job_dir(job_id)}/{name}"

    def create(
        self, owner: str, request: dict[str, Any], seeds: list[str], job_id: str | None = None
    ) -> dict[str, Any]:
        """Write request, seeds and the Queued status (last: a job exists once status.json does)."""
        job_id = validate_job_id(job_id or new_job_id())
        self.storage.write_json(self._rel(job_id, "request.json"), {"owner": owner, **request})
        self.storage.write_text(self._rel(job_id, "seeds.txt"), "\n".join(seeds) + "\n")
        ts = now()
        status = {
            "job_id": job_id,
            "owner": owner,
            "state": QUEUED,
            "attempts": 0,
            "progress": 0.0,
            "message": "waiting for a worker",
            "created_at": ts,
            "updated_at": ts,
        }
        self.storage.write_json(self._rel(job_id, "status.json"), status)
        return status

    def exists(self, job_id: str) -> bool:
        return self.storage.exists(self._rel(job_id, "status.json"))

    def status(self, job_id: str) -> dict[str, Any]:
        rel = self._rel(job_id, "status.json")
        if not self.storage.exists(rel):
            raise JobNotFound(f"no job {job_id!r}")
        return self.storage.read_json(rel)

    def status_for(self, job_id: str, owner: str) -> dict[str, Any]:
        """The status if ``owner`` owns the job; the same JobNotFound otherwise (no existence leak)."""
        status = self.status(job_id)
        if status.get("owner") != owner:
            raise JobNotFound(f"no job {job_id!r}")
        return status

    def request(self, job_id: str) -> dict[str, Any]:
        return self.storage.read_json(self._rel(job_id, "request.json"))

    def seeds(self, job_id: str) -> list[str]:
        text = self.storage.read_bytes(self._rel(job_id, "seeds.txt")).decode()
        return [line for line in text.splitlines() if line]

    def move(self, job_id: str, state: str, **fields: Any) -> dict[str, Any]:
        status = transition(self.status(job_id), state, **fields)
        self.storage.write_json(self._rel(job_id, "status.json"), status)
        return status

    def set_progress(self, job_id: str, progress: float, message: str) -> None:
        status = self.status(job_id)
        if status["state"] != RUNNING:
            return
        self.move(job_id, RUNNING, progress=round(min(max(progress, 0.0), 1.0), 4), message=message)

    def job_ids(self) -> list[str]:
        return [name for name in self.storage.iter_dirs(JOBS) if JOB_ID_RE.match(name)]

    def all_status(self) -> list[dict[str, Any]]:
        out = []
        for job_id in self.job_ids():
            try:
                out.append(self.status(job_id))
            except JobNotFound:  # a job whose 202 never went out (crash between files)
                continue
        return sorted(out, key=lambda s: s.get("created_at", 0))

    def list_for(self, owner: str, limit: int = 100) -> list[dict[str, Any]]:
        mine = [s for s in self.all_status() if s.get("owner") == owner]
        return list(reversed(mine))[:limit]

    def audience_csv(self, job_id: str) -> str:
        return self._rel(job_id, "audience.csv")


def load_object(path: str | Callable[..., Any]) -> Any:
    """``package.module:name`` -> the object (a callable given directly is returned as is)."""
    if not isinstance(path, str):
        return path
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_extend_config(config_class: Any, defaults: dict[str, Any], options: dict[str, Any]) -> Any:
    """The engine's config from the service defaults plus the request options that were given."""
    data = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    return config_class.model_validate(data)


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """What the status endpoint shows of the engine's report: its ``counts`` if it has them, else
    its scalar fields plus the seed counts, the clustering verdict and the warnings."""
    if not isinstance(report, dict):
        return {}
    if isinstance(report.get("counts"), dict):
        return report["counts"]
    out = {k: v for k, v in report.items() if isinstance(v, int | float | str | bool) and k != "out_dir"}
    if isinstance(report.get("seeds"), dict):
        out["seeds"] = report["seeds"]
    if isinstance(report.get("clusters"), dict):
        out["clusters"] = {k: report["clusters"][k] for k in ("k", "silhouette") if k in report["clusters"]}
    if isinstance(report.get("warnings"), list):
        out["warnings"] = [str(w) for w in report["warnings"]][:20]
    return out


class ThrottledProgress:
    """Progress callback for the engine: writes status.json at most every ``interval_s`` seconds."""

    def __init__(self, store: JobStore, job_id: str, interval_s: float):
        self.store, self.job_id, self.interval_s = store, job_id, interval_s
        self._last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        t = time.monotonic()
        if t - self._last < self.interval_s and fraction < 1.0:
            return
        self._last = t
        self.store.set_progress(self.job_id, float(fraction), str(message)[:500])


def run_job(
    root: str,
    job_id: str,
    engine: str | Callable[..., Any],
    config_class: str | Any,
    defaults: dict[str, Any],
    progress_interval_s: float = 0.5,
) -> dict[str, Any]:
    """Run one attempt of a job (in a worker actor). The job is already Running.

    Returns the Finished status. A LookalikeError (bad seeds, no model...) fails the job with its
    message; any other exception propagates so the queue can retry within its bound.
    """
    store = JobStore(Storage(root))
    request = store.request(job_id)
    seeds = store.seeds(job_id)
    cfg = build_extend_config(load_object(config_class), defaults, request.get("options", {}))
    progress = ThrottledProgress(store, job_id, progress_interval_s)
    report = load_object(engine)(store.storage, seeds, cfg, job_dir(job_id), progress)
    return store.move(job_id, FINISHED, message="done", counts=summarize_report(report),
                      url=f"/lookalike/extended-audience/{job_id}")


def describe_error(exc: BaseException) -> str:
    """One line for status.json: the exception type and message (no traceback, no paths)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:1000]


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-4000:]
