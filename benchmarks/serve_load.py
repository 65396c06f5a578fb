"""Bounded load test of the lookalike service on localhost.

For each concurrency (default 1, 10, 100) it drives, one endpoint at a time and bounded by a
request count and a time limit:

    noop         GET /noop                 the Serve floor (ingress only)
    noop_hop     GET /noop?via=scorer      the floor plus one handle call to the scoring deployment
    score1       POST /score, one did      the scoring path (the current model's score table when
                                           it holds the did: no hop, no model call)
    noop_post    POST /noop                the floor for a request with a body (Serve's replica calls
                                           back to the proxy to fetch every body)
    score1_get   GET /score?dids=<did>     one did as a query string (no body)
    score1_din   POST /score?source=din    the same, always computed by DIN in the scoring deployment
    submit       POST /lookalike/extend-audience with a small seed file

and prints p50/p99 latency, requests/s and error count for each (the endpoints of one concurrency
take turns in `--rounds` slices so background load hits them alike), then one POST /score carrying
``--big-dids`` dids x all keywords (dids/s), and finally the state of every submitted job (none may
be lost). One JSON line per figure, then a summary line.

    # against a running service (LOOKALIKE_API_KEYS=... serve run configs/serve.yaml)
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --api-key <your key>
    # start the service in-process on a free port (local Ray); synthetic scorer, no model needed
    python benchmarks/serve_load.py --start --set scorer_loader=app.serve.scoring:synthetic_scorer
    # a few seconds only
    python benchmarks/serve_load.py --start --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from typing import Any

import httpx
import numpy as np

API_KEY = "bench-key-0001"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def drive(client: httpx.AsyncClient, make_request, concurrency: int, max_requests: int,
                max_seconds: float) -> dict[str, Any]:
    """``concurrency`` clients send requests until ``max_requests`` or ``max_seconds``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + max_seconds
    outputs: list[Any] = []

    async def one_client() -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await make_request(client)
                ok = r.status_code < 400
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                ok, key, r = False, type(exc).__name__, None
            dt = time.perf_counter() - t0
            if ok:
                latencies.append(dt)
                outputs.append(r)
            else:
                errors[key] = errors.get(key, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return {"concurrency": concurrency, "requests": sent, "error_kinds": errors,
            "wall_s": time.perf_counter() - t0, "_latencies": latencies, "_outputs": outputs}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one (endpoint, concurrency) from its rounds: total ok over total wall time."""
    latencies = [x for p in parts for x in p["_latencies"]]
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["error_kinds"].items():
            errors[k] = errors.get(k, 0) + v
    wall = sum(p["wall_s"] for p in parts)
    return {
        "concurrency": parts[0]["concurrency"],
        "rounds": len(parts),
        "requests": sum(p["requests"] for p in parts),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "req_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "wall_s": round(wall, 2),
        "_outputs": [o for p in parts for o in p["_outputs"]],
    }


def seed_upload(dids: list[str], n: int) -> dict[str, Any]:
    body = "\n".join(random.sample(dids, n)) + "\n"
    return {"files": [("seeds", ("seeds.txt", body.encode(), "text/plain"))], "data": {"size": "100"}}


async def run(args: argparse.Namespace, url: str, key: str) -> list[dict[str, Any]]:
    headers = {"X-API-Key": key}
    limits = httpx.Limits(max_connections=max(args.concurrency) + 10, max_keepalive_connections=max(args.concurrency) + 10)
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout, limits=limits) as client:
        probe = await client.post("/score", json={"dids": args.dids[:1]})
        if probe.status_code != 200:
            print(f"warning: /score answers {probe.status_code}: {probe.text[:200]}", file=sys.stderr)
        keywords = len(probe.json().get("keywords", [])) if probe.status_code == 200 else 0
        endpoints = {
            "noop": lambda c: c.get("/noop"),
            "noop_hop": lambda c: c.get("/noop", params={"via": "scorer"}),
            "score1": lambda c: c.post("/score", json={"dids": [random.choice(args.dids)]}),
            "noop_post": lambda c: c.post("/noop", json={"dids": [random.choice(args.dids)]}),
            "score1_get": lambda c: c.get("/score", params={"dids": random.choice(args.dids)}),
            "score1_din": lambda c: c.post("/score", params={"source": "din"},
                                           json={"dids": [random.choice(args.dids)]}),
            "submit": lambda c: c.post("/lookalike/extend-audience", **seed_upload(args.dids, args.seeds)),
        }
        job_ids: list[str] = []

        def report(name: str, res: dict[str, Any]) -> None:
            if name == "submit":
                job_ids.extend(r.json()["job-id"] for r in res["_outputs"])
            res = {"bench": "serve_load", "endpoint": name,
                   **{k: v for k, v in res.items() if not k.startswith("_")}}
            print(json.dumps(res), flush=True)
            out.append(res)

        # The endpoints of one concurrency take turns in `rounds` short slices, so a change in the
        # machine's background load hits them alike and their ratios stay comparable.
        timed = [e for e in args.endpoints if e != "submit"]
        for conc in args.concurrency:
            parts: dict[str, list[dict[str, Any]]] = {name: [] for name in timed}
            for _ in range(args.rounds):
                for name in timed:
                    parts[name].append(await drive(client, endpoints[name], conc,
                                                   max(1, args.requests // args.rounds),
                                                   args.seconds / args.rounds))
            for name in timed:
                report(name, merge(parts[name]))
        # one request carrying many dids x all keywords
        big = args.dids[: args.big_dids]
        for source in ("auto", "din"):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                r = await client.post("/score", params={"source": source}, json={"dids": big})
                times.append(time.perf_counter() - t0)
            best = min(times)
            ok = r.status_code == 200
            res = {"bench": "serve_load", "endpoint": "score_many", "requested_source": source,
                   "source": r.json().get("source") if ok else None, "dids": len(big), "keywords": keywords,
                   "status": r.status_code, "scored": len(r.json().get("dids", [])) if ok else 0,
                   "best_s": round(best, 4), "dids_per_s": round(len(big) / best, 1),
                   "scores_per_s": round(len(big) * keywords / best, 1)}
            print(json.dumps(res), flush=True)
            out.append(res)
        # every accepted job starts real extension work on the same 2 cores, so submissions are
        # measured last: earlier points would otherwise share the CPU with running jobs
        if "submit" in args.endpoints:
            for conc in args.concurrency:
                report("submit", merge([await drive(client, endpoints["submit"], conc, args.requests, args.seconds)]))
        if job_ids:
            out.append(await job_outcomes(client, job_ids, args.job_wait_s))
            print(json.dumps(out[-1]), flush=True)
    return out


async def job_outcomes(client: httpx.AsyncClient, job_ids: list[str], wait_s: float) -> dict[str, Any]:
    """Final states of the submitted jobs; 'lost' counts ids the service no longer knows."""
    deadline = time.perf_counter() + wait_s
    while True:
        states: dict[str, int] = {}
        for job_id in job_ids:
            r = await client.get(f"/lookalike/status/{job_id}")
            state = r.json()["status"] if r.status_code == 200 else f"http_{r.status_code}"
            states[state] = states.get(state, 0) + 1
        pending = states.get("Queued", 0) + states.get("Running", 0)
        if not pending or time.perf_counter() > deadline:
            break
        await asyncio.sleep(1.0)
    lost = sum(v for k, v in states.items() if k.startswith("http_"))
    return {"bench": "serve_load", "endpoint": "jobs", "submitted": len(job_ids), "states": states, "lost": lost}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(args: argparse.Namespace) -> str:
    from app.config import apply_overrides
    from app.serve.commands import app_args

    app_cfg = app_args(args.config, None, args.root)
    app_cfg["api_keys"] = {**app_cfg.get("api_keys", {}), API_KEY: "bench"}
    # one key drives every request here: lift its per-key limits so they do not cap the figures
    # (a --set per_key.max_queued_jobs=... override still wins)
    app_cfg["per_key"] = {**app_cfg.get("per_key", {}), "max_uploads": 1000, "max_queued_jobs": 1_000_000}
    app_cfg = apply_overrides(app_cfg, args.overrides)
    return run_local_service(app_cfg)


def run_local_service(app_cfg: dict[str, Any], timeout_s: float = 180) -> str:
    """Start the application on a free loopback port under the local Ray; its URL once healthy."""
    from ray import serve

    from app.ray_utils import init_ray
    from app.serve.app import build_app

    port = free_port()
    init_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    serve.run(build_app(app_cfg), name="lookalike", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("service did not become healthy")


def known_dids(args: argparse.Namespace) -> list[str]:
    if args.dids_from:
        from app.extend.scores import resolve_score_table
        from app.storage import Storage

        storage = Storage(args.dids_from)
        version, _ = resolve_score_table(storage)
        return storage.read_table(f"scores/{version}", columns=["did"]).column("did").to_pylist()
    return [f"u{i}" for i in range(max(args.big_dids, 10_000))]  # synthetic_scorer's users


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running service (localhost only); default: --start")
    p.add_argument("--api-key", default="dev-key-change-me")
    p.add_argument("--start", action="store_true", help="start the service in-process on a free port")
    p.add_argument("-c", "--config", default="configs/serve.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", default=None)
    p.add_argument("--dids-from", default=None, help="storage root whose score table gives known dids")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--endpoints", nargs="+", default=["noop", "noop_post", "noop_hop", "score1", "score1_get", "score1_din", "submit"])
    p.add_argument("--requests", type=int, default=1000, help="max requests per endpoint and concurrency")
    p.add_argument("--seconds", type=float, default=15.0, help="max seconds per endpoint and concurrency")
    p.add_argument("--rounds", type=int, default=5, help="interleaved slices per endpoint and concurrency")
    p.add_argument("--seeds", type=int, default=100, help="seeds per submitted job")
    p.add_argument("--big-dids", type=int, default=1000)
    p.add_argument("--job-wait-s", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--smoke", action="store_true", help="a few seconds: 20 requests per point")
    args = p.parse_args(argv)
    if args.smoke:
        args.requests, args.seconds, args.job_wait_s, args.rounds = 20, 3.0, 20.0, 2
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        p.error("the load test only targets localhost")
    if not args.url and not args.start:
        args.start = True
    args.dids = known_dids(args)
    key = args.api_key
    if args.start:
        if not args.root:  # jobs of a load test do not belong in the real root
            import tempfile

            args.root = tempfile.mkdtemp(prefix="serve_load_")
        url, key = start_service(args), API_KEY
    else:
        url = args.url
    try:
        results = asyncio.run(run(args, url, key))
    finally:
        if args.start:
            from ray import serve

            serve.shutdown()
    summary = {r["endpoint"] + f"@{r.get('concurrency', '')}": {k: r[k] for k in ("req_per_s", "p50_ms", "p99_ms", "errors")}
               for r in results if "req_per_s" in r}
    print(json.dumps({"bench": "serve_load", "summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
