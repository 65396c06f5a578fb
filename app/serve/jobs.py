"""Audience-extension jobs: ids, the job store under ``<root>/jobs/<job_id>/``, state transitions,
recovery after a restart, retention, and the function a worker actor runs.

Files of one job (all written atomically by :class:`app.storage.Storage`)::

    request.json     owner, options, upload summary (written first)
    seeds.txt        the distinct seeds, one per line (deleted by retention once the job is final)
    status.json      state machine below; its presence is what makes the job exist
    audience.parquet / audience.csv / report.json     written by the extension engine

and one index entry per job, ``jobs/_index/owner=<owner>/<created ns>-<job_id>`` (an empty file),
so listing an owner's jobs reads that owner's folder and only the status files it shows. The job
files are the truth: the index is written after them, entries without a job are skipped and
removed, jobs without an entry are added back by :meth:`JobStore.sync_index` (the queue runs it
on start and on every rescan; a missing index is rebuilt the same way).

States: ``Queued -> Running -> Finished | Failed``, and ``Running -> Queued`` when a worker died
and attempts are left. ``Finished`` and ``Failed`` are final. Only pure functions here decide a
transition (:func:`transition`, :func:`recovery_action`), so the rules have unit tests without Ray.

A job file read back is validated like a request (:class:`StatusRecord`). One that does not
validate never halts anything else: the job shows as Failed with "unreadable status", and the
queue quarantines it (:meth:`JobStore.quarantine`: the bad bytes kept beside, a valid Failed
status written in their place).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import posixpath
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import JobNotFound, LookalikeError, SeedError
from app.serve.errors import InvalidCursor, InvalidJobId, InvalidTransition, UnreadableJobRecord
from app.storage import Storage

__all__ = ["InvalidJobId", "InvalidTransition", "UnreadableJobRecord"]  # re-exported for callers

JOBS = "jobs"
INDEX = f"{JOBS}/_index"
INDEX_BUILT = f"{INDEX}/_built"  # written when a full sync finished: the index is complete
QUEUED, RUNNING, FINISHED, FAILED = "Queued", "Running", "Finished", "Failed"
STATES = (QUEUED, RUNNING, FINISHED, FAILED)
FINAL = (FINISHED, FAILED)
_ALLOWED = {
    QUEUED: {RUNNING, FAILED},
    RUNNING: {RUNNING, FINISHED, FAILED, QUEUED},  # Running -> Running: progress, heartbeat
    FINISHED: set(),
    FAILED: set(),
}
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
OWNER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
UNREADABLE = "unreadable status"
_MARKER_RE = re.compile(r"^(\d{19})-([0-9a-f]{32})$")


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


class StatusRecord(BaseModel):
    """What a readable ``status.json`` holds (other keys are kept as they are)."""

    model_config = ConfigDict(extra="allow")

    job_id: str = Field(pattern=JOB_ID_RE.pattern)
    owner: str = Field(pattern=OWNER_RE.pattern)
    state: Literal["Queued", "Running", "Finished", "Failed"]
    attempts: int = Field(0, ge=0)
    progress: float = Field(0.0, ge=0.0, le=1.0)
    created_at: float
    updated_at: float
    message: str | None = None
    error: str | None = None
    url: str | None = None
    counts: dict[str, Any] | None = None

    @field_validator("created_at", "updated_at")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("not a finite time")
        return v


class RequestRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    owner: str = Field(pattern=OWNER_RE.pattern)
    options: dict[str, Any] = Field(default_factory=dict)


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
        out.pop("heartbeat_at", None)  # written by the worker once it has begun
        out["progress"] = 0.0
        out["message"] = f"attempt {out['attempts']}"
    if state == QUEUED:  # back in line: nothing of the interrupted attempt shows any more
        out["progress"] = 0.0
        for stale in ("started_at", "heartbeat_at"):
            out.pop(stale, None)
    if state in FINAL:
        out["finished_at"] = out["updated_at"]
        out.pop("heartbeat_at", None)
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


def unreadable_view(job_id: str, owner: str, at: float) -> dict[str, Any]:
    """How a job whose status cannot be read is shown to its owner: Failed, saying so."""
    return {"job_id": job_id, "owner": owner, "state": FAILED, "attempts": 0, "progress": 0.0,
            "message": UNREADABLE, "error": UNREADABLE, "created_at": at, "updated_at": at}


def marker_name(created_at: float, job_id: str) -> str:
    """Index entry of a job: creation time in nanoseconds (sorts as the jobs were created), id."""
    return f"{int(round(created_at * 1e9)):019d}-{job_id}"


class JobStore:
    """Job files in one storage root. Every method validates the job id first."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def _rel(self, job_id: str, name: str) -> str:
        return f"{job_dir(job_id)}/{name}"

    # ------------------------------------------------------------------ create and read
    def create(
        self, owner: str, request: dict[str, Any], seeds: list[str] | None = None, job_id: str | None = None,
        seeds_file: str | None = None,
    ) -> dict[str, Any]:
        """Write request, seeds and the Queued status (a job exists once status.json does), then
        its index entry. Seeds come as a list or as a local file of one seed per line."""
        job_id = validate_job_id(job_id or new_job_id())
        if not OWNER_RE.match(owner):
            raise InvalidTransition(f"owner {owner[:70]!r} is not a plain name")
        self.storage.write_json(self._rel(job_id, "request.json"), {"owner": owner, **request})
        if seeds_file is not None:
            self._copy_in(seeds_file, self._rel(job_id, "seeds.txt"))
        else:
            self.storage.write_text(self._rel(job_id, "seeds.txt"), "\n".join(seeds or []) + "\n")
        created_ns = time.time_ns()
        ts = round(created_ns / 1e9, 6)  # to the microsecond: a rebuilt index keeps the order
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
        # the index entry first: a crash before status.json leaves an entry without a job, which
        # listings skip and sync_index drops; the other order could leave a job no listing shows
        self._index_add(owner, job_id, created_ns / 1e9)
        self.storage.write_json(self._rel(job_id, "status.json"), status)
        return status

    def _copy_in(self, local_path: str, rel: str, chunk: int = 1 << 20) -> None:
        """Stream a local file into the root atomically (temp name, then rename)."""
        dest = self.storage.path(rel)
        parent = posixpath.dirname(dest)
        self.storage.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(dest)}")
        with open(local_path, "rb") as src, self.storage.fs.open_output_stream(tmp) as out:
            while data := src.read(chunk):
                out.write(data)
        self.storage.fs.move(tmp, dest)

    def exists(self, job_id: str) -> bool:
        return self.storage.exists(self._rel(job_id, "status.json"))

    def status(self, job_id: str) -> dict[str, Any]:
        """The validated status; JobNotFound if there is none, UnreadableJobRecord if it is bad."""
        rel = self._rel(job_id, "status.json")
        try:
            data = self.storage.read_bytes(rel)
        except (FileNotFoundError, IsADirectoryError):  # never written, or deleted (retention)
            raise JobNotFound(f"no job {job_id!r}") from None
        try:
            raw = json.loads(data)
            record = StatusRecord.model_validate(raw)
        except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UnreadableJobRecord(f"job {job_id}: {UNREADABLE}") from None
        if record.job_id != job_id:
            raise UnreadableJobRecord(f"job {job_id}: {UNREADABLE} (it names another job)")
        return raw

    def owner_of(self, job_id: str) -> str | None:
        """The owner named by request.json, or None when it cannot be read."""
        try:
            return self.request(job_id)["owner"]
        except (UnreadableJobRecord, FileNotFoundError):
            return None

    def _mtime(self, job_id: str, name: str = "status.json") -> float:
        info = self.storage.fs.get_file_info(self.storage.path(self._rel(job_id, name)))
        return info.mtime.timestamp() if info.mtime is not None else 0.0

    def status_for(self, job_id: str, owner: str) -> dict[str, Any]:
        """The status if ``owner`` owns the job; the same JobNotFound otherwise (no existence leak).
        An unreadable status shows as Failed to an owner that request.json names."""
        try:
            status = self.status(job_id)
        except UnreadableJobRecord:
            if self.owner_of(job_id) != owner:
                raise JobNotFound(f"no job {job_id!r}") from None
            return unreadable_view(job_id, owner, self._mtime(job_id))
        if status.get("owner") != owner:
            raise JobNotFound(f"no job {job_id!r}")
        return status

    def request(self, job_id: str) -> dict[str, Any]:
        try:
            raw = json.loads(self.storage.read_bytes(self._rel(job_id, "request.json")))
            RequestRecord.model_validate(raw)
        except (ValueError, ValidationError):
            raise UnreadableJobRecord(f"job {job_id}: unreadable request") from None
        return raw

    def seeds(self, job_id: str) -> list[str]:
        rel = self._rel(job_id, "seeds.txt")
        if not self.storage.exists(rel):
            raise SeedError(f"job {job_id}: its seeds are gone (retention)")
        try:
            text = self.storage.read_bytes(rel).decode()
        except UnicodeDecodeError:
            raise UnreadableJobRecord(f"job {job_id}: unreadable seeds") from None
        return [line for line in text.splitlines() if line]

    # ------------------------------------------------------------------ writes
    def _write_status(self, job_id: str, status: dict[str, Any]) -> None:
        self.storage.write_json(self._rel(job_id, "status.json"), status)

    def move(self, job_id: str, state: str, **fields: Any) -> dict[str, Any]:
        status = transition(self.status(job_id), state, **fields)
        self._write_status(job_id, status)
        return status

    def update_running(self, job_id: str, attempt: int | None, **fields: Any) -> bool:
        """Progress or heartbeat of a Running job's attempt ``attempt`` (None: any); False, and
        nothing written, once the job is no longer that attempt (re-queued, final)."""
        status = self.status(job_id)
        if status["state"] != RUNNING or (attempt is not None and status.get("attempts") != attempt):
            return False
        self._write_status(job_id, transition(status, RUNNING, **fields))
        return True

    def set_progress(self, job_id: str, progress: float, message: str, attempt: int | None = None) -> bool:
        progress = round(min(max(float(progress), 0.0), 1.0), 4) if math.isfinite(progress) else 0.0
        return self.update_running(job_id, attempt, progress=progress, message=message, heartbeat_at=now())

    def quarantine(self, job_id: str) -> dict[str, Any] | None:
        """Replace an unreadable status.json by a valid Failed one (its bytes kept beside as
        ``status.unreadable.json``). None, and nothing changed, when no owner can be named."""
        owner = self.owner_of(job_id)
        if owner is None:
            return None
        rel = self._rel(job_id, "status.json")
        try:
            self.storage.write_bytes(self._rel(job_id, "status.unreadable.json"), self.storage.read_bytes(rel))
        except FileNotFoundError:
            return None
        marker = self._marker_of(owner, job_id)
        at = round(int(marker[:19]) / 1e9, 6) if marker else self._mtime(job_id)
        status = {**unreadable_view(job_id, owner, at), "finished_at": now(), "quarantined": True}
        self._write_status(job_id, status)
        if marker is None:
            self._index_add(owner, job_id, at)
        return status

    # ------------------------------------------------------------------ scanning
    def job_ids(self) -> list[str]:
        return [name for name in self.storage.iter_dirs(JOBS) if JOB_ID_RE.match(name)]

    def scan(self, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """(job_id, status) of every job not in ``skip``; status None when it is unreadable.
        Half-created jobs (no status.json yet) are left out."""
        for job_id in self.job_ids():
            if job_id in skip:
                continue
            try:
                yield job_id, self.status(job_id)
            except JobNotFound:
                continue
            except UnreadableJobRecord:
                yield job_id, None

    def all_status(self) -> list[dict[str, Any]]:
        """Every readable status, oldest first (unreadable ones are left out: see :meth:`scan`)."""
        out = [s for _, s in self.scan() if s is not None]
        return sorted(out, key=lambda s: s.get("created_at", 0))

    # ------------------------------------------------------------------ the owner index
    def _owner_dir(self, owner: str) -> str:
        if not OWNER_RE.match(owner):
            raise InvalidTransition(f"owner {owner[:70]!r} is not a plain name")
        return f"{INDEX}/owner={owner}"

    def _index_add(self, owner: str, job_id: str, created_at: float) -> None:
        self.storage.write_bytes(f"{self._owner_dir(owner)}/{marker_name(created_at, job_id)}", b"")

    def _markers(self, owner_dir: str) -> list[tuple[str, str]]:
        """(marker name, job id) in one owner's folder, newest first."""
        out = []
        for name in self.storage.list_names(owner_dir):
            m = _MARKER_RE.match(name)
            if m:
                out.append((name, m.group(2)))
        return sorted(out, reverse=True)

    def _marker_of(self, owner: str, job_id: str) -> str | None:
        return next((name for name, indexed in self._markers(self._owner_dir(owner)) if indexed == job_id), None)

    def index_exists(self) -> bool:
        return self.storage.exists(INDEX_BUILT)

    def sync_index(self) -> dict[str, int]:
        """Make the index match the job files: add jobs it lacks, drop entries without a job.

        Reads one listing of ``jobs/``, one per owner folder, and the status of unindexed jobs
        only (all of them when the index is missing)."""
        on_disk = set(self.job_ids())
        indexed: set[str] = set()
        removed = 0
        for folder in self.storage.iter_dirs(INDEX):
            owner_dir = f"{INDEX}/{folder}"
            for name, job_id in self._markers(owner_dir):
                if job_id in on_disk:
                    indexed.add(job_id)
                else:
                    self.storage.delete(f"{owner_dir}/{name}")
                    removed += 1
        added = 0
        for job_id, status in self.scan(skip=indexed):
            if status is not None:
                owner, at = status["owner"], status["created_at"]
            else:
                owner, at = self.owner_of(job_id), self._mtime(job_id)
            if owner is None or not OWNER_RE.match(owner):
                continue
            self._index_add(owner, job_id, at)
            added += 1
        self.storage.write_json(INDEX_BUILT, {"at": now()})
        return {"added": added, "removed": removed}

    def list_for(self, owner: str, limit: int = 100, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of ``owner``'s jobs, newest first: (at most ``limit`` statuses, the cursor of the
        next page or None). ``cursor`` is the value a previous page returned (InvalidCursor when it
        is not one). Read from the owner's index folder, so the status files of other owners and
        of other pages are never read. An unreadable status shows as Failed."""
        if cursor is not None and not _MARKER_RE.match(cursor):
            raise InvalidCursor(f"cursor {cursor[:80]!r} is not one this service returned")
        if not self.index_exists():
            self.sync_index()
        markers = self._markers(self._owner_dir(owner))
        if cursor is not None:
            markers = [m for m in markers if m[0] < cursor]
        out: list[dict[str, Any]] = []
        last = None
        for name, job_id in markers:
            if len(out) >= limit:
                return out, last
            try:
                status = self.status(job_id)
            except JobNotFound:
                continue  # an entry whose job is gone or not yet written: sync_index drops it
            except UnreadableJobRecord:
                status = unreadable_view(job_id, owner, round(int(name[:19]) / 1e9, 3))
            if status["owner"] != owner:
                continue
            out.append(status)
            last = name
        return out, None

    # ------------------------------------------------------------------ retention
    def prune(self, seeds_after_s: float | None, jobs_after_s: float | None,
              incomplete_after_s: float | None, at: float | None = None) -> dict[str, int]:
        """Delete what retention allows, as of ``at`` (default now): the seeds of jobs final for
        ``seeds_after_s``, whole jobs final for ``jobs_after_s``, and half-created jobs (no
        status, from a crash during a submit) older than ``incomplete_after_s``. None keeps."""
        at = time.time() if at is None else at
        counts = {"seeds_deleted": 0, "jobs_deleted": 0, "incomplete_deleted": 0, "unreadable_kept": 0}
        for job_id in self.job_ids():
            try:
                status = self.status(job_id)
            except JobNotFound:
                if incomplete_after_s is not None and at - self._mtime(job_id, "request.json") >= incomplete_after_s:
                    self.storage.delete(job_dir(job_id))
                    counts["incomplete_deleted"] += 1
                continue
            except UnreadableJobRecord:
                counts["unreadable_kept"] += 1  # the queue quarantines it first
                continue
            if status["state"] not in FINAL:
                continue
            age = at - float(status.get("finished_at", status["updated_at"]))
            if jobs_after_s is not None and age >= jobs_after_s:
                marker = self._marker_of(status["owner"], job_id)
                if marker is not None:
                    self.storage.delete(f"{self._owner_dir(status['owner'])}/{marker}")
                self.storage.delete(job_dir(job_id))
                counts["jobs_deleted"] += 1
            elif seeds_after_s is not None and age >= seeds_after_s and self.storage.exists(self._rel(job_id, "seeds.txt")):
                self.storage.delete(self._rel(job_id, "seeds.txt"))
                self._write_status(job_id, {**status, "seeds_pruned_at": round(at, 3)})
                counts["seeds_deleted"] += 1
        return counts

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
    spread = report.get("similarity_spread")
    if isinstance(spread, dict):
        out["similarity_spread"] = {k: v for k, v in spread.items() if isinstance(v, int | float)}
    return out


class JobWriter:
    """The worker's writes to a Running job: throttled progress and a heartbeat thread, one at a
    time (a lock), and only while the job is still the attempt this worker runs."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float, heartbeat_s: float):
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.interval_s, self.heartbeat_s = interval_s, heartbeat_s
        self.lock = threading.Lock()
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, fraction: float, message: str) -> None:
        """The engine's progress callback: writes status.json at most every ``interval_s``."""
        t = time.monotonic()
        if t - self._last < self.interval_s and fraction < 1.0:
            return
        self._last = t
        with self.lock:
            self.store.set_progress(self.job_id, float(fraction), str(message)[:500], attempt=self.attempt)

    def beat(self) -> bool:
        with self.lock:
            return self.store.update_running(self.job_id, self.attempt, heartbeat_at=now())

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.beat():
                    return
            except (LookalikeError, OSError):  # the queue notices the missing heartbeat
                return

    def __enter__(self) -> JobWriter:
        if self.heartbeat_s > 0:
            self.beat()  # the first one at once: the queue knows the worker has begun
            self._thread = threading.Thread(target=self._beat_loop, name=f"heartbeat-{self.job_id[:8]}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def run_job(
    root: str,
    job_id: str,
    engine: str | Callable[..., Any],
    config_class: str | Any,
    defaults: dict[str, Any],
    progress_interval_s: float = 0.5,
    heartbeat_s: float = 0.0,
) -> dict[str, Any]:
    """Run one attempt of a job (in a worker actor). The job is already Running.

    Returns the Finished status. A LookalikeError (bad seeds, no model...) fails the job with its
    message; any other exception propagates so the queue can retry within its bound. While the
    engine runs, a heartbeat thread writes ``heartbeat_at`` every ``heartbeat_s`` seconds.
    """
    store = JobStore(Storage(root))
    attempt = int(store.status(job_id).get("attempts", 0))
    request = store.request(job_id)
    seeds = store.seeds(job_id)
    cfg = build_extend_config(load_object(config_class), defaults, request.get("options", {}))
    with JobWriter(store, job_id, attempt, progress_interval_s, heartbeat_s) as writer:
        report = load_object(engine)(store.storage, seeds, cfg, job_dir(job_id), writer)
    with writer.lock:
        return store.move(job_id, FINISHED, message="done", counts=summarize_report(report),
                          url=f"/lookalike/extended-audience/{job_id}")


