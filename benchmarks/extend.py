"""Benchmark: seconds to extend S seeds over U users (exact top-N mean), and score-table users/s.

    python benchmarks/extend.py --users 1000000 --seeds 10000          # the headline (CPU)
    python benchmarks/extend.py --users 10000000 --seeds 100000 --backend tf   # GPU host
    python benchmarks/extend.py --score-root var/lookalike              # + score generation users/s

The extension timing synthesizes a random L2-normalized score table (U x K, float32, written as
Parquet under a temporary root and registered) and times ``extend_audience`` end to end (seed
reader, clustering, Ray Data similarity, selection, writing). Score generation needs a root with
train-ready data and a current DIN model (``--score-root``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def synth_score_table(root: str, users: int, k: int, buckets: int, seed: int) -> list[str]:
    from app.extend.scores import fit_space, fixed_list
    from app.registry import Registry, new_version
    from app.storage import Storage

    storage = Storage(root)
    version = new_version()
    rng = np.random.default_rng(seed)
    dids = np.array([f"u{i:09d}" for i in range(users)])
    step = -(-users // buckets)
    for b in range(buckets):
        s = slice(b * step, min((b + 1) * step, users))
        raw = rng.random((s.stop - s.start, k), dtype=np.float32)
        t = pa.table({"did": dids[s], "did_index": np.arange(s.start, s.stop), "scores": fixed_list(raw)})
        storage.makedirs(f"scores/{version}/did_bucket={b}")
        pq.write_table(t, storage.path(f"scores/{version}/did_bucket={b}/part-0.parquet"))
    storage.write_json(f"scores/{version}/space.json", fit_space(storage, f"scores/{version}").to_json())
    Registry(storage).add_score_table(version, {"keywords": [f"kw{i}" for i in range(k)], "num_users": users})
    return list(dids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--keywords", type=int, default=30)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--factor", type=int, default=5, help="audience size = factor x seeds")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "tf"])
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--buckets", type=int, default=8)
    ap.add_argument("--score-root", default=None, help="root with a current DIN model: time scoring")
    args = ap.parse_args()

    from app.extend.config import ExtendConfig
    from app.extend.engine import extend_audience
    from app.ray_utils import init_ray
    from app.storage import Storage

    init_ray(num_cpus=args.num_cpus)
    out: dict = {"benchmark": "extend", "users": args.users, "seeds": args.seeds, "keywords": args.keywords,
                 "top_n": args.top_n, "backend": args.backend, "num_cpus": args.num_cpus}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        t = time.perf_counter()
        dids = synth_score_table(root, args.users, args.keywords, args.buckets, 0)
        out["synth_s"] = round(time.perf_counter() - t, 2)
        seeds = list(np.random.default_rng(1).choice(np.array(dids), args.seeds, replace=False))
        cfg = ExtendConfig(size=args.factor * args.seeds, top_n=args.top_n, backend=args.backend,
                           num_actors=args.num_cpus, batch_rows=max(65536, args.users // (4 * args.num_cpus)))
        t = time.perf_counter()
        report = extend_audience(Storage(root), seeds, cfg, "jobs/bench")
        out["extend_s"] = round(time.perf_counter() - t, 2)
        out["extend_steps_s"] = report["timings_s"]
        out["audience"] = report["audience_size"]
    if args.score_root:
        from app.extend.config import ScoresConfig
        from app.extend.scores import generate_score_table

        info = generate_score_table(Storage(args.score_root), ScoresConfig(num_actors=args.num_cpus))
        out["score_users"] = info["num_users"]
        out["score_users_per_s"] = info["users_per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
