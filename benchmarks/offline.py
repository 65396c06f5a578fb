"""Benchmark: the offline jobs' headline figures (spec 003).

    python benchmarks/offline.py --parts actions --lines 10000000
    python benchmarks/offline.py --parts als --users 1000000 --items 100000 --score-users 20000
    python benchmarks/offline.py --parts dimsum --dimsum-users 200000 --dimsum-items 5000

- ``actions``: generated JSON action lines (app/offline/generate.py, written in chunks of about
  1M lines so the generator's memory stays small) grouped by the actions job on a local Ray;
  lines/s is the job's own time (Ray's start excluded).
- ``als``: a generated users x items matrix (:func:`random_matrix`: item groups, Zipf-like
  popularity, about ``--per-user`` items per user), fitted with the job's ``fit_als`` (implicit ALS,
  rank 30, 5 iterations, 2 threads), then the job's Ray scoring tasks on the first
  ``--score-users`` users (every item ranked, seen items excluded, top 10): users/s, and the time
  all users would take at that rate.
- ``dimsum``: a generated binary users x items matrix (:func:`random_matrix`; popular items have
  large norms, where DIMSUM saves work); exact cosine vs DIMSUM at several thresholds, in one
  process (the job spreads the same block products over Ray tasks), with the error of each
  against exact on the same data.

- ``truth`` (not in the default parts): every model job on a generated log (``--truth-users``,
  ``--truth-days``), scored against the planted truth: item2vec and similar-items neighbours in
  the item's own group, association rules inside one planted bundle (precision) and bundle rules
  found (recall), users clustered into their favourite group.

Prints one JSON line per part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import scipy.sparse as sp


def zipf_items(rng: np.random.Generator, n: int, n_items: int, s: float = 1.0) -> np.ndarray:
    """``n`` item indices with popularity proportional to 1 / rank^s (items shuffled)."""
    w = 1.0 / np.arange(1, n_items + 1) ** s
    cdf = np.cumsum(w / w.sum())
    perm = rng.permutation(n_items)
    return perm[np.minimum(np.searchsorted(cdf, rng.random(n)), n_items - 1)]


def random_matrix(users: int, items: int, per_user: int, seed: int, groups: int = 50) -> sp.csr_matrix:
    """Users x items, binary: each user has a group of items (``items / groups`` of them) and takes
    80% of their about ``per_user`` items from it, the rest from the whole catalogue, both by a
    Zipf-like popularity: similar item pairs exist (within groups) and popular items have large norms."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_user, users).clip(1)
    rows = np.repeat(np.arange(users), counts)
    per_group = max(1, items // groups)
    own = rng.random(len(rows)) < 0.8
    group = rng.integers(0, groups, users)[rows]
    cols = np.where(own, (group * per_group + zipf_items(rng, len(rows), per_group, s=0.8)) % items,
                    zipf_items(rng, len(rows), items, s=0.8))
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def bench_actions(lines: int, keep: bool) -> dict:
    from app.offline.actions import run_actions
    from app.offline.config import ActionsConfig
    from app.offline.generate import GenerateActionsConfig, generate_actions
    from app.ray_utils import init_ray
    from app.storage import Storage

    root = tempfile.mkdtemp(prefix="offline-bench-", dir=os.environ.get("BENCH_TMP"))
    storage = Storage(root)
    per_chunk_users = 100_000  # about 1.07M lines per chunk
    chunks = max(1, math.ceil(lines / (per_chunk_users * 10.65)))
    started = time.perf_counter()
    written = 0
    for c in range(chunks):
        cfg = GenerateActionsConfig(n_users=per_chunk_users, n_items=100_000, n_groups=100, bundles_per_group=5,
                                    malformed_rate=0.0001, shards=1, seed=c, part_prefix=f"chunk{c:03d}")
        written += generate_actions(cfg, storage)["lines"]
    gen_s = time.perf_counter() - started
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(root, "raw/actions"))
               for f in fs)
    init_ray(num_cpus=2, object_store_memory=512 << 20)
    report = run_actions(ActionsConfig(input_date_string="20150101"), storage)
    import ray

    ray.shutdown()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {"part": "actions", "lines": report["lines"], "generated_lines": written, "input_bytes": size,
            "files": report["files"], "tasks": report["tasks"], "rows": report["rows"],
            "quarantined": report["quarantined"], "job_seconds": report["seconds"],
            "lines_per_s": report["lines_per_s"], "mb_per_s": round(size / 1e6 / report["seconds"], 1),
            "generate_seconds": round(gen_s, 1)}