#: an absolute path of two or more parts (the service's own URLs, /lookalike/..., are not paths)
_ABS_PATH = re.compile(r"(?<![\w.:/-])(?:file://)?/(?!lookalike/)(?:[^\s'\"/:]+/)+[^\s'\",:;)]*")


def scrub_paths(text: str, root: str | None = None) -> str:
    """``text`` without absolute paths: the storage root becomes "the storage root" and paths
    under it become root-relative (``jobs/<id>/seeds.txt``); any other absolute path becomes
    ``<path>``."""
    if root:
        roots = {root.rstrip("/")}
        if "://" not in root:
            roots.add(os.path.abspath(root).rstrip("/"))
        for r in sorted(roots, key=len, reverse=True):
            if len(r) < 2:
                continue
            for quoted in (repr(r), f'"{r}"'):
                text = text.replace(quoted, "the storage root")
            text = text.replace(r + "/", "")
            text = re.sub(re.escape(r) + r"(?![\w.-])", "the storage root", text)  # not /root-other
    return _ABS_PATH.sub("<path>", text)


def describe_error(exc: BaseException, root: str | None = None) -> str:
    """One line for status.json: the exception type and its whole message on one line, in the
    service's terms (no traceback, no absolute path)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, SeedError) and _is_jsd_no_feature(exc):
        text = JSD_NO_FEATURE
    return scrub_paths(f"{type(exc).__name__}: {text}", root)[:1000]


def _is_jsd_no_feature(exc: BaseException) -> bool:
    from app.extend.jsd import NO_FEATURE_ERROR

    return str(exc) == NO_FEATURE_ERROR


#: the jsd strategy's "Critical Error" (app.extend.jsd.NO_FEATURE_ERROR, worded by the original
#: specification for its own functions), said to a client of the service: which option to change
JSD_NO_FEATURE = (
    "the jsd strategy found no feature on which these seeds differ enough from the population "
    "(Critical Error: no feature observes a significant divergence from population); "
    "submit again with strategy=din, or with seeds that share a clearer trait"
)



def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))[-4000:]
