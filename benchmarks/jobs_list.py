"""``GET /lookalike/jobs`` at scale: the job store's paged listing with 10k jobs of one key.

    python benchmarks/jobs_list.py --jobs 10000

Creates the jobs in a temporary root (plus as many of another key, which a listing must not
read), then times: the first page (limit 100, the route's default), a page deep in the list
through its cursor, a walk over every job in pages of 1000, and rebuilding the index from the job
files after it was deleted (what the service does when the index is missing). Median of 5 runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from app.serve.jobs import INDEX, JobStore
from app.storage import Storage


def timed(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)


def walk(store: JobStore, owner: str, limit: int) -> int:
    seen, cursor = 0, None
    while True:
        page, cursor = store.list_for(owner, limit=limit, cursor=cursor)
        seen += len(page)
        if cursor is None:
            return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(tmp)
        store = JobStore(storage)
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            store.create("alice", {"strategy": "din"}, ["u1"])
            store.create("bob", {"strategy": "din"}, ["u1"])
        created = time.perf_counter() - t0
        _, deep = store.list_for("alice", limit=args.jobs // 2)
        out = {
            "jobs_per_key": args.jobs,
            "create_ms_per_job": round(created * 1000 / (2 * args.jobs), 2),
            "first_page_100_ms": timed(lambda: store.list_for("alice", limit=100)),
            "deep_page_100_ms": timed(lambda: store.list_for("alice", limit=100, cursor=deep)),
            "walk_all_pages_of_1000_ms": timed(lambda: walk(store, "alice", 1000), runs=3),
        }
        assert walk(store, "alice", 1000) == args.jobs

        def rebuild() -> None:
            storage.delete(INDEX)
            store.list_for("alice", limit=100)

        out["rebuild_index_then_first_page_ms"] = timed(rebuild, runs=1)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
