"""Ray Serve deployments: the FastAPI ingress and the DIN scorer (the job queue is in queue.py).

::

    HTTP -> Ingress (FastAPI, body guard, auth, limits, job store) --handle--> Scorer (@serve.batch)
                                                                  --handle--> JobQueue --> ExtendWorker x N

Every injectable piece (engine, extension config class, scorer loader) arrives as an import path
in the arguments. The ingress never waits on the queue for longer than ``queue_timeout_s`` (503
with ``Retry-After``), reads request bodies only through :class:`app.serve.http.BodyGuard`, and
spools uploads to disk (``tempfile``'s folder) before parsing them a line at a time.

No ``from __future__ import annotations`` here: FastAPI resolves the route signatures of the
class-based view at run time (a string ``Request`` is not a type it can resolve).
"""

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import ray
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.errors import ConfigError, LookalikeError, SeedError
from app.serve import jobs as J
from app.serve.config import ServeConfig, describe_keys
from app.serve.errors import Busy, QueueUnavailable
from app.serve.http import ApiKeyAuth, BodyGuard, error_response, exception_response, key_digest, retry_after
from app.serve.queue import JobQueue
from app.serve.schemas import (
    OPTION_FIELDS,
    ExtendOptions,
    Health,
    JobAccepted,
    JobList,
    JobStatus,
    ScoreRequest,
    ScoreResponse,
    parse_score_body,
    validation_message,
)
from app.serve.scoring import CurrentScoreTable, select_keywords, split_batch
from app.serve.uploads import stream_seed_files
from app.storage import Storage

__all__ = ["Ingress", "JobQueue", "Scorer", "key_digest"]

log = logging.getLogger("app.serve")
UPLOAD_PATH = "/lookalike/extend-audience"

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
            self.error = J.describe_error(exc, self.cfg.root)
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
        "docs needs the header `X-API-Key`. Errors are `{\"detail\": ..., \"error\": code}`."
    ),
)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="your API key")
KEYED = [Security(API_KEY)]  # for the docs: ApiKeyAuth has checked the key before any route runs
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
SCORE_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": ScoreRequest.model_json_schema()}}}}


@api.exception_handler(LookalikeError)
async def _lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
    # messages from storage and the engine may carry the root: name it, never show it
    return exception_response(exc, J.scrub_paths(str(exc), getattr(request.app.state, "root", None)))


#: the error code of a plain HTTPException, by status
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 409: "not_finished",
              410: "gone", 413: "too_many_dids", 415: "not_multipart", 422: "invalid_request",
              503: "unavailable"}


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


@api.exception_handler(ValidationError)
async def _validation_error(request: Request, exc: ValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", validation_message(exc))


@api.exception_handler(RequestValidationError)
async def _request_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts)[:2000])


def _iter_file(storage: Storage, rel: str, chunk: int = 1 << 16) -> Iterator[bytes]:
    with storage.fs.open_input_stream(storage.path(rel)) as f:
        while True:
            data = f.read(chunk)
            if not data:
                return
            yield data


def _close_form(form: FormData | None) -> None:
    if form is None:
        return
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            value.file.close()


