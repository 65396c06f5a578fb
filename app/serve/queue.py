"""The job queue deployment and its worker actors.

::

    Ingress --admit/submit--> JobQueue (one replica) --actor calls--> ExtendWorker x max_concurrent_jobs

The queue is a single-replica deployment so its lifetime is the application's: on start it
re-queues the jobs a previous instance left Queued or Running (storage holds their state), and
when Serve ends it, its worker actors (owned by it) end too. It hands jobs out fairly across
owners (:class:`app.serve.scheduling.FairQueue`), refuses an owner's job past
``per_key.max_queued_jobs`` (the ingress asks :meth:`JobQueue.admit` first), watches every running
attempt (heartbeat and timeout, ``jobs``), rescans storage for jobs it does not hold, keeps the
owner index in step with the job files and applies the retention policy. No job record, however
damaged, halts it: an unreadable one is quarantined and reported Failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from app.errors import JobNotFound, LookalikeError
from app.serve import jobs as J
from app.serve.config import ServeConfig
from app.serve.scheduling import FairQueue, RunTimes
from app.storage import Storage

log = logging.getLogger("app.serve")


@ray.remote(max_restarts=0, max_task_retries=0)
class ExtendWorker:
    """Runs one job attempt at a time with the extension engine (app.extend.engine)."""

    def run(self, root: str, job_id: str, engine: Any, config_class: Any, defaults: dict, interval: float,
            heartbeat_s: float = 0.0):
        try:
            return J.run_job(root, job_id, engine, config_class, defaults, interval, heartbeat_s)
        except (LookalikeError, ValidationError) as exc:  # the job's own fault: no retry
            store = J.JobStore(Storage(root))
            try:
                return store.move(job_id, J.FAILED, error=J.describe_error(exc, root), message="failed")
            except LookalikeError as again:  # unreadable or already final: the queue sorts it out
                log.warning("job %s: could not record its failure: %s", job_id, again)
                return None

    def ping(self) -> bool:
        return True


@serve.deployment(name="JobQueue", num_replicas=1)
class JobQueue:
    """Fair queue of job ids fed to ``max_concurrent_jobs`` worker actors; bounded retries."""

    async def __init__(self, cfg: dict[str, Any]):
        self.cfg = ServeConfig.model_validate(cfg)
        self.store = J.JobStore(Storage(self.cfg.root))
        self._pending = FairQueue()
        self._wakeup = asyncio.Event()
        self._owner_of: dict[str, str] = {}  # queued or running here -> owner
        self._running: dict[str, str] = {}  # job id -> owner
        self._final: set[str] = set()  # jobs seen final (never re-read by the rescan)
        self._workers: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self.run_times = RunTimes(default=float(self.cfg.retry_after_s))
        for _ in range(self.cfg.max_concurrent_jobs):
            self._workers.put_nowait(self._new_worker())
        self.recovered = await run_in_threadpool(self._recover)
        loop = asyncio.get_running_loop()
        self._loop = loop.create_task(self._dispatch())
        self._rescan_task = loop.create_task(self._rescan())
        self._last_sweep = time.monotonic()  # recovery has just read every job
        log.info("job queue: %d workers, recovered %s", self.cfg.max_concurrent_jobs, self.recovered)

    def _new_worker(self) -> Any:
        return ExtendWorker.options(num_cpus=self.cfg.worker_num_cpus).remote()

    # ------------------------------------------------------------------ recovery and rescans
    def _recover(self) -> dict[str, int]:
        """Re-queue what a previous queue left Queued or Running; quarantine unreadable records."""
        counts = {"requeued": 0, "failed": 0, "unreadable": 0, "none": 0}
        found = list(self.store.scan())
        for job_id, status in sorted(found, key=lambda js: (js[1] or {}).get("created_at", 0)):
            if status is None:
                counts["unreadable"] += self._quarantine(job_id)
                continue
            try:
                counts[self._recover_one(status)] += 1
            except (LookalikeError, OSError) as exc:
                log.warning("job %s not recovered: %s", job_id, J.describe_error(exc, self.cfg.root))
        counts.pop("none", None)
        counts["index"] = sum(self.store.sync_index().values())
        r = self.cfg.retention
        counts["pruned"] = sum(self.store.prune(r.seeds_after_s, r.jobs_after_s, r.incomplete_after_s).values())
        return counts

    def _recover_one(self, status: dict[str, Any]) -> str:
        job_id = status["job_id"]
        action = J.recovery_action(status, self.cfg.max_job_attempts)
        if action == "fail":
            self.store.move(
                job_id, J.FAILED, message="failed",
                error=f"interrupted by a service restart after {status.get('attempts', 0)} attempt(s)",
            )
            self._final.add(job_id)
            return "failed"
        if action == "requeue":
            if status["state"] == J.RUNNING:
                self.store.move(job_id, J.QUEUED, message="re-queued after a service restart")
            self._enqueue(status["owner"], job_id)
            return "requeued"
        self._final.add(job_id)
        return "none"

    def _quarantine(self, job_id: str) -> int:
        status = self.store.quarantine(job_id)
        self._final.add(job_id)
        if status is None:
            log.warning("job %s: unreadable status and no readable owner; left as it is", job_id)
            return 0
        log.warning("job %s: unreadable status quarantined (status.unreadable.json); reported Failed", job_id)
        return 1

    def _enqueue(self, owner: str, job_id: str, front: bool = False) -> None:
        if job_id not in self._owner_of:
            self._owner_of[job_id] = owner
            self._pending.push(owner, job_id, front=front)
            self._wakeup.set()

    def _scan_new(self) -> list[tuple[str, str]]:
        """(owner, job id) of Queued jobs the queue does not hold; quarantines unreadable ones and
        keeps the index in step. Jobs seen final are skipped, except in the sweep every
        ``retention.prune_interval_s``, which reads them all again (a final record damaged later
        is quarantined then) and applies the retention policy."""
        sweep = time.monotonic() - self._last_sweep >= self.cfg.retention.prune_interval_s
        out = []
        for job_id, status in self.store.scan(skip=set(self._owner_of) | (set() if sweep else self._final)):
            if status is None:
                self._quarantine(job_id)
            elif status["state"] in J.FINAL:
                self._final.add(job_id)
            elif status["state"] == J.QUEUED:
                out.append((status["owner"], job_id))
        self.store.sync_index()
        if sweep:
            self._last_sweep = time.monotonic()
            r = self.cfg.retention
            counts = self.store.prune(r.seeds_after_s, r.jobs_after_s, r.incomplete_after_s)
            if any(counts.values()):
                log.info("retention: %s", counts)
        return out

    async def _rescan(self) -> None:
        """Pick up Queued jobs whose submit call never arrived (the job files are the truth)."""
        while True:
            await asyncio.sleep(self.cfg.rescan_interval_s)
            try:
                found = await run_in_threadpool(self._scan_new)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one bad scan
                log.warning("job rescan failed: %s", J.describe_error(exc, self.cfg.root))
                continue
            for owner, job_id in found:
                log.warning("job %s was Queued but not held by the queue; queueing it", job_id)
                self._enqueue(owner, job_id)

    # ------------------------------------------------------------------ the ingress's calls
    def _backlog(self, owner: str) -> int:
        return self._pending.count(owner) + sum(1 for o in self._running.values() if o == owner)

    async def admit(self, owner: str) -> dict[str, Any]:
        """May ``owner`` queue one more job? When not, how long until one of theirs is done."""
        backlog, limit = self._backlog(owner), self.cfg.per_key.max_queued_jobs
        if backlog < limit:
            return {"ok": True, "backlog": backlog}
        wait = self.run_times.estimate() * max(1, backlog - limit + 1) / max(1, self.cfg.max_concurrent_jobs)
        return {"ok": False, "backlog": backlog, "limit": limit, "retry_after_s": round(wait, 1)}

    async def submit(self, job_id: str, owner: str | None = None) -> int:
        """Queue a job already written to storage; returns the number of jobs queued."""
        J.validate_job_id(job_id)
        if owner is None:
            owner = (await run_in_threadpool(self.store.status, job_id))["owner"]
        self._enqueue(owner, job_id)
        return len(self._pending)

    async def stats(self) -> dict[str, Any]:
        return {"queued": len(self._pending), "running": len(self._running), "owners": self._pending.owners(),
                "recovered": self.recovered}

    async def health(self) -> dict[str, Any]:
        """What /healthz reports of the queue: its loops alive, workers, queue length."""
        self.check_health()
        return {"queued": len(self._pending), "running": len(self._running),
                "idle_workers": self._workers.qsize()}

    def check_health(self) -> None:
        for task in (self._loop, self._rescan_task):
            if task.done():
                raise RuntimeError(f"job queue task stopped: {task.exception()!r}")

    # ------------------------------------------------------------------ running jobs
    async def _next(self) -> tuple[str, str]:
        while True:
            item = self._pending.pop()
            if item is not None:
                return item
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _dispatch(self) -> None:
        while True:
            worker = await self._workers.get()  # a worker first: the job is chosen when one is free
            owner, job_id = await self._next()
            self._running[job_id] = owner
            task = asyncio.get_running_loop().create_task(self._run(job_id, owner, worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, owner: str, worker: Any) -> None:
        cfg, requeued = self.cfg, False
        try:
            try:
                await run_in_threadpool(self.store.move, job_id, J.RUNNING)
            except J.UnreadableJobRecord:
                await run_in_threadpool(self._quarantine, job_id)
                return
            except (LookalikeError, OSError) as exc:  # final already, or vanished
                log.warning("job %s not started: %s", job_id, J.describe_error(exc, cfg.root))
                return
            started = time.monotonic()
            worker, reason, retryable = await self._watch(job_id, worker)
            if reason is None:
                self.run_times.add(time.monotonic() - started)
                return
            requeued = await run_in_threadpool(self._after_failure, job_id, reason, retryable)
        finally:
            self._running.pop(job_id, None)
            self._workers.put_nowait(worker)
            if requeued:
                self._owner_of.pop(job_id, None)
                self._enqueue(owner, job_id, front=True)
            else:
                self._owner_of.pop(job_id, None)

    async def _watch(self, job_id: str, worker: Any) -> tuple[Any, str | None, bool]:
        """Run one attempt and watch it: (worker to keep, failure reason or None, retryable)."""
        cfg, watch = self.cfg, self.cfg.jobs
        ref = worker.run.remote(cfg.root, job_id, cfg.engine, cfg.extend_config_class, cfg.extend,
                                cfg.progress_interval_s, watch.heartbeat_s)
        attempt = asyncio.ensure_future(ref)
        started = time.monotonic()
        check = min(watch.heartbeat_s, 5.0)
        while True:
            done, _ = await asyncio.wait({attempt}, timeout=check)
            if done:
                break
            elapsed = time.monotonic() - started
            if elapsed > watch.timeout_s:
                return await self._stop(worker, attempt), f"timed out after {watch.timeout_s:g} s", False
            age, begun = await run_in_threadpool(self._heartbeat_age, job_id)
            if begun and age > watch.heartbeat_timeout_s:
                return await self._stop(worker, attempt), f"no heartbeat for {age:.0f} s", True
            if not begun and age > watch.start_timeout_s:
                return await self._stop(worker, attempt), f"its worker did not begin within {age:.0f} s", True
        try:
            result = attempt.result()
            if isinstance(result, dict) and result.get("state") in J.FINAL:
                self._final.add(job_id)
            return worker, None, False
        except RayActorError as exc:
            return self._new_worker(), f"worker died: {J.describe_error(exc, cfg.root)}", True
        except RayTaskError as exc:
            log.error("job %s attempt failed:\n%s", job_id, exc)
            return worker, J.describe_error(exc.cause if exc.cause is not None else exc, cfg.root), True
        except RayError as exc:  # the object or its owner is lost: the cluster is in trouble
            return self._new_worker(), f"lost: {J.describe_error(exc, cfg.root)}", True

    def _heartbeat_age(self, job_id: str) -> tuple[float, bool]:
        """(seconds since the attempt's last heartbeat, or since it was dispatched when the worker
        has not begun yet; whether it has begun). (0, True) when there is nothing to watch."""
        try:
            status = self.store.status(job_id)
        except (LookalikeError, OSError):
            return 0.0, True
        if status["state"] != J.RUNNING:
            return 0.0, True
        if status.get("heartbeat_at") is not None:
            return time.time() - float(status["heartbeat_at"]), True
        return time.time() - float(status.get("started_at") or status["updated_at"]), False

    async def _stop(self, worker: Any, attempt: asyncio.Future) -> Any:
        """Kill a worker whose attempt is being given up and wait (bounded) until it is gone, so
        it cannot write over the job afterwards; returns a fresh worker."""
        try:
            ray.kill(worker, no_restart=True)
            await asyncio.wait_for(asyncio.shield(attempt), timeout=10)
        except (RayError, TimeoutError, GetTimeoutError, ValueError):
            pass
        return self._new_worker()

    def _after_failure(self, job_id: str, reason: str, retryable: bool) -> bool:
        """Retry (True) while attempts are left, else mark the job Failed with the reason."""
        try:
            status = self.store.status(job_id)
        except J.UnreadableJobRecord:
            self._quarantine(job_id)
            return False
        except JobNotFound:
            return False
        if status["state"] != J.RUNNING:
            return False
        if J.failure_action(status, self.cfg.max_job_attempts, retryable) == "retry":
            self.store.move(job_id, J.QUEUED, message=f"attempt {status['attempts']} failed ({reason}); retrying")
            return True
        self.store.move(job_id, J.FAILED, message="failed", error=f"{reason} (after {status['attempts']} attempt(s))")
        self._final.add(job_id)
        return False
