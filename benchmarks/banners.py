"""Banner clustering figures (spec 002): dedupe rows/s, k-means seconds per K, metric tables.

    python benchmarks/banners.py dedupe --rows 10000000 --dim 128
    python benchmarks/banners.py kmeans --rows 1000000 --dim 128 --k 5 10 15 20
    python benchmarks/banners.py strategy --data generated     # or --data digits
    python benchmarks/banners.py strategy --data digits --set sweep.pca_components=16

``dedupe`` generates raw banner rows (not timed; spec 002's 1.96 rows per unique banner over 11
days, 1% conflicted banners, 0.6% dirty rows) and times the dedupe stage under a local Ray
(2 CPUs): rows/s end to end and for the split job alone, the peak summed RSS of the driver and
its Ray processes. ``kmeans`` plants clusters in memory and fits one Ray task per K, two at a time
(one thread each): seconds, iterations and memory per K, and the wall time of the grid.
``strategy`` runs generate (or digits) -> dedupe -> sweep with the repository's configs and
prints the per-K metric table and the chosen K. Each prints one JSON line (``strategy`` also the
Markdown table). Runs in a temporary root, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from app.banners.config import BannerGenerateConfig, BannersConfig, SweepConfig  # noqa: E402
from app.config import load_config  # noqa: E402
from app.storage import Storage  # noqa: E402


class PeakMemory:
    """Peak summed RSS of this process and all its descendants (local Ray's processes)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> dict:
    return {"cpus": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}


def start_ray() -> None:
    from app.ray_utils import init_ray

    init_ray(num_cpus=2)


def bench_dedupe(args: argparse.Namespace, storage: Storage) -> dict:
    from app.banners.dedupe import dedupe
    from app.banners.synthetic import generate_banners

    unique = int(args.rows / 1.96)
    gen = BannerGenerateConfig(banners=unique, dim=args.dim, clusters=20, advertisers=1000, users=0,
                               row_group_rows=1 << 17, seed=11)
    t = time.perf_counter()
    planted = generate_banners(gen, storage)
    gen_s = time.perf_counter() - t
    start_ray()
    with PeakMemory() as mem:
        report = dedupe(BannersConfig(dim=args.dim, buckets=args.buckets), storage)
    rows = report["rows_in"]
    return {"figure": "banners_dedupe", "rows": rows, "dim": args.dim, "unique_banners": report["banners"],
            "buckets": args.buckets, "generate_seconds": round(gen_s, 1), "seconds": report["seconds"],
            "rows_per_s": round(rows / report["seconds"]),
            "split_rows_per_s": round(rows / report["split_seconds"]),
            "conflicted_banners": report["conflicted_banners"], "planted_conflicts": planted["conflicted_banners"],
            "quarantined_total": report["quarantined_total"], "peak_rss_gib": round(mem.peak / 2**30, 2)}


def bench_kmeans(args: argparse.Namespace, storage: Storage) -> dict:
    import ray

    from app.banners.sweep import fit_grid
    from app.banners.synthetic import plant_banners

    gen = BannerGenerateConfig(banners=args.rows, dim=args.dim, clusters=args.planted, advertisers=1000, seed=5)
    planted = plant_banners(gen, np.random.default_rng(5))
    start_ray()
    sweep = SweepConfig(k_grid=args.k, n_init=1, max_iter=args.max_iter, silhouette_sample=4000,
                        algorithm=args.algorithm)
    t = time.perf_counter()
    with PeakMemory() as mem:
        rows = fit_grid(planted["vectors"], planted["advertiser"], sweep)
    wall = time.perf_counter() - t
    ray.shutdown()
    from sklearn.metrics import adjusted_rand_score

    per_k = [{"k": r["k"], "fit_seconds": r["fit_seconds"], "n_iter": r["n_iter"], "peak_mib": r["peak_mib"],
              "rss_mib": r["rss_mib"], "silhouette": round(r["silhouette"], 4),
              "ari_truth": round(adjusted_rand_score(planted["cluster"], r["labels"]), 4)} for r in rows]
    return {"figure": "banners_kmeans", "rows": args.rows, "dim": args.dim, "planted_clusters": args.planted,
            "algorithm": args.algorithm, "n_init": 1, "max_iter": args.max_iter, "tasks_in_parallel": 2,
            "threads_per_task": 1, "grid_wall_seconds": round(wall, 1), "per_k": per_k,
            "peak_rss_gib": round(mem.peak / 2**30, 2)}


def bench_strategy(args: argparse.Namespace, storage: Storage) -> dict:
    from app.banners.commands import run_steps
    from app.banners.sweep import metric_table

    if args.data == "digits":
        from app.banners.digits import write_digits

        write_digits(storage)
        cfg = load_config(BannersConfig, "configs/banners/digits.yaml", args.set)
    else:
        from app.banners.synthetic import generate_banners

        generate_banners(load_config(BannerGenerateConfig, "configs/banners/generate.yaml", ["users=0"]), storage)
        cfg = load_config(BannersConfig, "configs/banners/banners.yaml", args.set)
    start_ray()
    out = run_steps(cfg, storage, ["dedupe", "sweep"])
    sweep = out["sweep"]
    print(metric_table(sweep["table"], sweep["chosen"]["k"]))
    return {"figure": f"banners_strategy_{args.data}", "rows_fit": sweep["rows_fit"], "pca": sweep["pca"],
            "overrides": args.set, "rule": sweep["rule"],
            "chosen_k": sweep["chosen"]["k"], "ari_truth": sweep["chosen"]["ari_truth"], "table": sweep["table"],
            "sweep_seconds": sweep["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("dedupe")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--buckets", type=int, default=16)
    p = sub.add_parser("kmeans")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--planted", type=int, default=10)
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 15, 20])
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--algorithm", choices=["kmeans", "minibatch"], default="kmeans")
    p = sub.add_parser("strategy")
    p.add_argument("--data", choices=["generated", "digits"], default="generated")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set sweep.pca_components=16")
    parser.add_argument("--root", default=None, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="bench-banners-")
    try:
        fn = {"dedupe": bench_dedupe, "kmeans": bench_kmeans, "strategy": bench_strategy}[args.what]
        out = fn(args, Storage(root))
        out["machine"] = machine()
        out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(json.dumps(out))
    finally:
        import ray

        ray.shutdown()
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