def bench_als(users: int, items: int, per_user: int, score_users: int, rank: int, iterations: int) -> dict:
    import ray

    from app.offline.als import fit_als, score_task
    from app.offline.tasks import run_tasks
    from app.ray_utils import init_ray

    started = time.perf_counter()
    m = random_matrix(users, items, per_user, seed=0)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    uf, itf = fit_als(m, rank, 0.01, 1.0, iterations, threads=2, seed=0)
    fit_s = time.perf_counter() - started
    init_ray(num_cpus=2, object_store_memory=1 << 30)
    root = tempfile.mkdtemp(prefix="offline-bench-als-")
    n = min(score_users, users)
    per_task = max(1, n // 4)
    blocks = [{"start": s, "end": min(s + per_task, n), "part": k} for k, s in enumerate(range(0, n, per_task))]
    refs = [ray.put(x) for x in (uf[:n], itf, np.arange(n), np.arange(items), m[:n])]
    warm = [{"start": 0, "end": min(100, n), "part": k} for k in range(2)]
    run_tasks(score_task, warm, root, "warm", *refs, 10)  # start the workers first
    started = time.perf_counter()
    run_tasks(score_task, blocks, root, "staging", *refs, 10)
    score_s = time.perf_counter() - started
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    rate = n / score_s
    return {"part": "als", "users": users, "items": items, "nonzeros": int(m.nnz), "rank": rank,
            "iterations": iterations, "fit_threads": 2, "build_seconds": round(build_s, 1),
            "fit_seconds": round(fit_s, 1), "scored_users": n, "score_tasks": len(blocks),
            "score_seconds": round(score_s, 1), "score_users_per_s": round(rate, 1),
            "all_users_score_seconds_at_that_rate": round(users / rate, 1)}


def bench_dimsum(users: int, items: int, per_user: int, thresholds: list[float]) -> dict:
    from app.offline.similarity import cosine, dimsum_gamma, similarity_error

    m = random_matrix(users, items, per_user, seed=1)
    norms = np.sqrt(np.asarray(m.sum(axis=0)).ravel())
    started = time.perf_counter()
    exact = cosine(m, math.inf, 0, 50_000, remote=False)
    exact_s = time.perf_counter() - started
    products = int((np.diff(m.indptr).astype(np.int64) ** 2).sum())
    rows = []
    for t in thresholds:
        gamma = dimsum_gamma(t, items)
        started = time.perf_counter()
        est = cosine(m, gamma, 0, 50_000, remote=False)
        secs = time.perf_counter() - started
        err = similarity_error(est, exact, t, 100)
        rows.append({"threshold": t, "gamma": round(gamma, 1), "seconds": round(secs, 2),
                     "speedup": round(exact_s / secs, 2), **{k: (round(v, 4) if isinstance(v, float) else v)
                                                              for k, v in err.items() if k != "threshold"}})
    return {"part": "dimsum", "users": users, "items": items, "nonzeros": int(m.nnz),
            "max_item_norm": round(float(norms.max()), 1), "median_item_norm": round(float(np.median(norms)), 1),
            "exact_seconds": round(exact_s, 2), "exact_pairs": int(exact.nnz // 2), "row_pair_products": products,
            "dimsum": rows}


def bench_truth(users: int, days: int) -> dict:
    """Every model job on a generated log, scored against the planted truth (app/offline/truth.py)."""
    from app.offline import truth
    from app.offline.actions import run_actions
    from app.offline.clusters import run_cluster_by_dimension
    from app.offline.common import read_model_table
    from app.offline.config import (
        ActionsConfig,
        BasketAnalysisConfig,
        ClusterByDimensionConfig,
        FpGrowthConfig,
        SessionItemsConfig,
        SimilarItemsConfig,
        Word2VecConfig,
    )
    from app.offline.generate import GenerateActionsConfig, generate_actions
    from app.offline.item2vec import run_session_items, run_word2vec
    from app.offline.rules import run_basket_analysis, run_fpgrowth
    from app.offline.similarity import run_similar_items
    from app.ray_utils import init_ray
    from app.storage import Storage

    root = tempfile.mkdtemp(prefix="offline-bench-truth-")
    storage = Storage(root)
    gen = GenerateActionsConfig(days=days, n_users=users, n_items=2000, n_groups=20, bundles_per_group=5)
    generate_actions(gen, storage)
    init_ray(num_cpus=2, object_store_memory=512 << 20)
    for d in range(days):
        run_actions(ActionsConfig(input_date_string=(gen.first_day + dt.timedelta(days=d)).isoformat()), storage)
    t = storage.read_json("raw/actions/truth.json")
    out: dict = {"part": "truth", "users": users, "items": gen.n_items, "groups": gen.n_groups, "days": days}
    run_session_items(SessionItemsConfig(days=days, max_intra_session_gap_secs=1800), storage)
    w2v = run_word2vec(Word2VecConfig(min_word_count=5, vector_size=32, top_n=10), storage)
    out["item2vec"] = {"items": w2v["items"], "fit_seconds": w2v["fit_seconds"], "neighbours_in_group":
                       round(truth.neighbour_precision(read_model_table(storage, "word2vec", "client1", "nearest"),
                                                       gen.n_groups), 4)}
    sim = run_similar_items(SimilarItemsConfig(days=days, limit=10, method="dimsum"), storage)
    out["similar_items_dimsum"] = {"neighbours_in_group": round(truth.neighbour_precision(
        read_model_table(storage, "similar-items", "client1", "similarities"), gen.n_groups), 4),
        "error_vs_exact": sim["error_vs_exact"]}
    run_basket_analysis(BasketAnalysisConfig(days=days), storage)
    run_fpgrowth(FpGrowthConfig(min_support=0.001, min_confidence=0.2, min_interest=0.1), storage)
    out["fpgrowth"] = truth.rule_quality(read_model_table(storage, "fpgrowth", "client1", "rules"), t["bundles"])
    run_cluster_by_dimension(ClusterByDimensionConfig(days=days, min_cluster_size=50), storage)
    out["cluster_by_dimension"] = {k: round(v, 4) for k, v in truth.cluster_accuracy(
        read_model_table(storage, "cluster-by-dimension", "client1", "user_clusters"),
        t["favourite_group"]["client1"]).items()}
    import ray

    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", nargs="+", default=["actions", "als", "dimsum"], choices=["actions", "als", "dimsum", "truth"])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated logs")
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--per-user", type=int, default=10)
    ap.add_argument("--rank", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--score-users", type=int, default=20_000)
    ap.add_argument("--dimsum-users", type=int, default=200_000)
    ap.add_argument("--dimsum-items", type=int, default=5_000)
    ap.add_argument("--dimsum-per-user", type=int, default=15)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--truth-users", type=int, default=20_000)
    ap.add_argument("--truth-days", type=int, default=2)
    args = ap.parse_args()
    for part in args.parts:
        if part == "actions":
            out = bench_actions(args.lines, args.keep)
        elif part == "truth":
            out = bench_truth(args.truth_users, args.truth_days)
        elif part == "als":
            out = bench_als(args.users, args.items, args.per_user, args.score_users, args.rank, args.iterations)
        else:
            out = bench_dimsum(args.dimsum_users, args.dimsum_items, args.dimsum_per_user, args.thresholds)
        out["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
