"""The HTTP edge of the service: two pure ASGI middlewares and the error -> status mapping.

Order of a request through the ingress replica (outermost first)::

    BodyGuard   413 for a declared Content-Length over the route's limit, before anything else;
                counts body bytes as they stream (chunked bodies too): 413 past the limit, 408 when
                they arrive slower than the minimum rate
    ApiKeyAuth  401 unless X-API-Key names an owner (public probes and docs excepted); the owner
                goes into ``request.state.owner``
    FastAPI     routes, then :func:`error_status` for the project's exceptions

Both middlewares get their settings as constructor arguments (the ingress adds them to the
FastAPI app Serve actually runs, in ``__serve_build_asgi_app__``), never from module state.
Every error answer is ``{"detail": message, "error": code}``; the code says which check answered
(``body_too_large`` also carries ``guard``: ``declared`` or ``streamed``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.responses import JSONResponse

from app.errors import ConfigError, JobNotFound, LookalikeError, ModelNotReady, SeedError
from app.serve.errors import (
    BodyTooSlow,
    Busy,
    InvalidCursor,
    InvalidJobId,
    InvalidRequestBody,
    QueueUnavailable,
    Unauthorized,
    UnreadableJobRecord,
    UploadTooLarge,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_KEY_HEADER = b"x-api-key"
#: routes that answer without a key (probes and API docs)
PUBLIC_PATHS = frozenset({"/healthz", "/noop", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": message, "error": code, **extra}, status_code=status, headers=dict(headers or {}))


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_status(exc: LookalikeError) -> tuple[int, str, dict[str, str]]:
    """(HTTP status, error code, headers) of one of the project's exceptions."""
    if isinstance(exc, UploadTooLarge):
        return 413, "body_too_large", {}
    if isinstance(exc, BodyTooSlow):
        return 408, "body_too_slow", {"Connection": "close"}
    if isinstance(exc, Unauthorized):
        return 401, "unauthorized", {"WWW-Authenticate": "X-API-Key"}
    if isinstance(exc, Busy):
        return exc.status, "busy", retry_after(exc.retry_after_s)
    if isinstance(exc, QueueUnavailable):
        return 503, "queue_unavailable", retry_after(exc.retry_after_s)
    if isinstance(exc, InvalidJobId):
        return 400, "invalid_job_id", {}
    if isinstance(exc, InvalidCursor):
        return 400, "invalid_cursor", {}
    if isinstance(exc, JobNotFound):
        return 404, "job_not_found", {}
    if isinstance(exc, ModelNotReady):
        return 503, "model_not_ready", {}
    if isinstance(exc, UnreadableJobRecord):
        return 500, "unreadable_job_record", {}
    if isinstance(exc, InvalidRequestBody):
        return 422, "invalid_body", {}
    if isinstance(exc, ConfigError):
        return 422, "invalid_option", {}
    if isinstance(exc, SeedError):
        return 400, "bad_seeds", {}
    return 400, "bad_request", {}


def exception_response(exc: LookalikeError, message: str | None = None) -> JSONResponse:
    status, code, headers = error_status(exc)
    extra = {"guard": exc.guard} if isinstance(exc, UploadTooLarge) else {}
    return error_response(status, code, str(exc) if message is None else message, headers, **extra)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class BodyGuard:
    """Pure ASGI middleware: one body limit per route, for declared and streamed bodies alike,
    and a minimum arrival rate.

    ``limits`` maps a path to its byte limit; every other path gets ``default_limit``. A declared
    ``Content-Length`` over the limit is answered 413 (``guard: declared``) before the app runs
    (so before authentication). Bytes are counted as the app receives them: past the limit the
    app's ``receive`` raises :class:`UploadTooLarge` (``guard: streamed``). The body must arrive
    by ``timeout_s`` after the request started plus one second per ``min_rate`` bytes received;
    a read that would pass that deadline raises :class:`BodyTooSlow` (408).
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: Mapping[str, int] | None = None,
                 timeout_s: float = 10.0, min_rate: int = 64 * 1024):
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})
        self.timeout_s, self.min_rate = timeout_s, min_rate

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            shown = declared.decode(errors="replace")[:30]
            exc = UploadTooLarge(f"declared body of {shown} bytes is over this route's limit of {limit} bytes",
                                 guard="declared")
            await exception_response(exc)(scope, receive, send)
            return
        started = time.monotonic()
        state = {"bytes": 0, "done": False, "responded": False}

        async def guarded_receive() -> dict[str, Any]:
            if state["done"]:
                return await receive()  # after the body: waiting for a disconnect, not timed
            deadline = started + self.timeout_s + state["bytes"] / self.min_rate
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):  # no extra task
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(
                    f"request body too slow: {state['bytes']} bytes in {time.monotonic() - started:.0f} s "
                    f"(allowed: {self.timeout_s:g} s plus 1 s per {self.min_rate} bytes)"
                ) from None
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > limit:
                    raise UploadTooLarge(
                        f"streamed body is over this route's limit of {limit} bytes "
                        f"(stopped reading at {state['bytes']} bytes)", guard="streamed")
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state["responded"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except (UploadTooLarge, BodyTooSlow) as exc:  # raised where no handler answered it
            if not state["responded"]:
                await exception_response(exc)(scope, receive, send)


class ApiKeyAuth:
    """Pure ASGI middleware: the owner of the ``X-API-Key`` header, or 401, before any route
    reads or validates anything. ``owners`` maps sha256 digests of keys to owners."""

    def __init__(self, app: ASGIApp, owners: Mapping[str, str], public: frozenset[str] = PUBLIC_PATHS):
        self.app = app
        self.owners = dict(owners)
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        key = _header(scope, API_KEY_HEADER)
        owner = self.owners.get(key_digest(key.decode(errors="replace"))) if key else None
        if owner is None:
            exc = Unauthorized("missing or invalid API key (header X-API-Key)")
            await exception_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)
