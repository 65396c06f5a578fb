"""A whole lookalike run at scale, through the CLI a user runs: each step's seconds and peak memory.

    python benchmarks/scale_run.py --users 1000000 --root /tmp/scale-1m

Steps: generate N users -> data pipeline -> train one epoch (``--max-steps`` caps it; a full epoch
over 1M users' samples is hours on 2 cores and tells nothing about the other steps) -> score table
-> extend ``--seeds`` seeds at 5x with the similarity (din) and the feature (jsd) strategies ->
validation (``--validate-sizes`` seed sizes, one draw). Each step is its own ``python -m app``
process with its own local Ray, as a user runs them; its memory is the peak of the summed RSS of
that process and every process it started (Ray's raylet, workers and object store included),
sampled every 0.5 s. Prints one JSON line per step and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_step(name: str, args: list[str], log_dir: Path) -> dict:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("RAY_ADDRESS", None)
    out = (log_dir / f"{name}.out").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    ps, peak, stop = psutil.Process(proc.pid), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(ps))
            except psutil.NoSuchProcess:
                return
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    out.close()
    row = {"step": name, "seconds": round(seconds, 1), "peak_gib": round(peak[0] / 2**30, 2), "rc": rc}
    if rc != 0:
        row["tail"] = (log_dir / f"{name}.out").read_text()[-2000:]
    print(json.dumps(row), flush=True)
    if rc != 0:
        raise SystemExit(f"step {name} failed (rc {rc}); output in {log_dir / (name + '.out')}")
    return row


def summary_of(log_dir: Path, name: str) -> dict:
    """The JSON summary a command printed (the last {...} block of its output)."""
    text = "\n" + (log_dir / f"{name}.out").read_text()
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1 : text.rfind("}") + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        return {}


def write_seeds(root: Path, n: int, path: Path) -> int:
    """n users who clicked the most clicked keyword before the cutting date (the demo's rule)."""
    from app.demo import pick_seeds
    from app.storage import Storage

    seeds = pick_seeds(Storage(str(root)), n)
    path.write_text("did\n" + "\n".join(seeds) + "\n")
    return len(seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--root", required=True, help="a fresh local folder")
    ap.add_argument("--max-steps", type=int, default=300, help="training steps of the one epoch")
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--validate-sizes", default="1000,10000")
    ap.add_argument("--skip", default="", help="comma-separated steps already done in --root")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    log_dir = root.parent / f"{root.name}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    common = ["--root", str(root)]
    seeds_file = log_dir / "seeds.txt"
    steps = [
        ("generate", ["data", "generate", *common, "--set", f"users={args.users}"]),
        ("pipeline", ["data", "run", *common]),
        ("train", ["train", "run", *common, "--set", "epochs=1", "--set", f"max_steps_per_epoch={args.max_steps}"]),
        ("scores", ["extend", "scores", *common]),
        ("extend_din", ["extend", "run", *common, "--seeds", str(seeds_file), "--strategy", "din", "--percentage", "500"]),
        ("extend_jsd", ["extend", "run", *common, "--seeds", str(seeds_file), "--strategy", "jsd", "--percentage", "500"]),
        ("validate", ["extend", "validate", *common, "--set", "validation.seed_sizes=[" + args.validate_sizes + "]",
                      "--set", "validation.extension_factors=[5]", "--set", "validation.num_keywords=1"]),
    ]
    rows = []
    for name, cli in steps:
        if name == "extend_din" and "extend_din" not in skip:
            write_seeds(root, args.seeds, seeds_file)
        if name in skip:
            continue
        rows.append(run_step(name, cli, log_dir))
        s = summary_of(log_dir, name)
        if name == "scores" and s:
            rows[-1]["note"] = f"{s.get('num_users')} users, {s.get('users_per_s')} users/s inside the step"
        if name.startswith("extend_") and s:
            rows[-1]["note"] = f"audience {s.get('audience_size', s.get('report', {}).get('audience_size'))}"
    print("\n| step | seconds | peak memory (GiB) | note |\n|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['step']} | {r['seconds']} | {r['peak_gib']} | {r.get('note', '')} |")


if __name__ == "__main__":
    main()
