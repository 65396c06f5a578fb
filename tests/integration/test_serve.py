"""The service over HTTP against a real ``serve.run`` on local Ray (one app for the whole pytest run).

Lifecycle, auth and isolation, every bad-input case, worker death, restart recovery, /score; and
what must not take it down: unreadable job records, oversize and trickling bodies, a flooding
tenant, a stuck or silent job, a killed queue actor, a killed cluster (test_serve_cluster.py).
"""

from __future__ import annotations

import csv
import io
import os
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.integration.fixtures_serve import API_KEYS, FAKE_KEYWORDS

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = list(API_KEYS)
H_ALICE, H_BOB, H_CAROL = {"X-API-Key": ALICE}, {"X-API-Key": BOB}, {"X-API-Key": CAROL}


def seeds_file(dids, name="seeds.txt"):
    return ("seeds", (name, ("\n".join(dids) + "\n").encode(), "text/plain"))


def submit(app, files, data=None, headers=H_ALICE):
    return httpx.post(f"{app.url}/lookalike/extend-audience", files=files, data=data or {}, headers=headers,
                      timeout=30)


def wait_for(app, job_id, states, timeout=60, headers=H_ALICE):
    deadline = time.monotonic() + timeout
    while True:
        st = httpx.get(f"{app.url}/lookalike/status/{job_id}", headers=headers, timeout=10).json()
        if st["status"] in states or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def download(app, job_id, headers=H_ALICE):
    return httpx.get(f"{app.url}/lookalike/extended-audience/{job_id}", headers=headers, timeout=30)


