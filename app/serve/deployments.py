"""Ray Serve deployments: the FastAPI ingress, the DIN scorer and the job queue with its workers.

::

    HTTP -> Ingress (FastAPI, auth, limits, job store) --handle--> Scorer (@serve.batch)
                                                       --handle--> JobQueue --actor calls--> ExtendWorker x N

The queue is a single-replica deployment so its lifetime is the application's: on start it
re-queues the jobs a previous instance left Queued or Running (storage holds their state), and
when Serve stops it, its worker actors (owned by it) stop too. Every injectable piece (engine,
extension config class, scorer loader) arrives as an import path or callable in the arguments.
"""


import asyncio
import hashlib
import logging
import time
from typing import Annotated, Any, Literal

import ray
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from starlette.datastructures import UploadFile

from app import __version__
from app.errors import ConfigError, JobNotFound, LookalikeError, ModelNotReady, SeedError
from app.serve import jobs as J
from app.serve.config import ServeConfig
from app.serve.schemas import (
    OPTION_FIELDS,
    ExtendOptions,
    Health,
    JobAccepted,
    JobList,
    JobStatus,
    ScoreRequest,
    ScoreResponse,
)
from app.serve.scoring import CurrentScoreTable, select_keywords, split_batch
from app.serve.uploads import UploadTooLarge, read_seed_files
from app.storage import Storage

log = logging.getLogger("app.serve")
UPLOAD_PATH = "/lookalike/extend-audience"

# ====================================================================== workers and queue


@ray.remote(max_restarts=0, max_task_retries=0)
class ExtendWorker:
    """Runs one job attempt at a time with the extension engine (app.extend.engine)."""

    def run(self, root: str, job_id: str, engine: Any, config_class: Any, defaults: dict, interval: float):
        try:
            return J.run_job(root, job_id, engine, config_class, defaults, interval)
        except (LookalikeError, ValidationError) as exc:  # the job's own fault: no retry
            store = J.JobStore(Storage(root))
            return store.move(job_id, J.FAILED, error=J.describe_error(exc), message="failed")

    def ping(self) -> bool:
        return True


