"""DIN quality on generated data: test AUC / GAUC / log loss of DIN vs baselines vs the oracle.

    python benchmarks/din_quality.py --users 100000                 # the headline (>= 100k users)
    python benchmarks/din_quality.py --users 2000 --set epochs=1    # a quick check that it runs
    python benchmarks/din_quality.py --root var/q --reuse           # retrain on existing samples

Generates synthetic raw logs with the planted model (app/data/synthetic.py, configs/generate.yaml
with ``users`` overridden), runs the data pipeline (configs/data.yaml), trains DIN with Ray Train
(configs/train/din.yaml plus ``--set`` overrides), and evaluates it on the temporal test split
against keyword popularity, logistic regression and the generator's true click probabilities.
Prints a Markdown table on stderr and one JSON line on stdout. ``--planted`` skips the generator
and pipeline and uses app/train/planted.py samples (no oracle then).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from app.config import load_config  # noqa: E402
from app.storage import Storage  # noqa: E402

ORDER = ("din", "logistic_regression", "popularity", "oracle")


def prepare(storage: Storage, args) -> dict:
    t0 = time.perf_counter()
    if args.planted:
        from app.train.planted import write_planted_run

        write_planted_run(storage, n_users=args.users, num_keywords=30, hist_len=16, samples_per_user=10)
        return {"data_s": round(time.perf_counter() - t0, 1), "source": "planted"}
    from app.data.config import DataConfig
    from app.data.pipeline import run_pipeline
    from app.data.synthetic import GenerateConfig, generate

    generate(load_config(GenerateConfig, args.generate_config, [f"users={args.users}"]), storage)
    run_pipeline(load_config(DataConfig, args.data_config), storage)
    return {"data_s": round(time.perf_counter() - t0, 1), "source": "generator+pipeline"}


def table(models: dict) -> str:
    lines = ["| model | test AUC | GAUC | log loss |", "|---|---|---|---|"]
    for name in ORDER:
        if name in models:
            m = models[name]
            ll = "-" if m.get("logloss") is None else f"{m['logloss']:.4f}"
            lines.append(f"| {name} | {m['auc']:.4f} | {m['gauc']:.4f} | {ll} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--root", default=None, help="storage root (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="skip generation/pipeline if samples exist")
    ap.add_argument("--planted", action="store_true", help="planted samples instead of generator+pipeline")
    ap.add_argument("--generate-config", default="configs/generate.yaml")
    ap.add_argument("--data-config", default="configs/data.yaml")
    ap.add_argument("-c", "--config", default="configs/train/din.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from app.ray_utils import init_ray
    from app.train.config import TrainConfig
    from app.train.run import run

    storage = Storage(args.root or tempfile.mkdtemp(prefix="din_quality-"))
    cfg = load_config(TrainConfig, args.config, args.overrides)
    init_ray()
    data = {"source": "reused"}
    if not (args.reuse and storage.exists(f"samples/{cfg.samples_run}/stats.json")):
        data = prepare(storage, args)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON line
        summary = run(cfg, storage)
    metrics = summary["metrics"]
    models = metrics["models"]
    din = models["din"]["auc"]
    out = {
        "benchmark": "din_quality",
        "root": storage.root,
        "users": args.users,
        **data,
        "train_eval_s": round(time.perf_counter() - t0, 1),
        "version": summary["version"],
        "test_rows": metrics["test_rows"],
        "test_users": metrics["test_users"],
        "models": models,
        "din_over_oracle_auc": metrics.get("din_over_oracle_auc"),
        "din_beats_baselines": all(
            din > models[b]["auc"] for b in ("popularity", "logistic_regression") if b in models
        ),
        "train": summary.get("train"),
        "config": cfg.model_dump(mode="json"),
    }
    print(table(models), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
