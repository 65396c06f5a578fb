"""The real CLI, as a new user runs it: separate processes, another working directory, a relative
``--root`` or none at all.

Every other integration test hands an absolute root to in-process functions, which is how a
relative root once reached a Ray Train worker (whose working directory is not the caller's) and
failed there. These run ``python -m app`` the way the README says, from a folder that is neither
the checkout nor the root's parent, and check that each step found what the previous one wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

SMOKE_USERS = "users=800"


def _env() -> dict[str, str]:
    """The caller's environment without anything that names a root or a cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOOKALIKE_ROOT", "RAY_ADDRESS")}
    env.pop("TF_USE_LEGACY_KERAS", None)  # the package sets it itself
    return env


def cli(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m app ARGS`` in ``cwd``; fails the test with the command's output if it fails."""
    proc = subprocess.run([sys.executable, "-m", "app", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"python -m app {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    """The JSON summary a command prints last (before its ``log:`` line)."""
    out = proc.stdout
    start = out.index("\n{") + 1 if not out.startswith("{") else 0
    end = out.rindex("\n}") + 2
    return json.loads(out[start:end])


def log_line(proc: subprocess.CompletedProcess) -> Path:
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("log: "), last
    return Path(last[len("log: "):])


def test_relative_root_from_another_directory(tmp_path: Path) -> None:
    """pipeline -> train (Ray Train workers) -> scores (Ray Data actors) -> extend, root ``rel/root``."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    root = cwd / "rel" / "root"
    common = ["--smoke", "--root", "rel/root"]
    cli(cwd, "data", "generate", *common, "--set", SMOKE_USERS)
    data = summary(cli(cwd, "data", "run", *common))
    assert data["samples"]["train"] > 0
    trained = cli(cwd, "train", "run", *common)
    version = summary(trained)["version"]
    assert (root / "models" / "din" / version / "saved_model").is_dir()
    assert log_line(trained).parent == root / "logs"
    scores = summary(cli(cwd, "extend", "scores", *common))
    assert (root / "scores" / scores["version"]).is_dir()
    dids = pq.read_table(root / "tables" / "trainready", columns=["did"]).column("did").to_pylist()
    (cwd / "seeds.txt").write_text("\n".join(sorted(dids)[:120]) + "\n")
    extended = summary(cli(cwd, "extend", "run", *common, "--seeds", "seeds.txt", "--out", "jobs/rel"))
    assert extended["audience_size"] > 0
    assert (root / "jobs" / "rel" / "audience.parquet").is_file()
    assert not (tmp_path / "rel").exists() and not Path("rel/root").exists()


def test_default_root_demo_reads_well(tmp_path: Path) -> None:
    """No root anywhere: the demo lands in ./var/lookalike and prints a short, readable console."""
    cwd = tmp_path / "newuser"
    cwd.mkdir()
    proc = cli(cwd, "demo", "--smoke", "--users", "800", timeout=900)
    root = cwd / "var" / "lookalike"
    assert (root / "jobs" / "demo" / "audience.csv").is_file()
    lines = proc.stdout.splitlines()
    assert len(lines) <= 40, proc.stdout
    steps = [line.split()[1] for line in lines if line.startswith("[demo]")]
    assert steps[:4] == ["generate", "pipeline", "train", "gate"], steps
    assert "scores" in steps and "extend" in steps
    # Ray's and TensorFlow's chatter went to the log file, not to the terminal
    assert not any("INFO" in line or "(RayTrainWorker" in line or "oneDNN" in line for line in lines), proc.stdout
    assert proc.stderr.strip() == "", proc.stderr
    log = log_line(proc)
    assert log.parent == root / "logs" and log.is_file()
    text = log.read_text()
    assert "[demo] train" in text and "Started a local Ray instance" in text