def test_probes_and_docs(serve_app):
    health = httpx.get(f"{serve_app.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["checks"] == {"queue": "ok", "cluster": "ok"}
    assert serve_app.root not in health.text and "/tmp" not in health.text
    assert httpx.get(f"{serve_app.url}/noop").status_code == 200
    assert httpx.get(f"{serve_app.url}/noop", params={"via": "scorer"}).status_code == 200
    spec = httpx.get(f"{serve_app.url}/openapi.json").json()
    for path in ("/lookalike/extend-audience", "/lookalike/status/{job_id}", "/lookalike/extended-audience/{job_id}",
                 "/lookalike/jobs", "/score", "/healthz"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/lookalike/extend-audience"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{serve_app.url}/docs").status_code == 200


def test_full_lifecycle(serve_app):
    seeds = [f"u{i}" for i in range(150)]
    r = submit(serve_app, [seeds_file(seeds)], {"size": "300", "strategy": "din", "top_n": "5"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job-id"]
    assert r.json()["seeds"] == 150
    st = wait_for(serve_app, job_id, {"Finished", "Failed"})
    assert st["status"] == "Finished", st
    assert st["url"] == f"/lookalike/extended-audience/{job_id}"
    assert st["counts"]["audience"] == 300 and st["progress"] == 1.0
    got = download(serve_app, job_id)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert len(rows) == 300 and list(rows[0]) == ["did", "score", "rank"]
    assert not set(seeds) & {row["did"] for row in rows}
    mine = httpx.get(f"{serve_app.url}/lookalike/jobs", headers=H_ALICE).json()["jobs"]
    assert job_id in [j["job-id"] for j in mine]
    theirs = httpx.get(f"{serve_app.url}/lookalike/jobs", headers=H_BOB).json()["jobs"]
    assert job_id not in [j["job-id"] for j in theirs]
    # another key gets 404 for everything about this job, the owner still gets it
    assert httpx.get(f"{serve_app.url}/lookalike/status/{job_id}", headers=H_BOB).status_code == 404
    assert download(serve_app, job_id, headers=H_BOB).status_code == 404


def test_csv_and_several_files_with_percentage(serve_app):
    plain = seeds_file([f"u{i}" for i in range(100)], "a.txt")
    table = "age,did\n" + "".join(f"30,u{i}\n" for i in range(50, 160))  # 60 overlap with a.txt
    r = submit(serve_app, [plain, ("seeds", ("b.csv", table.encode(), "text/csv"))], {"percentage": "200"})
    assert r.status_code == 202, r.text
    assert (r.json()["seeds"], r.json()["duplicates"]) == (160, 50)
    st = wait_for(serve_app, r.json()["job-id"], {"Finished", "Failed"})
    assert st["status"] == "Finished" and st["counts"]["audience"] == 320


def test_auth_required(serve_app):
    fake = "0" * 32
    calls = [
        ("post", "/lookalike/extend-audience", {"files": [seeds_file(["u1"])]}),
        ("get", f"/lookalike/status/{fake}", {}),
        ("get", f"/lookalike/extended-audience/{fake}", {}),
        ("get", "/lookalike/jobs", {}),
        ("post", "/score", {"json": {"dids": ["u1"]}}),
    ]
    for method, path, kw in calls:
        for headers in ({}, {"X-API-Key": "wrong-key-123"}, {"X-API-Key": ""}):
            r = httpx.request(method, f"{serve_app.url}{path}", headers=headers, **kw)
            assert r.status_code == 401, (path, headers, r.text)
            assert "API key" in r.json()["detail"] and r.json()["error"] == "unauthorized"
    # the key is checked before the body: no 422 echoing what an unauthenticated caller sent
    for content in (b'{"dids": ["<script>"]', b'{"dids": [NaN]}', b"\xff"):
        r = httpx.post(f"{serve_app.url}/score", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 401 and "script" not in r.text
    assert httpx.get(f"{serve_app.url}/score", params={"dids": "bad did"}).status_code == 401


many = [f"u{i}" for i in range(2001)]
enough = [f"u{i}" for i in range(120)]


@pytest.mark.parametrize(
    "files, data, code, words",
    [
        ([("seeds", ("e.txt", b"", "text/plain"))], {}, 400, "empty"),
        ([("seeds", ("b.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "application/octet-stream"))], {}, 400, "binary"),
        ([("seeds", ("l.txt", ("\n".join(enough) + "\nnot a did\n").encode(), "text/plain"))], {}, 400, "line 121"),
        ([("seeds", ("c.csv", b"name,age\nx,1\n", "text/csv"))], {}, 400, "no 'did' column"),
        ([seeds_file(enough[:99])], {}, 400, "too few seeds: 99"),
        ([seeds_file(many)], {}, 400, "too many seeds"),
        ([("seeds", ("big.txt", b"u1\n" * 30000, "text/plain"))], {}, 413, "declared body of"),
        ([seeds_file(enough)], {"strategy": "magic"}, 422, "strategy"),
        ([seeds_file(enough)], {"size": "0"}, 422, "size"),
        ([seeds_file(enough)], {"size": "-5"}, 422, "size"),
        ([seeds_file(enough)], {"size": "lots"}, 422, "size"),
        ([seeds_file(enough)], {"size": "5001"}, 422, "above the service limit"),
        ([seeds_file(enough)], {"size": "10", "percentage": "200"}, 422, "not both"),
        ([seeds_file(enough)], {"percentage": "0"}, 422, "percentage"),
        ([seeds_file(enough)], {"top_n": "0"}, 422, "top_n"),
        ([seeds_file(enough)], {"colour": "red"}, 400, "unknown form field"),
        ([], {"size": "10"}, 415, "multipart"),
    ],
    ids=["empty", "binary", "malformed-line", "csv-no-did", "too-few", "too-many", "too-many-bytes",
         "strategy", "size-0", "size-negative", "size-text", "size-over", "size-and-pct", "pct-0", "top-n-0",
         "unknown-field", "not-multipart"],
)
def test_bad_uploads_get_4xx_naming_the_problem(serve_app, files, data, code, words):
    r = submit(serve_app, files or None, data)
    assert r.status_code == code, r.text
    assert words in r.json()["detail"]


def test_more_bad_requests(serve_app):
    url = serve_app.url
    # a multipart body without any file, and a truncated multipart body
    r = httpx.post(f"{url}/lookalike/extend-audience", headers={**H_ALICE, "content-type": "multipart/form-data; boundary=xyz"},
                   content=b"--xyz\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n10\r\n--xyz--\r\n")
    assert r.status_code == 400 and "no seed file" in r.json()["detail"]
    r = httpx.post(f"{url}/lookalike/extend-audience", headers={**H_ALICE, "content-type": "multipart/form-data; boundary=xyz"},
                   content=b"--xyz\r\nContent-Disposition: form-data; name=\"seeds\"; filename=\"a\"\r\n\r\nu1")
    assert 400 <= r.status_code < 500
    # job ids: malformed -> 400 before any path, unknown -> 404; traversal never reaches storage
    assert httpx.get(f"{url}/lookalike/status/not-a-job", headers=H_ALICE).status_code == 400
    assert httpx.get(f"{url}/lookalike/status/..%2F..%2Fregistry.json", headers=H_ALICE).status_code in (400, 404)
    assert httpx.get(f"{url}/lookalike/status/{'a' * 32}", headers=H_ALICE).status_code == 404
    assert httpx.get(f"{url}/lookalike/extended-audience/..", headers=H_ALICE).status_code in (400, 404)
    # the replica is still fine
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_score(serve_app):
    url = serve_app.url
    r = httpx.post(f"{url}/score", json={"dids": ["u3", "nobody", "u10"]}, headers=H_ALICE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "fake-v1" and body["keywords"] == FAKE_KEYWORDS
    assert body["source"] == "din"  # no score table in this root: the scoring deployment answers
    r = httpx.post(f"{url}/score", params={"source": "table"}, json={"dids": ["u3"]}, headers=H_ALICE)
    assert r.status_code == 503 and "score table" in r.json()["detail"]
    assert body["dids"] == ["u3", "u10"] and body["unknown"] == ["nobody"]
    assert body["scores"][0] == pytest.approx([(3 * 7 + k) % 100 / 100 for k in range(5)])
    r = httpx.post(f"{url}/score", json={"dids": ["u10"], "keywords": ["music", "news"]}, headers=H_ALICE)
    assert r.json()["scores"] == [pytest.approx([0.73, 0.70])]
    # the same as a query string (no body to fetch from the proxy)
    r = httpx.get(f"{url}/score", params={"dids": ["u3", "nobody", "u10"]}, headers=H_ALICE)
    assert r.status_code == 200 and r.json() == body
    r = httpx.get(f"{url}/score", params={"dids": "u10", "keywords": ["music", "news"]}, headers=H_ALICE)
    assert r.json()["scores"] == [pytest.approx([0.73, 0.70])]
    for params, code in [({}, 422), ({"dids": "bad did"}, 422), ({"dids": "u1", "keywords": "nope"}, 422),
                         ({"dids": "u1", "source": "fast"}, 422)]:
        r = httpx.get(f"{url}/score", params=params, headers=H_ALICE)
        assert r.status_code == code, (params, r.text)
    assert httpx.get(f"{url}/score", params={"dids": "u1"}).status_code == 401
    assert httpx.post(f"{url}/noop", json={"dids": ["u1"]}).status_code == 200
    big = [f"u{i}" for i in range(1000)]
    r = httpx.post(f"{url}/score", json={"dids": big}, headers=H_ALICE, timeout=30)
    assert r.status_code == 200 and len(r.json()["scores"]) == 1000 and len(r.json()["scores"][0]) == 5
    for payload, code in [
        ({"dids": ["u1"], "keywords": ["nope"]}, 422),
        ({"dids": []}, 422),
        ({"dids": ["bad did"]}, 422),
        ({"dids": "u1"}, 422),
        ({"dids": [f"u{i}" for i in range(10_001)]}, 413),
    ]:
        r = httpx.post(f"{url}/score", json=payload, headers=H_ALICE, timeout=30)
        assert r.status_code == code, (payload if len(str(payload)) < 100 else "big", r.text)
    r = httpx.post(f"{url}/score", content=b"{not json", headers={**H_ALICE, "content-type": "application/json"})
    assert r.status_code == 422
    # NaN / Infinity are not JSON: a 422 naming the problem, not a 500
    for content in (b'{"dids": [NaN]}', b'{"dids": ["u1"], "keywords": Infinity}', b'{"dids": -Infinity}',
                    b"[" * 100_000):
        r = httpx.post(f"{url}/score", content=content, headers={**H_ALICE, "content-type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_body"), (content[:30], r.text)


def test_worker_death_retries_then_fails(serve_app):
    r = submit(serve_app, [seeds_file(["crash"] + enough)])
    assert r.status_code == 202
    st = wait_for(serve_app, r.json()["job-id"], {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Failed", st
    assert "worker died" in st["error"] and st["attempts"] == 2


def test_restart_recovery(serve_app):
    done = submit(serve_app, [seeds_file(enough)], {"size": "50"}).json()["job-id"]
    assert wait_for(serve_app, done, {"Finished"})["status"] == "Finished"
    broken = submit(serve_app, [seeds_file(enough)], {"size": "20"}).json()["job-id"]
    assert wait_for(serve_app, broken, {"Finished"})["status"] == "Finished"
    slow = submit(serve_app, [seeds_file(["slow"] + enough)], {"size": "40"}).json()["job-id"]
    queued = submit(serve_app, [seeds_file(enough)], {"size": "30"}).json()["job-id"]
    assert wait_for(serve_app, slow, {"Running"})["status"] == "Running"
    # a damaged record the new queue finds while it recovers must not stop it
    serve_app.write(f"jobs/{broken}/status.json", b'{"job_id": "' + broken[:7].encode())
    serve_app.restart()
    # the finished job still answers; the interrupted one is re-run; the queued one runs too
    assert httpx.get(f"{serve_app.url}/lookalike/status/{done}", headers=H_ALICE).json()["status"] == "Finished"
    assert len(download(serve_app, done).text.splitlines()) == 51
    st = wait_for(serve_app, slow, {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Finished" and st["attempts"] == 2, st
    assert wait_for(serve_app, queued, {"Finished", "Failed"})["counts"]["audience"] == 30
    st = httpx.get(f"{serve_app.url}/lookalike/status/{broken}", headers=H_ALICE).json()
    assert (st["status"], st["error"]) == ("Failed", "unreadable status")
    assert os.path.exists(f"{serve_app.root}/jobs/{broken}/status.unreadable.json")  # quarantined at start


def test_unreadable_records_hurt_only_themselves(serve_app):
    url = serve_app.url
    jobs = [submit(serve_app, [seeds_file(enough)], {"size": "10"}).json()["job-id"] for _ in range(3)]
    for job_id in jobs:
        assert wait_for(serve_app, job_id, {"Finished"})["status"] == "Finished"
    serve_app.write(f"jobs/{jobs[0]}/status.json", b'{"job_id": "' + jobs[0][:5].encode())  # truncated
    serve_app.write(f"jobs/{jobs[1]}/status.json", b"[]")
    listing = httpx.get(f"{url}/lookalike/jobs", headers=H_ALICE)
    assert listing.status_code == 200, listing.text
    shown = {j["job-id"]: (j["status"], j.get("error")) for j in listing.json()["jobs"]}
    assert shown[jobs[0]] == shown[jobs[1]] == ("Failed", "unreadable status")
    assert shown[jobs[2]] == ("Finished", None)
    assert serve_app.root not in listing.text
    assert httpx.get(f"{url}/lookalike/jobs", headers=H_BOB).status_code == 200
    # the other tenants' jobs (and this one's new ones) still run
    r = submit(serve_app, [seeds_file(enough)], {"size": "10"}, headers=H_BOB)
    assert r.status_code == 202, r.text
    assert wait_for(serve_app, r.json()["job-id"], {"Finished", "Failed"}, headers=H_BOB)["status"] == "Finished"
    # the queue's rescan quarantines both and keeps going
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
            os.path.exists(f"{serve_app.root}/jobs/{j}/status.unreadable.json") for j in jobs[:2]):
        time.sleep(0.5)
    assert all(os.path.exists(f"{serve_app.root}/jobs/{j}/status.unreadable.json") for j in jobs[:2])
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_body_limits_say_which_guard_answered(serve_app):
    url = serve_app.url
    big = b"x" * (2 * 1024 * 1024)  # over the 1 MiB limit of every route but the upload

    def chunked(total, chunk=64 * 1024):
        for _ in range(total // chunk):
            yield b"y" * chunk

    for path, headers in (("/noop", {}), ("/score", H_ALICE), ("/healthz", {})):
        r = httpx.post(f"{url}{path}", content=big, headers=headers)  # declared Content-Length
        assert (r.status_code, r.json()["error"], r.json()["guard"]) == (413, "body_too_large", "declared"), path
    # chunked, no length declared: counted as it streams, cut just past the limit
    r = httpx.post(f"{url}/noop", content=chunked(64 * 1024 * 1024), timeout=60)
    assert (r.status_code, r.json()["guard"]) == (413, "streamed")
    assert "limit of 1048576 bytes" in r.json()["detail"]
    r = httpx.post(f"{url}/lookalike/extend-audience", content=chunked(8 * 1024 * 1024), timeout=60,
                   headers={**H_ALICE, "content-type": "multipart/form-data; boundary=xyz"})
    assert (r.status_code, r.json()["guard"]) == (413, "streamed")
    assert "limit of 65536 bytes" in r.json()["detail"]  # the upload route's own limit
    # declared bodies are refused before the key is looked at (no auth work for them)
    r = httpx.post(f"{url}/score", content=big, headers={"X-API-Key": "wrong-key-123"})
    assert r.status_code == 413
    # a body within the limit passes every guard
    assert httpx.post(f"{url}/noop", content=b"z" * 1000).status_code == 200


UPLOAD_BODY = (b'--b\r\nContent-Disposition: form-data; name="seeds"; filename="s.txt"\r\n\r\n'
               + b"".join(b"u%d\n" % i for i in range(150)) + b"\r\n--b--\r\n")


def trickle(url, key, out, index, body=UPLOAD_BODY):
    """An upload sending one byte every 0.3 s; records (seconds, status line) of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (f"POST /lookalike/extend-audience HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n")
    t0 = time.monotonic()
    sock.sendall(head.encode())
    sock.settimeout(0.3)
    reply = b""
    for i in range(len(body)):
        try:
            reply += sock.recv(500)
        except TimeoutError:
            pass
        if reply or time.monotonic() - t0 > 20:
            break
        try:
            sock.sendall(body[i:i + 1])
        except OSError:
            break
    out[index] = (time.monotonic() - t0, reply.split(b"\r\n")[0].decode())
    sock.close()


def test_slow_uploads_hurt_only_their_own_key(serve_app):
    out = {}
    threads = [threading.Thread(target=trickle, args=(serve_app.url, CAROL, out, i)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.monotonic()
    r = submit(serve_app, [seeds_file(enough)], {"size": "10"}, headers=H_BOB)  # another tenant, meanwhile
    assert r.status_code == 202 and time.monotonic() - t0 < 3, r.text
    for t in threads:
        t.join()
    answers = sorted(line for _, line in out.values())
    # per_key.max_uploads = 2: the third is refused at once; the two trickling ones time out
    assert answers == ["HTTP/1.1 408 Request Timeout"] * 2 + ["HTTP/1.1 429 Too Many Requests"], out
    assert all(seconds < 6 for seconds, _ in out.values())  # body_timeout_s = 2 (plus the rate allowance)


def test_upload_places_are_bounded_and_freed_by_the_body_deadline(serve_app):
    """Four trickling uploads of two keys hold the replica's four upload places (max_concurrent_uploads)
    from their first byte: a third key gets 503 with Retry-After at once, never a hang, and gets
    in once the body deadline has dropped them."""
    out = {}
    threads = [threading.Thread(target=trickle, args=(serve_app.url, key, out, i))
               for i, key in enumerate([CAROL, CAROL, ALICE, ALICE])]
    for t in threads:
        t.start()
    time.sleep(0.8)
    t0 = time.monotonic()
    r = submit(serve_app, [seeds_file(enough)], {"size": "10"}, headers=H_BOB)
    assert time.monotonic() - t0 < 2
    assert (r.status_code, r.json()["error"]) == (503, "busy") and int(r.headers["retry-after"]) >= 1, r.text
    assert "upload places" in r.json()["detail"]
    for t in threads:
        t.join()
    assert sorted(line for _, line in out.values()) == ["HTTP/1.1 408 Request Timeout"] * 4, out
    assert submit(serve_app, [seeds_file(enough)], {"size": "10"}, headers=H_BOB).status_code == 202


def test_a_flooding_tenant_gets_429_and_does_not_delay_another(serve_app):
    """carol floods 1 s jobs; bob's job waits for at most the one carol job already running."""
    accepted, refused = [], []
    for _ in range(7):
        r = submit(serve_app, [seeds_file(["nap"] + enough)], {"size": "10"}, headers=H_CAROL)
        (accepted if r.status_code == 202 else refused).append(r)
    assert 4 <= len(accepted) <= 5 and refused, [r.text for r in refused]  # per_key.max_queued_jobs = 4
    assert all(r.status_code == 429 and int(r.headers["retry-after"]) >= 1 for r in refused)
    assert refused[0].json()["error"] == "busy" and "jobs queued or running" in refused[0].json()["detail"]
    bob = submit(serve_app, [seeds_file(["nap"] + enough)], {"size": "10"}, headers=H_BOB).json()["job-id"]
    assert wait_for(serve_app, bob, {"Finished", "Failed"}, headers=H_BOB)["status"] == "Finished"
    carol = [r.json()["job-id"] for r in accepted]
    assert all(wait_for(serve_app, c, {"Finished", "Failed"}, headers=H_CAROL)["status"] == "Finished" for c in carol)
    mine = serve_app.read_status(bob)
    ahead = [c for c in carol if serve_app.read_status(c)["started_at"] < mine["started_at"]]
    assert len(ahead) <= 2, len(ahead)  # not carol's whole backlog
    assert mine["started_at"] - mine["created_at"] < 3.0
    last = serve_app.read_status(carol[-1])
    assert last["started_at"] > mine["started_at"]


def test_silent_or_stuck_jobs_are_stopped_with_a_reason(serve_app):
    frozen = submit(serve_app, [seeds_file(["freeze"] + enough)], {"size": "10"}).json()["job-id"]
    st = wait_for(serve_app, frozen, {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Failed" and st["attempts"] == 2, st  # retried once, then given up
    assert st["error"].startswith("no heartbeat for") and "after 2 attempt(s)" in st["error"]
    stuck = submit(serve_app, [seeds_file(["hang"] + enough)], {"size": "10"}).json()["job-id"]
    running = wait_for(serve_app, stuck, {"Running"})
    assert running["status"] == "Running"
    time.sleep(1.5)
    beat = httpx.get(f"{serve_app.url}/lookalike/status/{stuck}", headers=H_ALICE).json()["heartbeat_at"]
    assert beat > running["created_at"] and time.time() - beat < 2.0  # alive, beating, no progress
    st = wait_for(serve_app, stuck, {"Finished", "Failed"}, timeout=60)
    assert st["status"] == "Failed" and st["attempts"] == 1 and st["error"].startswith("timed out after 10 s"), st


def test_job_errors_speak_the_services_terms(serve_app):
    pathy = submit(serve_app, [seeds_file(["rootpath"] + enough)], {"size": "10"}).json()["job-id"]
    jsd = submit(serve_app, [seeds_file(["jsd"] + enough)], {"size": "10"}).json()["job-id"]
    st = wait_for(serve_app, pathy, {"Finished", "Failed"})
    assert st["status"] == "Failed" and "the storage root" in st["error"], st
    assert serve_app.root not in st["error"] and "/tmp" not in st["error"]
    st = wait_for(serve_app, jsd, {"Finished", "Failed"})
    assert st["error"].startswith("SeedError: the jsd strategy found no feature") and "strategy=din" in st["error"]


def test_killed_queue_actor_shows_in_healthz_and_recovers(serve_app):
    import ray

    url = serve_app.url
    running = submit(serve_app, [seeds_file(["slow"] + enough)], {"size": "10"}).json()["job-id"]
    assert wait_for(serve_app, running, {"Running"})["status"] == "Running"
    name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#JobQueue#" in a["name"])
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    # probe at once: Serve replaces the replica within seconds, and on a loaded machine anything
    # done first (a submit waiting out its queue timeout) can outlast the whole window
    t0, codes = time.monotonic(), []
    while time.monotonic() - t0 < 90:
        h = httpx.get(f"{url}/healthz", timeout=10)
        codes.append(h.status_code)
        if h.status_code == 503:
            assert h.json()["status"] == "unavailable" and h.json()["checks"]["queue"] != "ok"
            assert "retry-after" in h.headers
        if 503 in codes and h.status_code == 200:
            break
        time.sleep(0.1)
    assert 503 in codes and codes[-1] == 200, codes
    r = submit(serve_app, [seeds_file(enough)], {"size": "10"}, headers=H_BOB)
    assert r.status_code == 202, r.text  # the new queue takes work again
    # the job the dead queue was running is re-run by the new one
    st = wait_for(serve_app, running, {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Finished" and st["attempts"] == 2, st


@pytest.mark.slow
def test_real_stack(request, serve_app):
    """The real engine and scorer behind the same service, on the extend fixtures' scored root."""
    from app.extend.scores import resolve_score_table
    from app.registry import Registry
    from app.storage import Storage
    from tests.integration.fixtures_serve import serve_args

    try:
        root = request.getfixturevalue("scored_root")
    except pytest.FixtureLookupError:
        pytest.skip("scored_root fixture not available")
    storage = Storage(root)
    has_din = bool(Registry(storage).read().get("models", {}).get("din", {}).get("current"))
    loader = "app.serve.scoring:load_din_scorer" if has_din else "app.serve.scoring:load_score_table"
    version, _ = resolve_score_table(storage)
    dids = storage.read_table(f"scores/{version}", columns=["did"]).column("did").to_pylist()
    fake_args = serve_app.args
    serve_app.args = serve_args(root, engine="app.extend.engine:extend_audience", scorer_loader=loader,
                                max_seeds=100_000)
    try:
        serve_app.restart(wait_s=120)
        seeds = dids[:120]
        r = submit(serve_app, [seeds_file(seeds)], {"size": "50"})
        assert r.status_code == 202, r.text
        st = wait_for(serve_app, r.json()["job-id"], {"Finished", "Failed"}, timeout=240)
        assert st["status"] == "Finished", st
        rows = list(csv.DictReader(io.StringIO(download(serve_app, r.json()["job-id"]).text)))
        assert len(rows) == 50 and not set(seeds) & {row["did"] for row in rows}
        r = httpx.post(f"{serve_app.url}/score", json={"dids": dids[:3] + ["nobody"]}, headers=H_ALICE, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["dids"] == dids[:3] and r.json()["unknown"] == ["nobody"]
        assert all(0.0 <= x <= 1.0 for row in r.json()["scores"] for x in row)
        # known dids only: the current model's score table answers, and it agrees with live DIN
        fast = httpx.post(f"{serve_app.url}/score", json={"dids": dids[:20]}, headers=H_ALICE, timeout=60).json()
        live = httpx.post(f"{serve_app.url}/score", params={"source": "din"}, json={"dids": dids[:20]},
                          headers=H_ALICE, timeout=60).json()
        assert live["source"] == "din" and fast["dids"] == live["dids"] == dids[:20]
        if has_din:
            assert fast["source"] == "score_table" and fast["model_version"] == live["model_version"]
        assert np.allclose(fast["scores"], live["scores"], atol=1e-5)
    finally:
        serve_app.args = fake_args
        serve_app.restart()
