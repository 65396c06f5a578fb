"""DIN training throughput: examples/s with 1 and 2 CPU workers (and a GPU worker when present).

    python benchmarks/train_din.py                      # default model, 200k planted samples
    python benchmarks/train_din.py --users 2000 --steps 5   # a tiny check that it runs

Planted TFRecord samples (app/train/planted.py, the pipeline's exact layout) are written to a temp
root (not timed), then ``train_driver_fn`` runs the configured model (configs/train/din.yaml) for
one epoch of ``--steps`` steps per worker count. examples/s is the global batch times the timed
steps over their wall time (first step excluded: graph tracing), as reported by rank 0. On a GPU
host (``tf.config.list_physical_devices('GPU')``) it adds a 1-worker run with ``use_gpu``, mixed
precision and ``--gpu-batch``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from app.config import load_config  # noqa: E402
from app.storage import Storage  # noqa: E402
from app.train.config import TrainConfig  # noqa: E402


def measure(root: str, cfg: TrainConfig) -> dict:
    from app.registry import new_version
    from app.train.driver import train_driver_fn

    t0 = time.perf_counter()
    m = train_driver_fn({**cfg.model_dump(mode="json"), "root": root, "version": new_version()})
    return {
        "workers": cfg.num_workers,
        "cpus_per_worker": cfg.cpus_per_worker,
        "use_gpu": cfg.use_gpu,
        "global_batch": m.get("global_batch"),
        "examples_per_s": round(float(m.get("examples_per_s", 0.0)), 1),
        "loss": m.get("loss"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-c", "--config", default="configs/train/din.yaml")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--samples-per-user", type=int, default=10)
    ap.add_argument("--hist-len", type=int, default=32)
    ap.add_argument("--keywords", type=int, default=100)
    ap.add_argument("--steps", type=int, default=60, help="steps per run (global batches)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=None, help="CPU cores to share among the workers (default: all)")
    ap.add_argument("--gpu-batch", type=int, default=16384)
    ap.add_argument("--root", default=None, help="storage root for the samples (default: a temp dir)")
    args = ap.parse_args()

    import tensorflow as tf

    from app.ray_utils import init_ray
    from app.train.planted import write_planted_run

    root = args.root or tempfile.mkdtemp(prefix="train_din_bench-")
    stats = write_planted_run(
        Storage(root),
        n_users=args.users,
        num_keywords=args.keywords,
        hist_len=args.hist_len,
        samples_per_user=args.samples_per_user,
        test_fraction=0.05,
        shards=8,
    )
    gpus = tf.config.list_physical_devices("GPU")
    init_ray(num_cpus=os.cpu_count() if gpus else None)
    common = ["epochs=1", "validate_every_epoch=false", f"max_steps_per_epoch={args.steps}", "max_failures=0"]
    runs = []
    cpus = args.cpus or os.cpu_count() or 1
    for w in args.workers:
        # the workers share the machine's cores: each gets cpus / w (its TF intra-op threads)
        per_worker = max(1, cpus // w)
        cfg = load_config(
            TrainConfig,
            args.config,
            [*common, f"num_workers={w}", "use_gpu=false", f"cpus_per_worker={per_worker}"],
        )
        runs.append(measure(root, cfg))
    if gpus:
        cfg = load_config(
            TrainConfig,
            args.config,
            [
                *common,
                "num_workers=1",
                "use_gpu=true",
                "mixed_precision=true",
                f"batch_size={args.gpu_batch}",
                f"cpus_per_worker={max(1, (os.cpu_count() or 2) - 1)}",
            ],
        )
        runs.append(measure(root, cfg))
    print(
        json.dumps(
            {
                "benchmark": "train_din",
                "config": args.config,
                "train_rows": stats["train"]["rows"],
                "hist_len": args.hist_len,
                "num_keywords": args.keywords,
                "cpu_count": os.cpu_count(),
                "gpu": [g.name for g in gpus],
                "machine": platform.machine(),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
