"""/healthz when the Ray cluster under the service dies.

The test run's own Ray cannot be killed (every other test uses it), so this test starts the service
the way an operator does, ``python -m app serve start --smoke``, in a subprocess with its own
local Ray (1 CPU, the fake engine and scorer), then kills that cluster's control store and node
manager (``gcs_server``, ``raylet``: its own children, found by process id) and watches /healthz.
About 25 s on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.integration.fixtures_serve import free_port

pytestmark = pytest.mark.integration


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_healthz_fails_when_the_cluster_is_killed(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LOOKALIKE_API_KEYS")}
    env.update({"LOOKALIKE_NUM_CPUS": "1", "TF_USE_LEGACY_KERAS": "1"})
    cmd = [sys.executable, "-m", "app", "serve", "start", "--smoke", "--root", str(tmp_path / "root"),
           "--set", f"port={port}", "--set", "health_timeout_s=1",
           "--set", "engine=tests.integration.fixtures_serve:fake_engine",
           "--set", "scorer_loader=tests.integration.fixtures_serve:fake_scorer"]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    family: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.5)
        family = _descendants(proc.pid)
        targets = [p for p in family if p.name() in ("gcs_server", "raylet")]
        assert len(targets) == 2, [p.name() for p in family]
        for p in targets:
            p.kill()
        t0, answers = time.monotonic(), []
        while time.monotonic() - t0 < 30:
            try:
                r = httpx.get(f"{url}/healthz", timeout=5)
                answers.append((r.status_code, r.json()["checks"]["cluster"] if r.status_code == 503 else "ok"))
            except httpx.HTTPError as exc:  # the proxy went with the cluster: a failed probe too
                answers.append((type(exc).__name__, ""))
            if answers[-1][0] != 200:
                break
            time.sleep(0.5)
        assert answers and answers[-1][0] != 200, answers
        assert time.monotonic() - t0 < 10, answers  # within a few probes, not after Ray gives up (60 s)
        if answers[-1][0] == 503:
            assert "cluster" in answers[-1][1], answers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, nothing else
        for p in family + _descendants(proc.pid):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=30)
        log.close()
