"""GPU similarity kernel: exact top-N mean of U users over S seeds on one GPU (PyTorch backend).

    python benchmarks/extend_gpu.py --users 10000000 --seeds 100000

The lent GPU machines carry PyTorch but no TensorFlow or Ray (and no package registry), so this
times the kernel the extension engine runs in its similarity actors (``app.extend.kernel``,
backend ``torch``), on random L2-normalized vectors, and checks a sample of users against the
NumPy backend (exact). End-to-end extension timings on CPU are in benchmarks/extend.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from app.extend.kernel import l2_normalize, top_n_mean_numpy, top_n_mean_torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=10_000_000)
    ap.add_argument("--seeds", type=int, default=100_000)
    ap.add_argument("--keywords", type=int, default=30)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--user-block", type=int, default=131072)
    ap.add_argument("--seed-block", type=int, default=16384)
    ap.add_argument("--check", type=int, default=4096, help="users checked against the NumPy backend")
    args = ap.parse_args()
    import torch

    rng = np.random.default_rng(0)
    users = l2_normalize(rng.random((args.users, args.keywords), dtype=np.float32))
    seeds = l2_normalize(rng.random((args.seeds, args.keywords), dtype=np.float32))
    top_n_mean_torch(users[:1000], seeds[:2000], args.top_n)  # warm-up (CUDA context, kernels)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    t = time.perf_counter()
    scores = top_n_mean_torch(users, seeds, args.top_n, user_block=args.user_block, seed_block=args.seed_block)
    seconds = time.perf_counter() - t
    idx = rng.choice(args.users, size=min(args.check, args.users), replace=False)
    oracle = top_n_mean_numpy(users[idx], seeds, args.top_n)
    print(json.dumps({
        "benchmark": "extend_gpu_kernel",
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "users": args.users, "seeds": args.seeds, "keywords": args.keywords, "top_n": args.top_n,
        "seconds": round(seconds, 2),
        "pairs_per_s": round(args.users * args.seeds / seconds),
        "max_abs_diff_vs_numpy": float(np.abs(scores[idx] - oracle).max()),
    }))


if __name__ == "__main__":
    main()
