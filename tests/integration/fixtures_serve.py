"""Pytest-session fixtures for the serve integration tests (see conftest.py).

``serve_app`` runs ONE Serve application for the whole pytest run (start 7-10 s, stop 6-7 s on 2 cores)
on a free localhost port, with fakes injected through the builder args: a fake extension engine
(deterministic, fast; the first seed picks a behaviour: ``slow`` sleeps 6 s reporting progress,
``nap`` sleeps 1 s, ``crash`` kills its worker, ``freeze`` suspends its worker process (no heartbeat),
``hang`` sleeps past the job timeout while its heartbeat goes on, ``rootpath`` fails naming the
storage root, ``jsd`` fails as the jsd strategy does) and a fake scorer over users ``u0..u9999``. The real engine and model have their own tests (extend/train);
``test_serve.py::test_real_stack`` runs the service on ``scored_root`` when that fixture exists.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from app.serve.scoring import IndexedScorer

__all__ = ["serve_app"]  # conftest star-imports fixtures only

API_KEYS = {"key-alice-0001": "alice", "key-bob-00002": "bob", "key-carol-0003": "carol"}
FAKE_USERS = [f"u{i}" for i in range(10_000)]
FAKE_KEYWORDS = ["news", "games", "travel", "music", "sports"]
APP_NAME = "lookalike"


# ------------------------------------------------------------------ fakes (import paths in args)
def fake_engine(storage, seeds, cfg, out_dir, progress=None):
    """Top non-seed users of a fixed population; audience size as the real engine computes it."""
    from app.errors import ModelNotReady, SeedError

    first = seeds[0]
    if first.startswith("crash"):
        os._exit(3)  # the worker process dies mid-job
    if first.startswith("freeze"):
        os.kill(os.getpid(), signal.SIGSTOP)  # alive but silent: no heartbeat
    if first.startswith("hang"):
        time.sleep(600)
    if first.startswith("rootpath"):
        raise ModelNotReady(f"no current 'din' model in {storage.root!r}/registry.json; train one first")
    if first.startswith("jsd"):
        from app.extend.jsd import NO_FEATURE_ERROR

        raise SeedError(NO_FEATURE_ERROR)
    if first.startswith("nap"):
        time.sleep(1.0)
    if first.startswith("slow"):
        for i in range(40):
            progress(i / 40, "similarity")
            time.sleep(0.15)
    seedset = set(seeds)
    m = cfg.size or int(round(len(seeds) * (cfg.percentage or cfg.default_percentage) / 100))
    audience = [u for u in FAKE_USERS if u not in seedset][:m]
    rows = "".join(f"{d},{1 - r / len(audience):.6f},{r + 1}\n" for r, d in enumerate(audience))
    storage.write_text(f"{out_dir}/audience.csv", "did,score,rank\n" + rows)
    report = {"counts": {"seeds": len(seeds), "found": len(seedset), "audience": len(audience)},
              "strategy": cfg.strategy}
    storage.write_json(f"{out_dir}/report.json", report)
    progress(1.0, "done")
    return report


def fake_scorer(storage, **_: Any) -> IndexedScorer:
    """score(u_i, keyword k) = ((i * 7 + k) % 100) / 100, so tests can check values."""
    idx = np.arange(len(FAKE_USERS))
    table = ((idx[:, None] * 7 + np.arange(len(FAKE_KEYWORDS))[None, :]) % 100 / 100).astype(np.float32)
    return IndexedScorer("fake-v1", FAKE_KEYWORDS, FAKE_USERS, lambda rows: table[rows])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServeHandle:
    url: str
    root: str
    args: dict[str, Any]

    def write(self, rel: str, data: bytes) -> None:
        """Overwrite a file under the root as damage from outside would (not atomically)."""
        with open(os.path.join(self.root, rel), "wb") as f:
            f.write(data)

    def read_status(self, job_id: str) -> dict[str, Any]:
        import json

        with open(os.path.join(self.root, "jobs", job_id, "status.json")) as f:
            return json.load(f)

    def restart(self, wait_s: float = 60) -> None:
        """Delete the application (its queue and workers die) and deploy it again."""
        from ray import serve

        from app.serve.app import build_app

        serve.delete(APP_NAME)
        serve.run(build_app(self.args), name=APP_NAME, route_prefix="/", blocking=False)
        wait_healthy(self.url, wait_s)


def wait_healthy(url: str, wait_s: float) -> None:
    import httpx

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url}/healthz did not answer within {wait_s} s")


def serve_args(root: str, **extra: Any) -> dict[str, Any]:
    return {
        "root": root,
        "api_keys": dict(API_KEYS),
        "min_seeds": 100,
        "max_seeds": 2000,
        "max_upload_bytes": 64 * 1024,
        "max_concurrent_jobs": 1,
        "max_job_attempts": 2,
        "max_audience_size": 5000,
        "progress_interval_s": 0.0,
        "body_timeout_s": 2.0,
        "per_key": {"max_uploads": 2, "max_queued_jobs": 4},
        "queue_timeout_s": 2.0,
        "health_timeout_s": 2.0,
        "retry_after_s": 2,
        "rescan_interval_s": 2.0,
        "jobs": {"timeout_s": 10.0, "heartbeat_s": 0.5, "heartbeat_timeout_s": 2.5},
        "retention": {"prune_interval_s": 3.0},  # the queue's full sweep (quarantine, retention)
        "engine": "tests.integration.fixtures_serve:fake_engine",
        "scorer_loader": "tests.integration.fixtures_serve:fake_scorer",
        **extra,
    }


@pytest.fixture(scope="session")
def serve_app(ray_local, tmp_path_factory):
    from ray import serve

    from app.serve.app import build_app

    root = str(tmp_path_factory.mktemp("serve_root"))
    port = free_port()
    args = serve_args(root)
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    handle = ServeHandle(url=f"http://127.0.0.1:{port}", root=root, args=args)
    wait_healthy(handle.url, 60)
    yield handle
    serve.shutdown()
