"""Benchmark: the offline models' ranking quality on MovieLens-100K, RecBole's protocol.

    python benchmarks/offline_movielens.py [--cache .cache/movielens] [--seed 0]

Data: the 100,000 ratings of MovieLens-100K from the ``recbole==1.2.1`` wheel (fetched with pip
into the cache by app/data/movielens.py; never committed), every rating an implicit interaction.
Split: per user, random 8:1:1 (train / valid / test), seeded. Every model sees train only; the
hyper-parameters of ALS and item similarity are picked on valid from a small grid, then the test
row is reported for that choice. Ranking: every item for every user with test items, the user's
training items excluded; Recall@10 and NDCG@10 (app/offline/evaluate.py), to compare with
RecBole's published BPR row (NDCG@10 0.2768, Recall@10 0.2368) and with popularity.

ALS is the offline job's fit (app/offline/als.py: implicit ALS, confidence 1 + alpha r); item
similarity is the offline job's cosine (exact, and DIMSUM at its threshold) used as an item-kNN
recommender: a user's score for item j is the sum of sim(i, j) over their training items i, with
each item's ``limit`` most similar items kept. Prints one JSON line per row and a final summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import scipy.sparse as sp

from app.data.movielens import fetch_wheel, read_member
from app.offline import als as A
from app.offline import similarity as S
from app.offline.evaluate import popularity_top, ranking_metrics, split_per_user

K = 10
RECBOLE_BPR = {"recall@10": 0.2368, "ndcg@10": 0.2768}


def load(cache: str) -> tuple[np.ndarray, np.ndarray]:
    inter = read_member(fetch_wheel(cache), "inter")
    users = np.asarray(inter["user_id"].to_pylist(), dtype=np.int64)
    items = np.asarray(inter["item_id"].to_pylist(), dtype=np.int64)
    return users, items


def matrices(users, items, part) -> tuple[sp.csr_matrix, ...]:
    u_ids, u = np.unique(users, return_inverse=True)
    i_ids, i = np.unique(items, return_inverse=True)
    shape = (len(u_ids), len(i_ids))
    out = []
    for p in range(3):
        sel = part == p
        m = sp.csr_matrix((np.ones(sel.sum(), np.float32), (u[sel], i[sel])), shape=shape)
        m.sum_duplicates()
        out.append(m)
    return tuple(out)


def knn_top(train: sp.csr_matrix, sims: sp.csr_matrix, limit: int) -> np.ndarray:
    kept = S.top_k_rows(sims, limit)
    scores = np.asarray((train @ kept).todense(), dtype=np.float32)
    r = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    scores[r, train.indices] = -np.inf
    return A.top_n(scores, K)[0]


def als_top(train: sp.csr_matrix, rank: int, reg: float, alpha: float, iters: int, seed: int) -> np.ndarray:
    uf, itf = A.fit_als(train, rank, reg, alpha, iters, threads=2, seed=seed)
    return A.recommend(uf, itf, train, K)[0]


def best_on_valid(name: str, grid: list[dict], top_fn, train, valid, test) -> dict:
    rows = []
    for params in grid:
        started = time.perf_counter()
        top = top_fn(**params)
        seconds = time.perf_counter() - started
        rows.append((ranking_metrics(top, valid, K)["ndcg@10"], params, seconds))
    score, params, _ = max(rows, key=lambda r: r[0])
    started = time.perf_counter()
    # the chosen setting refit on train only (the same fit as in the grid), then scored on test
    top = top_fn(**params)
    seconds = time.perf_counter() - started
    m = ranking_metrics(top, test, K)
    return {"model": name, **m, "valid_ndcg@10": round(score, 4), "params": params,
            "grid_size": len(grid), "seconds": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=".cache/movielens")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    users, items = load(args.cache)
    part = split_per_user(users, seed=args.seed)
    train, valid, test = matrices(users, items, part)
    rows = []
    rows.append({"model": "popularity", **ranking_metrics(popularity_top(train, K), test, K)})
    als_grid = [dict(rank=r, reg=reg, alpha=a, iters=15, seed=args.seed)
                for r, reg, a in itertools.product([32, 64, 128], [0.01, 1.0, 10.0, 30.0], [1.0, 5.0, 20.0])]
    rows.append(best_on_valid("als (implicit)", als_grid, lambda **p: als_top(train, **p), train, valid, test))
    exact = S.cosine(train, math.inf, args.seed, 100_000, remote=False)
    rows.append(best_on_valid("item similarity, exact cosine", [dict(limit=x) for x in (5, 10, 20, 50, 100, 200)],
                              lambda limit: knn_top(train, exact, limit), train, valid, test))
    limit = rows[-1]["params"]["limit"]
    for threshold in (0.1, 0.5, 0.9):
        # at 0.1 every item's norm (sqrt of its users, at most 24 here) is below sqrt(gamma): exact
        started = time.perf_counter()
        dimsum = S.cosine(train, S.dimsum_gamma(threshold, train.shape[1]), args.seed, 100_000, remote=False)
        dimsum_s = time.perf_counter() - started
        rows.append({"model": f"item similarity, DIMSUM threshold {threshold}",
                     **ranking_metrics(knn_top(train, dimsum, limit), test, K), "params": {"limit": limit},
                     "dimsum_seconds": round(dimsum_s, 2),
                     "error_vs_exact": S.similarity_error(dimsum, exact, threshold, limit)})
    for r in rows:
        r["recall@10"], r["ndcg@10"] = round(r["recall@10"], 4), round(r["ndcg@10"], 4)
        print(json.dumps(r, default=str))
    print(json.dumps({"benchmark": "offline_movielens", "interactions": len(users), "users": train.shape[0],
                      "items": train.shape[1], "split": "per-user random 8:1:1", "seed": args.seed,
                      "train": int(train.nnz), "valid": int(valid.nnz), "test": int(test.nnz),
                      "recbole_bpr": RECBOLE_BPR}))


if __name__ == "__main__":
    main()