@serve.deployment(name="JobQueue", num_replicas=1)
class JobQueue:
    """FIFO of job ids fed to ``max_concurrent_jobs`` worker actors; bounded retries."""

    async def __init__(self, cfg: dict[str, Any]):
        self.cfg = ServeConfig.model_validate(cfg)
        self.store = J.JobStore(Storage(self.cfg.root))
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._known: set[str] = set()  # queued or running here
        self._workers: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        for _ in range(self.cfg.max_concurrent_jobs):
            self._workers.put_nowait(self._new_worker())
        self.recovered = await run_in_threadpool(self._recover)
        self._loop = asyncio.get_running_loop().create_task(self._dispatch())
        self._rescan_task = asyncio.get_running_loop().create_task(self._rescan())
        log.info("job queue: %d workers, recovered %s", self.cfg.max_concurrent_jobs, self.recovered)

    def _new_worker(self) -> Any:
        return ExtendWorker.options(num_cpus=self.cfg.worker_num_cpus).remote()

    def _recover(self) -> dict[str, int]:
        counts = {"requeued": 0, "failed": 0}
        for status in self.store.all_status():
            action = J.recovery_action(status, self.cfg.max_job_attempts)
            job_id = status["job_id"]
            if action == "fail":
                self.store.move(
                    job_id, J.FAILED, message="failed",
                    error=f"interrupted by a service restart after {status.get('attempts', 0)} attempt(s)",
                )
                counts["failed"] += 1
            elif action == "requeue":
                if status["state"] == J.RUNNING:
                    self.store.move(job_id, J.QUEUED, message="re-queued after a service restart")
                self._enqueue(job_id)
                counts["requeued"] += 1
        return counts

    def _enqueue(self, job_id: str) -> None:
        if job_id not in self._known:
            self._known.add(job_id)
            self._pending.put_nowait(job_id)

    async def submit(self, job_id: str) -> int:
        """Queue a job already written to storage; returns the queue length."""
        self._enqueue(J.validate_job_id(job_id))
        return self._pending.qsize()

    async def stats(self) -> dict[str, Any]:
        return {"queued": self._pending.qsize(), "known": len(self._known), "recovered": self.recovered}

    def check_health(self) -> None:
        for task in (self._loop, self._rescan_task):
            if task.done():
                raise RuntimeError(f"job queue task stopped: {task.exception()!r}")

    async def _rescan(self) -> None:
        """Pick up Queued jobs whose submit call never arrived (the job files are the truth)."""
        while True:
            await asyncio.sleep(self.cfg.rescan_interval_s)
            try:
                statuses = await run_in_threadpool(self.store.all_status)
            except OSError as exc:
                log.warning("job rescan failed: %r", exc)
                continue
            for status in statuses:
                if status["state"] == J.QUEUED and status["job_id"] not in self._known:
                    log.warning("job %s was Queued but not held by the queue; queueing it", status["job_id"])
                    self._enqueue(status["job_id"])

    async def _dispatch(self) -> None:
        while True:
            job_id = await self._pending.get()
            worker = await self._workers.get()
            task = asyncio.get_running_loop().create_task(self._run(job_id, worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: str, worker: Any) -> None:
        cfg, requeued = self.cfg, False
        try:
            try:
                await run_in_threadpool(self.store.move, job_id, J.RUNNING)
            except (LookalikeError, OSError) as exc:  # final already, or vanished
                log.warning("job %s not started: %s", job_id, exc)
                return
            try:
                await worker.run.remote(
                    cfg.root, job_id, cfg.engine, cfg.extend_config_class, cfg.extend, cfg.progress_interval_s
                )
                return
            except RayActorError as exc:
                worker = self._new_worker()
                reason = f"worker died: {J.describe_error(exc)}"
            except RayTaskError as exc:
                reason = J.describe_error(exc.cause if exc.cause is not None else exc)
                log.error("job %s attempt failed:\n%s", job_id, exc)
            requeued = await run_in_threadpool(self._after_failure, job_id, reason)
        finally:
            self._workers.put_nowait(worker)
            if requeued:
                self._pending.put_nowait(job_id)
            else:
                self._known.discard(job_id)

    def _after_failure(self, job_id: str, reason: str) -> bool:
        """Retry (True) while attempts are left, else mark the job Failed with the reason."""
        status = self.store.status(job_id)
        if status["state"] != J.RUNNING:
            return False
        if J.failure_action(status, self.cfg.max_job_attempts, retryable=True) == "retry":
            self.store.move(job_id, J.QUEUED, message=f"attempt {status['attempts']} failed ({reason}); retrying")
            return True
        self.store.move(job_id, J.FAILED, message="failed", error=f"{reason} (after {status['attempts']} attempt(s))")
        return False


# ====================================================================== scorer


@serve.deployment(name="Scorer")
class Scorer:
    """DIN scores for dids x keywords; requests arriving together are scored in one model call."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = ServeConfig.model_validate(cfg)
        self.storage = Storage(self.cfg.root)
        self.loader = J.load_object(self.cfg.scorer_loader)
        self.model: Any = None
        self.error = "not loaded"
        self._tried = 0.0
        self._load()
        self._score.set_max_batch_size(self.cfg.score_max_batch_size)
        self._score.set_batch_wait_timeout_s(self.cfg.score_batch_wait_s)

    def _load(self) -> None:
        self._tried = time.monotonic()
        try:
            self.model = self.loader(self.storage, samples_run=self.cfg.samples_run)
        except (LookalikeError, ImportError, OSError) as exc:  # no model yet: answer 503, retry later
            self.error = J.describe_error(exc)
            log.warning("scorer not ready: %s", self.error)

    async def score(self, dids: list[str], keywords: list[str] | None = None) -> dict[str, Any]:
        if self.model is None:
            if time.monotonic() - self._tried >= self.cfg.scorer_retry_s:
                await run_in_threadpool(self._load)
            if self.model is None:
                return {"error": self.error, "code": 503}
        try:
            names, cols = select_keywords(self.model.keywords, keywords)
        except ValueError as exc:
            return {"error": str(exc), "code": 422}
        part = await self._score(dids)
        scores = part["scores"] if cols is None else part["scores"][:, cols]
        return {"model_version": self.model.version, "keywords": names, "dids": part["dids"],
                "scores": scores, "unknown": part["unknown"], "source": "din"}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _score(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        return await run_in_threadpool(split_batch, requests, self.model)

    async def noop(self) -> int:
        return 0


# ====================================================================== ingress

api = FastAPI(
    title="Lookalike service",
    version=__version__,
    description=(
        "Extend a seed audience with users who look like it (asynchronous jobs), and score users "
        "against keywords with the current DIN model. Every endpoint but /healthz, /noop and the "
        "docs needs the header `X-API-Key`."
    ),
)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="your API key")
UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["seeds"],
                    "properties": {
                        "seeds": {"type": "array", "items": {"type": "string", "format": "binary"},
                                  "description": "seed files: one did per line, or CSV with a `did` column"},
                        "size": {"type": "integer", "minimum": 1},
                        "percentage": {"type": "number", "exclusiveMinimum": 0},
                        "strategy": {"type": "string", "enum": ["din", "jsd"]},
                        "top_n": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}


def _error(code: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=code)


@api.exception_handler(LookalikeError)
async def _lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
    if isinstance(exc, UploadTooLarge):
        return _error(413, str(exc))
    if isinstance(exc, J.InvalidJobId):
        return _error(400, str(exc))
    if isinstance(exc, JobNotFound):
        return _error(404, str(exc))
    if isinstance(exc, ModelNotReady):
        return _error(503, str(exc))
    if isinstance(exc, SeedError | ConfigError):
        return _error(400 if isinstance(exc, SeedError) else 422, str(exc))
    return _error(400, str(exc))


@api.exception_handler(ValidationError)
async def _validation_error(request: Request, exc: ValidationError) -> JSONResponse:
    return _error(422, validation_message(exc))


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length above the route's limit, before reading."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        limits = getattr(api.state, "body_limits", None)
        if scope["type"] == "http" and limits:
            limit = limits["upload"] if scope["path"] == UPLOAD_PATH else limits["other"]
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                    msg = f"request body of {value.decode(errors='replace')} bytes is over the limit of {limit} bytes"
                    await _error(413, msg)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


api.add_middleware(BodyLimit)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit`` bytes (chunked bodies too)."""
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(f"upload is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(scope: dict, body: bytes, max_files: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Seed files and text fields of a buffered multipart body; SeedError if it is malformed."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, receive).form(max_files=max_files, max_fields=20, max_part_size=4096)
    except HTTPException as exc:  # starlette's multipart errors
        raise SeedError(f"malformed multipart upload: {exc.detail}") from exc
    files, fields = [], {}
    try:
        for i, (name, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                files.append((value.filename or f"{name}[{i}]", await value.read()))
            else:
                fields[name] = value
    finally:
        await form.close()
    return files, fields


def _iter_file(storage: Storage, rel: str, chunk: int = 1 << 16):
    with storage.fs.open_input_stream(storage.path(rel)) as f:
        while True:
            data = f.read(chunk)
            if not data:
                return
            yield data


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, scorer: Any, queue: Any, cfg: dict[str, Any], key_owners: dict[str, str]):
        self.cfg = ServeConfig.model_validate(cfg)
        self.scorer, self.queue = scorer, queue
        self.owners = {key_digest(k): owner for k, owner in key_owners.items()}
        if not self.owners:
            raise ConfigError("the ingress got no API keys")
        self.store = J.JobStore(Storage(self.cfg.root))
        self.config_class = J.load_object(self.cfg.extend_config_class)
        api.state.body_limits = {"upload": self.cfg.max_upload_bytes, "other": self.cfg.max_body_bytes}
        self._uploads = asyncio.Semaphore(self.cfg.max_concurrent_uploads)
        self.table = CurrentScoreTable(Storage(self.cfg.root))
        self._table_checked = time.monotonic()
        self._table_refresh: asyncio.Task | None = None
        if self.cfg.score_from_table:
            self.table.refresh()

    def _owner(self, api_key: str | None) -> str:
        owner = self.owners.get(key_digest(api_key)) if api_key else None
        if owner is None:
            raise HTTPException(401, "missing or invalid API key (header X-API-Key)",
                                headers={"WWW-Authenticate": "X-API-Key"})
        return owner

    # ------------------------------------------------------------------ jobs
    @api.post(UPLOAD_PATH, status_code=202, response_model=JobAccepted, openapi_extra=UPLOAD_DOC,
              tags=["lookalike"], summary="Submit seed files; returns a job id at once")
    async def extend_audience(self, request: Request, api_key: str | None = Security(API_KEY)) -> Any:
        owner = self._owner(api_key)
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, f"send multipart/form-data with seed files, not {ctype or 'no content type'!r}")
        async with self._uploads:  # bounds the memory of uploads in flight
            body = await read_capped(request, self.cfg.max_upload_bytes)
            files, fields = await parse_form(request.scope, body, self.cfg.max_seed_files)
            del body
            options = self._options(fields)
            upload = await run_in_threadpool(read_seed_files, files, self.cfg.min_seeds, self.cfg.max_seeds)
        request_doc = {
            "options": options,
            "files": upload.files,
            "seed_lines": upload.lines,
            "seeds": len(upload.seeds),
            "duplicates": upload.duplicates,
        }
        status = await run_in_threadpool(self.store.create, owner, request_doc, upload.seeds)
        job_id = status["job_id"]
        try:
            await self.queue.submit.remote(job_id)
        except Exception as exc:  # noqa: BLE001 - the job is durable; the queue re-reads it on start
            log.error("job %s stored but not queued: %r", job_id, exc)
        return JobAccepted(job_id=job_id, seeds=len(upload.seeds), duplicates=upload.duplicates,
                           url=f"/lookalike/status/{job_id}")

    def _options(self, fields: dict[str, str]) -> dict[str, Any]:
        unknown = sorted(set(fields) - set(OPTION_FIELDS))
        if unknown:
            raise SeedError(f"unknown form field(s) {unknown}; options are {list(OPTION_FIELDS)}")
        raw = {k: v.strip() for k, v in fields.items() if v.strip()}
        opts = ExtendOptions.model_validate(raw)
        try:
            opts.check_limits(self.cfg.max_audience_size, self.cfg.max_percentage)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        options = opts.model_dump(exclude_none=True)
        J.build_extend_config(self.config_class, self.cfg.extend, options)  # the engine's own checks
        return options

    @api.get("/lookalike/status/{job_id}", response_model=JobStatus, tags=["lookalike"],
             summary="Queued, Running (progress), Finished (url, counts) or Failed (error)")
    async def status(self, job_id: str, api_key: str | None = Security(API_KEY)) -> Any:
        owner = self._owner(api_key)
        J.validate_job_id(job_id)
        return JobStatus.from_status(await run_in_threadpool(self.store.status_for, job_id, owner))

    @api.get("/lookalike/extended-audience/{job_id}", tags=["lookalike"],
             response_class=StreamingResponse, summary="The audience CSV (did,score,rank) of a Finished job")
    async def extended_audience(self, job_id: str, api_key: str | None = Security(API_KEY)) -> Any:
        owner = self._owner(api_key)
        J.validate_job_id(job_id)
        status = await run_in_threadpool(self.store.status_for, job_id, owner)
        if status["state"] != J.FINISHED:
            raise HTTPException(409, f"job {job_id} is {status['state']}, not Finished")
        rel = self.store.audience_csv(job_id)
        if not self.store.storage.exists(rel):
            raise HTTPException(410, f"job {job_id} is Finished but its audience file is gone")
        return StreamingResponse(
            _iter_file(self.store.storage, rel), media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="audience-{job_id}.csv"'},
        )

    @api.get("/lookalike/jobs", response_model=JobList, tags=["lookalike"], summary="Your jobs, newest first")
    async def jobs(self, limit: int = 100, api_key: str | None = Security(API_KEY)) -> Any:
        owner = self._owner(api_key)
        limit = min(max(limit, 1), 1000)
        statuses = await run_in_threadpool(self.store.list_for, owner, limit)
        return JobList(jobs=[JobStatus.from_status(s) for s in statuses])

    # ------------------------------------------------------------------ scoring
    @api.post("/score", response_model=ScoreResponse, tags=["scoring"],
              summary="DIN scores of users x keywords (current model)")
    async def score(self, req: ScoreRequest, source: Literal["auto", "table", "din"] = "auto",
                    api_key: str | None = Security(API_KEY)) -> Any:
        """``source=auto`` answers from the current model's score table when it holds every did
        (exactly that model's scores), else computes with DIN in the scoring deployment;
        ``table`` / ``din`` force one path (503 when the table cannot answer)."""
        self._owner(api_key)
        return await self._score(req, source)

    @api.get("/score", response_model=ScoreResponse, tags=["scoring"],
             summary="The same for a few users, as a query: /score?dids=u1&dids=u2[&keywords=k]")
    async def score_get(self, dids: Annotated[list[str], Query(description="users to score")],
                        keywords: Annotated[list[str] | None, Query(description="keywords to return; default all")] = None,
                        source: Literal["auto", "table", "din"] = "auto",
                        api_key: str | None = Security(API_KEY)) -> Any:
        """A GET has no body, and under Ray Serve every request body costs the replica one more
        call back to the proxy to fetch it (measured: about a third of the no-op's requests/s
        at concurrency 1 here), so single-user lookups are cheaper as a query string."""
        self._owner(api_key)
        return await self._score(ScoreRequest(dids=dids, keywords=keywords), source)

    async def _score(self, req: ScoreRequest, source: str) -> Any:
        if len(req.dids) > self.cfg.max_score_dids:
            raise HTTPException(413, f"{len(req.dids)} dids in one request; the limit is {self.cfg.max_score_dids}")
        if source != "din" and self.cfg.score_from_table:
            self._maybe_refresh_table()
            try:
                out = self.table.score(req.dids, req.keywords)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from exc
            if out is not None:
                out["scores"] = out["scores"].tolist()
                return JSONResponse(out)
        if source == "table":
            reason = self.table.reason if self.table.scorer is None else "some dids are not in the score table"
            raise HTTPException(503, f"the score table cannot answer: {reason}")
        out = await self.scorer.score.remote(req.dids, req.keywords)
        if "error" in out:
            raise HTTPException(out["code"], out["error"])
        out["scores"] = out["scores"].tolist()
        return JSONResponse(out)

    def _maybe_refresh_table(self) -> None:
        """Re-check the registry in the background every ``score_table_refresh_s``."""
        now = time.monotonic()
        if now - self._table_checked < self.cfg.score_table_refresh_s:
            return
        if self._table_refresh is not None and not self._table_refresh.done():
            return
        self._table_checked = now
        self._table_refresh = asyncio.get_running_loop().create_task(run_in_threadpool(self.table.refresh))

    # ------------------------------------------------------------------ probes
    @api.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(self) -> Any:
        return {"status": "ok", "root": self.cfg.root or "", "version": __version__}

    @api.get("/noop", tags=["ops"], summary="Does nothing (load-test baseline); via=scorer adds the hop")
    async def noop(self, via: str | None = None) -> Any:
        if via == "scorer":
            await self.scorer.noop.remote()
        return JSONResponse({})

    @api.post("/noop", tags=["ops"], summary="Reads the request body and does nothing (POST baseline)")
    async def noop_post(self, request: Request) -> Any:
        await request.body()
        return JSONResponse({})
