"""The service over HTTP against a real ``serve.run`` on local Ray (one app for the whole pytest run).

Lifecycle, auth and isolation, every bad-input case, worker death, restart recovery, /score.
"""

from __future__ import annotations

import csv
import io
import time

import httpx
import numpy as np
import pytest

from tests.integration.fixtures_serve import API_KEYS, FAKE_KEYWORDS

pytestmark = pytest.mark.integration

ALICE, BOB = list(API_KEYS)
H_ALICE, H_BOB = {"X-API-Key": ALICE}, {"X-API-Key": BOB}


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
    assert httpx.get(f"{serve_app.url}/healthz").json()["status"] == "ok"
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
            assert "API key" in r.json()["detail"]


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
        ([("seeds", ("big.txt", b"u1\n" * 30000, "text/plain"))], {}, 413, "over the limit"),
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


def test_worker_death_retries_then_fails(serve_app):
    r = submit(serve_app, [seeds_file(["crash"] + enough)])
    assert r.status_code == 202
    st = wait_for(serve_app, r.json()["job-id"], {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Failed", st
    assert "worker died" in st["error"] and st["attempts"] == 2


def test_restart_recovery(serve_app):
    done = submit(serve_app, [seeds_file(enough)], {"size": "50"}).json()["job-id"]
    assert wait_for(serve_app, done, {"Finished"})["status"] == "Finished"
    slow = submit(serve_app, [seeds_file(["slow"] + enough)], {"size": "40"}).json()["job-id"]
    queued = submit(serve_app, [seeds_file(enough)], {"size": "30"}).json()["job-id"]
    assert wait_for(serve_app, slow, {"Running"})["status"] == "Running"
    serve_app.restart()
    # the finished job still answers; the interrupted one is re-run; the queued one runs too
    assert httpx.get(f"{serve_app.url}/lookalike/status/{done}", headers=H_ALICE).json()["status"] == "Finished"
    assert len(download(serve_app, done).text.splitlines()) == 51
    st = wait_for(serve_app, slow, {"Finished", "Failed"}, timeout=90)
    assert st["status"] == "Finished" and st["attempts"] == 2, st
    assert wait_for(serve_app, queued, {"Finished", "Failed"})["counts"]["audience"] == 30


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
