"""Scoring every user against every keyword, in process: KeywordGrid vs the row-by-row signature.

    python benchmarks/keyword_grid.py --users 16384 --keywords 30 --hist-len 32

A DIN with the default hyperparameters (configs/train/din.yaml) and random weights (the cost does
not depend on the values) scores synthetic users whose history lengths, show and click counts
look like the generated data's (geometric, mean about 12 items; shows geometric with mean 5).
Times ``KeywordGrid`` at several users-per-call, after one warm pass over the same shapes, and the
row-by-row path (each user repeated K times through the model) the score table used before.
Prints one JSON line. Ray, Parquet and history building are not included: the score-table step of
``benchmarks/scale_run.py`` measures the whole job.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.train.config import DinModelConfig  # noqa: E402
from app.train.din import MODEL_FEATURES, build_din  # noqa: E402
from app.train.keyword_grid import KeywordGrid  # noqa: E402


def synthetic_users(n: int, hist_len: int, num_keywords: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1 / 12, n), hist_len)
    kwi = rng.integers(1, num_keywords, (n, hist_len))
    kwi[np.arange(hist_len)[None, :] >= lengths[:, None]] = 0
    shows = np.where(kwi > 0, rng.geometric(0.2, (n, hist_len)), 0)
    clicks = np.where(kwi > 0, rng.binomial(shows, 0.05), 0)
    return {"age": rng.integers(18, 70, n), "gender": rng.integers(0, 3, n), "hist_kwi": kwi,
            "hist_show_counts": shows, "hist_click_counts": clicks}


def users_per_s(fn, users: dict[str, np.ndarray], per_call: int) -> float:
    n = len(users["age"])
    chunks = [{k: v[s : s + per_call] for k, v in users.items()} for s in range(0, n, per_call)]
    for c in chunks:  # warm: trace, and run every padded shape once
        fn(c)
    t0 = time.perf_counter()
    for c in chunks:
        fn(c)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=16384)
    ap.add_argument("--keywords", type=int, default=30)
    ap.add_argument("--hist-len", type=int, default=32)
    ap.add_argument("--per-call", type=int, nargs="+", default=[256, 512, 1024])
    args = ap.parse_args()
    v = args.keywords + 1
    model = build_din(v, args.hist_len, DinModelConfig())
    users = synthetic_users(args.users, args.hist_len, v)
    grid = KeywordGrid(model)
    out: dict = {"users": args.users, "keywords": args.keywords, "hist_len": args.hist_len,
                 "mean_history_items": round(float((users["hist_kwi"] > 0).sum(1).mean()), 1),
                 "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"}
    for per_call in args.per_call:
        out[f"grid_users_per_s@{per_call}"] = round(users_per_s(lambda c: grid(**c), users, per_call))

    def rows(c: dict[str, np.ndarray]) -> np.ndarray:
        n, k = len(c["age"]), args.keywords
        feats = {name: np.repeat(a, k, axis=0) for name, a in c.items()}
        feats["target_kwi"] = np.tile(np.arange(1, k + 1), n)
        return model({name: tf.constant(feats[name], tf.int64) for name in MODEL_FEATURES}, training=False)

    small = {k: a[:2048] for k, a in users.items()}
    out["row_by_row_users_per_s"] = round(users_per_s(rows, small, 256))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
