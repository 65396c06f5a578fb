"""Lookalike quality on real data: MovieLens-100K, everything as of the cut.

    python benchmarks/lookalike_real.py [--root var/movielens] [--cache .cache/movielens] [--leaky]

Fetches MovieLens-100K from PyPI (the recbole==1.2.1 wheel, cached; never committed), writes it
as the five raw tables (genre = keyword, rating >= 4 = click), runs the data pipeline, trains DIN
(the gate then picks the scorer that serves), and validates the extension as of 1998-02-01: for
each keyword with enough eligible clickers, 50 seeds who clicked it before the cut, audiences of
1x and 5x from din (score-table similarity), jsd, popularity and random, all drawn from the users
active before the cut, and their clicks on the keyword after it. Prints one JSON line (AUCs with
DIN's paired CIs, the gate's decision, lift per keyword with 95% CIs, the verdicts) and writes
``<root>/reports/lookalike_real.md``. ``--leaky`` also runs the old, leaky validation (every
train-ready user eligible) for comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _round(x, nd=4):
    return None if x is None else round(float(x), nd)


def lifts(report: dict) -> list[dict]:
    out = []
    for r in report["rows"]:
        row = {"keyword": r["keyword"], "factor": r["factor"], "seeds": r["seeds"],
               "eligible_clickers": r.get("eligible_clickers"),
               "random_clicks_per_user": _round(r["sets"]["random"]["clicks_per_user"])}
        for name in ("din", "jsd", "popularity"):
            m = r["sets"].get(name)
            row[name] = None if m is None else [_round(m["lift"], 3), *(_round(v, 3) for v in m["lift_ci95"])]
        out.append(row)
    return out


def markdown(result: dict) -> str:
    m = result["auc"]
    lines = [f"# Lookalike on MovieLens-100K as of {result['cut']}", "",
             f"Test AUC: DIN {m['din']:.4f}, logistic regression {m['logistic_regression']:.4f}, "
             f"popularity {m['popularity']:.4f}. DIN minus regression {result['din_minus_lr'][0]:+.4f} "
             f"[{result['din_minus_lr'][1]:+.4f}, {result['din_minus_lr'][2]:+.4f}].",
             f"Gate: {result['gate']['reason']}.", "",
             "| keyword | eligible clickers | x | din lift [95% CI] | jsd | popularity | random clicks/user |",
             "|---|---|---|---|---|---|---|"]
    for r in result["lifts"]:
        cell = lambda v: "-" if v is None else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"  # noqa: E731
        lines.append(f"| {r['keyword']} | {r['eligible_clickers']} | {r['factor']} | {cell(r['din'])} | "
                     f"{cell(r['jsd'])} | {cell(r['popularity'])} | {r['random_clicks_per_user']} |")
    lines += ["", "Verdicts:", *[f"- {v}" for v in result["verdicts"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="var/movielens")
    ap.add_argument("--cache", default=".cache/movielens")
    ap.add_argument("--leaky", action="store_true", help="also validate with every train-ready user eligible")
    args = ap.parse_args()

    from app.config import load_config
    from app.data.config import DataConfig
    from app.data.movielens import MovieLensConfig, write_movielens
    from app.data.pipeline import run_pipeline
    from app.extend.config import ExtendConfig
    from app.extend.validate import run_validation
    from app.ray_utils import init_ray
    from app.settings import resolve_root
    from app.storage import Storage
    from app.train.config import TrainConfig
    from app.train.run import run as train_run

    cfg_dir = REPO / "configs" / "movielens"
    storage = Storage(resolve_root(args.root))
    seconds = {}
    t = time.perf_counter()
    raw = write_movielens(MovieLensConfig(cache_dir=args.cache), storage)
    seconds["raw_tables"] = time.perf_counter() - t
    init_ray()
    t = time.perf_counter()
    data = run_pipeline(load_config(DataConfig, cfg_dir / "data.yaml"), storage)
    seconds["pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = train_run(load_config(TrainConfig, cfg_dir / "train_din.yaml"), storage)
    seconds["train_evaluate_gate"] = time.perf_counter() - t
    ecfg = load_config(ExtendConfig, cfg_dir / "extend.yaml")
    t = time.perf_counter()
    report = run_validation(storage, ecfg)
    seconds["validation"] = time.perf_counter() - t
    metrics = trained["metrics"]
    cmp_lr = metrics["comparisons"].get("din - logistic_regression", {})
    result = {
        "benchmark": "lookalike_real",
        "data": "MovieLens-100K (recbole==1.2.1 wheel)",
        "cut": report["cutting_date"],
        "raw_rows": raw["rows"],
        "samples": {"train": data["samples"]["train"], "test": data["samples"]["test"]},
        "auc": {k: _round(v["auc"]) for k, v in metrics["models"].items()},
        "din_minus_lr": [_round(cmp_lr.get("diff")), *(_round(v) for v in cmp_lr.get("ci95", [None, None]))],
        "gate": {k: trained["gate"][k] for k in ("promote", "scorer", "reason")},
        "score_table_scorer": report.get("scorer"),
        "eligible_users": report["eligible_users"],
        "excluded_users": report["excluded_users"],
        "lifts": lifts(report),
        "verdicts": report["verdicts"],
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    if args.leaky:
        leaky = run_validation(storage, ecfg.model_copy(update={
            "eligible": "all", "validation": ecfg.validation.model_copy(update={"report_dir": "reports/leaky"})}))
        result["leaky_lifts"] = lifts(leaky)
    storage.write_text("reports/lookalike_real.md", markdown(result))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
