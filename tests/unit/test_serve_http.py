"""The ASGI middlewares (body guard, API keys) and the error -> status mapping, driven with
hand-made ASGI messages (no server, no Ray)."""

import asyncio
import json

import pytest

from app.errors import ConfigError, JobNotFound, LookalikeError, ModelNotReady, SeedError
from app.serve import errors as E
from app.serve.http import ApiKeyAuth, BodyGuard, error_status, key_digest


async def reading_app(scope, receive, send):
    """Reads the whole body, answers 200 with its length (a route like POST /noop)."""
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"read": total, **scope.get("state", {})}).encode()})


def call(app, path="/x", headers=(), chunks=(b"",), delays=None):
    """Run one request; returns (status, json body, headers). ``delays[i]`` sleeps before chunk i."""
    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []
    step = {"i": 0}

    async def receive():
        i = step["i"]
        step["i"] += 1
        if delays and i < len(delays):
            await asyncio.sleep(delays[i])
        if i < len(messages):
            return messages[i]
        await asyncio.sleep(3600)  # waiting for a disconnect that never comes

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), {k.decode(): v.decode() for k, v in start["headers"]}, step["i"]


def guard(app=reading_app, **kw):
    return BodyGuard(app, default_limit=kw.pop("default_limit", 100), limits={"/upload": 1000}, **kw)


def test_declared_length_over_the_limit_is_refused_before_the_app_runs():
    status, body, _, reads = call(guard(), headers=[("Content-Length", "101")], chunks=[b"x" * 101])
    assert (status, body["error"], body["guard"]) == (413, "body_too_large", "declared")
    assert "declared body of 101 bytes" in body["detail"] and reads == 0  # not one byte read
    status, body, _, _ = call(guard(), headers=[("Content-Length", "abc")])
    assert (status, body["guard"]) == (413, "declared")


def test_each_route_has_its_own_limit():
    assert call(guard(), "/upload", [("Content-Length", "900")], [b"x" * 900])[0] == 200
    assert call(guard(), "/upload", [("Content-Length", "1001")], [b"x" * 1001])[0] == 413
    assert call(guard(), "/other", [("Content-Length", "100")], [b"x" * 100])[0] == 200


def test_streamed_body_is_cut_at_the_limit_whatever_it_declares():
    chunks = [b"x" * 40] * 10  # 400 bytes, chunked (no Content-Length)
    status, body, _, reads = call(guard(), chunks=chunks)
    assert (status, body["error"], body["guard"]) == (413, "body_too_large", "streamed")
    assert "stopped reading at 120 bytes" in body["detail"] and reads == 3
    # a Content-Length that lies (small) does not help either
    status, body, _, _ = call(guard(), headers=[("Content-Length", "10")], chunks=chunks)
    assert (status, body["guard"]) == (413, "streamed")
    assert call(guard(), chunks=[b"x" * 50, b"x" * 50])[1] == {"read": 100}


def test_a_trickling_body_gets_408_and_a_steady_one_passes():
    slow = guard(timeout_s=0.3, min_rate=1000)  # 0.3 s plus 1 s per 1000 bytes
    status, body, headers, _ = call(slow, chunks=[b"x"] * 50, delays=[0.05] * 50)
    assert (status, body["error"]) == (408, "body_too_slow") and headers["connection"] == "close"
    # each chunk of 100 bytes buys 0.1 s: 0.05 s apart is fast enough
    status, body, _, _ = call(slow, "/upload", chunks=[b"x" * 100] * 10, delays=[0.05] * 10)
    assert (status, body) == (200, {"read": 1000})
    # a body that never comes
    status, body, _, _ = call(slow, chunks=[b"x"], delays=[5])
    assert status == 408


def test_auth_runs_before_the_route_reads_anything():
    owners = {key_digest("key-alice-01"): "alice"}
    app = ApiKeyAuth(reading_app, owners=owners)
    for headers in ([], [("X-API-Key", "wrong-key-1")], [("X-API-Key", "")]):
        status, body, hdrs, reads = call(app, "/score", headers, [b'{"dids": [NaN]}'])
        assert (status, body["error"], reads) == (401, "unauthorized", 0)
        assert hdrs["www-authenticate"] == "X-API-Key" and "NaN" not in json.dumps(body)
    status, body, _, _ = call(app, "/score", [("X-API-Key", "key-alice-01")], [b"abc"])
    assert (status, body) == (200, {"read": 3, "owner": "alice"})
    assert call(app, "/healthz")[0] == 200 and call(app, "/noop")[0] == 200  # public probes


def test_body_guard_answers_before_auth():
    app = guard(ApiKeyAuth(reading_app, owners={}))
    status, body, _, _ = call(app, "/score", [("Content-Length", "5000")], [b"x" * 5000])
    assert (status, body["error"]) == (413, "body_too_large")  # not 401: no auth work for it


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (E.UploadTooLarge("x", guard="declared"), 413, "body_too_large"),
        (E.BodyTooSlow("x"), 408, "body_too_slow"),
        (E.Unauthorized("x"), 401, "unauthorized"),
        (E.Busy("x", 2.2), 429, "busy"),
        (E.Busy("x", 3, status=503), 503, "busy"),
        (E.QueueUnavailable("x", 5), 503, "queue_unavailable"),
        (E.InvalidJobId("x"), 400, "invalid_job_id"),
        (JobNotFound("x"), 404, "job_not_found"),
        (ModelNotReady("x"), 503, "model_not_ready"),
        (E.InvalidRequestBody("x"), 422, "invalid_body"),
        (ConfigError("x"), 422, "invalid_option"),
        (SeedError("x"), 400, "bad_seeds"),
        (E.UnreadableJobRecord("x"), 500, "unreadable_job_record"),
        (LookalikeError("x"), 400, "bad_request"),
    ],
)
def test_error_status(exc, status, code):
    got_status, got_code, headers = error_status(exc)
    assert (got_status, got_code) == (status, code)
    if isinstance(exc, E.Busy | E.QueueUnavailable):
        assert int(headers["Retry-After"]) >= 1
    if isinstance(exc, E.Busy) and status == 429:
        assert headers["Retry-After"] == "3"  # 2.2 s rounded up