def _cluster_state(node_id: str) -> str:
    """'ok' when the cluster's control store answers and lists this replica's node alive."""
    try:
        nodes = ray.nodes()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster is the answer
        return f"the cluster does not answer ({type(exc).__name__})"
    for node in nodes:
        if node.get("NodeID") == node_id:
            return "ok" if node.get("Alive") else "this node is not alive in the cluster"
    return "this node is not in the cluster"


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, scorer: Any, queue: Any, cfg: dict[str, Any], key_owners: dict[str, str]):
        self.cfg = ServeConfig.model_validate(cfg)
        self.scorer, self.queue = scorer, queue
        self.owners = {key_digest(k): owner for k, owner in key_owners.items()}
        if not self.owners:
            raise ConfigError("the ingress got no API keys")
        log.info("ingress: %s", describe_keys(key_owners))
        self.store = J.JobStore(Storage(self.cfg.root))
        self.config_class = J.load_object(self.cfg.extend_config_class)
        self._uploads: dict[str, int] = {}  # owner -> uploads in flight
        self._slots_used = 0  # uploads between their first byte and their stored job
        self._queue_answered = False
        self._cluster_probe: asyncio.Task | None = None
        self._cluster: tuple[float, str] = (0.0, "not checked")
        self.table = CurrentScoreTable(Storage(self.cfg.root))
        self._table_checked = time.monotonic()
        self._table_refresh: asyncio.Task | None = None
        if self.cfg.score_from_table:
            self.table.refresh()

    def __serve_build_asgi_app__(self) -> Any:
        """The app Serve runs (its own copy of ``api``), with the body guard outermost and the key
        check inside it, each given its settings here."""
        app = self.app
        app.state.root = self.cfg.root
        app.add_middleware(ApiKeyAuth, owners=self.owners)
        app.add_middleware(BodyGuard, default_limit=self.cfg.max_body_bytes,
                           limits={UPLOAD_PATH: self.cfg.max_upload_bytes},
                           timeout_s=self.cfg.body_timeout_s, min_rate=self.cfg.body_min_rate)
        return app

    # ------------------------------------------------------------------ the queue, bounded
    async def _call_queue(self, method: str, *args: Any) -> Any:
        response = getattr(self.queue, method).remote(*args)
        try:
            out = await asyncio.wait_for(response, self.cfg.queue_timeout_s)
        except TimeoutError:
            response.cancel()
            raise QueueUnavailable(
                f"the job queue did not answer within {self.cfg.queue_timeout_s:g} s", self.cfg.retry_after_s
            ) from None
        except (RayError, RayServeException) as exc:
            raise QueueUnavailable(f"the job queue is unavailable ({type(exc).__name__})",
                                   self.cfg.retry_after_s) from None
        self._queue_answered = True
        return out

    # ------------------------------------------------------------------ jobs
    @contextlib.contextmanager
    def _owner_upload(self, owner: str) -> Iterator[None]:
        """One of the owner's ``per_key.max_uploads`` upload places, or 429 at once."""
        if self._uploads.get(owner, 0) >= self.cfg.per_key.max_uploads:
            raise Busy(f"{self.cfg.per_key.max_uploads} uploads of this API key are already in progress",
                       retry_after_s=self.cfg.retry_after_s)
        self._uploads[owner] = self._uploads.get(owner, 0) + 1
        try:
            yield
        finally:
            self._uploads[owner] -= 1
            if not self._uploads[owner]:
                del self._uploads[owner]

    @contextlib.contextmanager
    def _upload_slot(self) -> Iterator[None]:
        """One of the replica's ``max_concurrent_uploads`` places, or 503 at once: waiting would
        let the body pile up unread in the replica (Serve hands it over as fast as it comes)."""
        if self._slots_used >= self.cfg.max_concurrent_uploads:
            raise Busy(f"all {self.cfg.max_concurrent_uploads} upload places of this replica are busy",
                       self.cfg.retry_after_s, status=503)
        self._slots_used += 1
        try:
            yield
        finally:
            self._slots_used -= 1

    @staticmethod
    async def _body_started(request: Request) -> Request:
        """Wait for the first piece of the body (the body guard bounds the wait); a request that
        replays it, then reads on."""
        first = await request.receive()
        replayed = False

        async def receive() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await request.receive()

        return Request(request.scope, receive)

    async def _read_form(self, request: Request, admit: asyncio.Future) -> FormData:
        """The multipart body, files spooled to disk as it arrives; ends early when the queue
        refuses the owner meanwhile (or does not answer)."""

        async def form() -> FormData:
            try:
                return await request.form(max_files=self.cfg.max_seed_files, max_fields=20, max_part_size=4096)
            except StarletteHTTPException as exc:  # starlette's multipart errors
                raise SeedError(f"malformed multipart upload: {exc.detail}") from exc

        reading = asyncio.ensure_future(form())
        done, _ = await asyncio.wait({reading, admit}, return_when=asyncio.FIRST_COMPLETED)
        if reading not in done:
            verdict_error = admit.exception()
            refused = verdict_error is not None or not admit.result()["ok"]
            if refused:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, LookalikeError):
                    await reading
                self._refuse(admit)
        return await reading

    def _refuse(self, admit: asyncio.Future) -> None:
        if admit.exception() is not None:
            raise admit.exception()
        verdict = admit.result()
        if not verdict["ok"]:
            raise Busy(f"this API key has {verdict['backlog']} jobs queued or running (the limit is "
                       f"{verdict['limit']})", retry_after_s=verdict["retry_after_s"])

    @api.post(UPLOAD_PATH, status_code=202, response_model=JobAccepted, openapi_extra=UPLOAD_DOC,
              tags=["lookalike"], summary="Submit seed files; returns a job id at once", dependencies=KEYED)
    async def extend_audience(self, request: Request) -> Any:
        owner = request.state.owner
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, f"send multipart/form-data with seed files, not {ctype[:80] or 'no content type'!r}")
        with self._owner_upload(owner):  # 429 at once past per_key.max_uploads
            request = await self._body_started(request)
            with self._upload_slot():  # taken once the body arrives, kept until the job is stored
                admit = asyncio.ensure_future(self._call_queue("admit", owner))
                form = None
                try:
                    form = await self._read_form(request, admit)
                    files = [(v.filename or f"{k}[{i}]", v.file) for i, (k, v) in enumerate(form.multi_items())
                             if isinstance(v, UploadFile)]
                    fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
                    options = self._options(fields)
                    await admit
                    self._refuse(admit)
                    status, upload = await run_in_threadpool(self._store_job, owner, options, files)
                finally:
                    if not admit.done():
                        admit.cancel()
                    elif not admit.cancelled():
                        admit.exception()  # retrieved: a queue error here was answered already
                    _close_form(form)
        job_id = status["job_id"]
        try:
            await self._call_queue("submit", job_id, owner)
        except QueueUnavailable as exc:  # the job is durable; the queue's rescan picks it up
            log.error("job %s stored but not queued: %s", job_id, exc)
        return JobAccepted(job_id=job_id, seeds=upload.distinct, duplicates=upload.duplicates,
                           url=f"/lookalike/status/{job_id}")

    def _store_job(self, owner: str, options: dict[str, Any], files: list[tuple[str, Any]]) -> tuple[dict, Any]:
        """Parse the spooled seed files a line at a time into a local file of distinct seeds,
        then write the job (in a worker thread)."""
        for _, f in files:
            f.seek(0)
        fd, seeds_path = tempfile.mkstemp(prefix="lookalike-seeds-")
        try:
            with os.fdopen(fd, "wb") as out:
                upload = stream_seed_files(files, out, self.cfg.min_seeds, self.cfg.max_seeds)
            request_doc = {"options": options, "files": upload.files, "seed_lines": upload.lines,
                           "seeds": upload.distinct, "duplicates": upload.duplicates}
            return self.store.create(owner, request_doc, seeds_file=seeds_path), upload
        finally:
            os.unlink(seeds_path)

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

    @api.get("/lookalike/status/{job_id}", response_model=JobStatus, tags=["lookalike"], dependencies=KEYED,
             summary="Queued, Running (progress), Finished (url, counts) or Failed (error)")
    async def status(self, job_id: str, request: Request) -> Any:
        J.validate_job_id(job_id)
        return JobStatus.from_status(await run_in_threadpool(self.store.status_for, job_id, request.state.owner))

    @api.get("/lookalike/extended-audience/{job_id}", tags=["lookalike"], dependencies=KEYED,
             response_class=StreamingResponse, summary="The audience CSV (did,score,rank) of a Finished job")
    async def extended_audience(self, job_id: str, request: Request) -> Any:
        J.validate_job_id(job_id)
        status = await run_in_threadpool(self.store.status_for, job_id, request.state.owner)
        if status["state"] != J.FINISHED:
            raise HTTPException(409, f"job {job_id} is {status['state']}, not Finished")
        rel = self.store.audience_csv(job_id)
        if not self.store.storage.exists(rel):
            raise HTTPException(410, f"job {job_id} is Finished but its audience file is gone")
        return StreamingResponse(
            _iter_file(self.store.storage, rel), media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="audience-{job_id}.csv"'},
        )

    @api.get("/lookalike/jobs", response_model=JobList, tags=["lookalike"], dependencies=KEYED,
             summary="Your jobs, newest first")
    async def jobs(self, request: Request, limit: int = 100, cursor: str | None = None) -> Any:
        """A page of the key's jobs, newest first; ``next_cursor`` fetches the next one."""
        limit = min(max(limit, 1), 1000)
        statuses, next_cursor = await run_in_threadpool(self.store.list_for, request.state.owner, limit, cursor)
        return JobList(jobs=[JobStatus.from_status(s) for s in statuses], next_cursor=next_cursor)

    # ------------------------------------------------------------------ scoring
    @api.post("/score", response_model=ScoreResponse, tags=["scoring"], dependencies=KEYED,
              openapi_extra=SCORE_DOC, summary="DIN scores of users x keywords (current model)")
    async def score(self, request: Request, source: Literal["auto", "table", "din"] = "auto") -> Any:
        """``source=auto`` answers from the current model's score table when it holds every did
        (exactly that model's scores), else computes with DIN in the scoring deployment;
        ``table`` / ``din`` force one path (503 when the table cannot answer). The body is read
        and validated only after the key was accepted."""
        return await self._score(parse_score_body(await request.body()), source)

    @api.get("/score", response_model=ScoreResponse, tags=["scoring"], dependencies=KEYED,
             summary="The same for a few users, as a query: /score?dids=u1&dids=u2[&keywords=k]")
    async def score_get(self, dids: Annotated[list[str], Query(description="users to score")],
                        keywords: Annotated[list[str] | None, Query(description="keywords to return; default all")] = None,
                        source: Literal["auto", "table", "din"] = "auto") -> Any:
        """A GET has no body, and under Ray Serve every request body costs the replica one more
        call back to the proxy to fetch it (measured: about a third of the no-op's requests/s
        at concurrency 1 here), so single-user lookups are cheaper as a query string."""
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
            raise HTTPException(503, f"the score table cannot answer: {J.scrub_paths(reason, self.cfg.root)}")
        out = await self.scorer.score.remote(req.dids, req.keywords)
        if "error" in out:
            raise HTTPException(out["code"], J.scrub_paths(out["error"], self.cfg.root))
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
    async def _check_cluster(self) -> str:
        """This node alive in the cluster, asked in a thread (one at a time, cached 1 s): a
        cluster whose control store is gone never answers, and that is the answer."""
        at, verdict = self._cluster
        if time.monotonic() - at < 1.0:
            return verdict
        if self._cluster_probe is None or self._cluster_probe.done():
            node = ray.get_runtime_context().get_node_id()
            self._cluster_probe = asyncio.ensure_future(run_in_threadpool(_cluster_state, node))
        try:
            verdict = await asyncio.wait_for(asyncio.shield(self._cluster_probe), self.cfg.health_timeout_s)
        except TimeoutError:
            verdict = f"the cluster did not answer within {self.cfg.health_timeout_s:g} s"
        self._cluster = (time.monotonic(), verdict)
        return verdict

    async def _check_queue(self) -> str:
        try:
            await asyncio.wait_for(self._call_queue("health"), self.cfg.health_timeout_s)
        except (QueueUnavailable, TimeoutError) as exc:
            return str(exc) or "the job queue did not answer"
        return "ok"

    @api.get("/healthz", response_model=Health, tags=["ops"],
             summary="200 when the job queue and the cluster answer; 503 (starting or unavailable) otherwise")
    async def healthz(self) -> Any:
        queue, cluster = await asyncio.gather(self._check_queue(), self._check_cluster())
        checks = {"queue": queue, "cluster": cluster}
        if queue == "ok" and cluster == "ok":
            return {"status": "ok", "version": __version__, "checks": checks}
        state = "starting" if not self._queue_answered else "unavailable"
        return JSONResponse({"status": state, "version": __version__, "checks": checks}, status_code=503,
                            headers=retry_after(self.cfg.retry_after_s))

    @api.get("/noop", tags=["ops"], summary="Does nothing (load-test baseline); via=scorer adds the hop")
    async def noop(self, via: str | None = None) -> Any:
        if via == "scorer":
            await self.scorer.noop.remote()
        return JSONResponse({})

    @api.post("/noop", tags=["ops"], summary="Reads the request body and does nothing (POST baseline)")
    async def noop_post(self, request: Request) -> Any:
        await request.body()
        return JSONResponse({})
