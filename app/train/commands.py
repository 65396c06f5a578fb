"""CLI: ``python -m app train run|evaluate -c configs/train/din.yaml [--set k=v] [--root R] [--smoke]``."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import add_common, load_stage_config
from app.settings import get_settings
from app.storage import Storage
from app.train.config import TrainConfig

DEFAULT_CONFIG = "configs/train/din.yaml"
SMOKE_CONFIG = "configs/smoke/train_din.yaml"


def load_train_config(args: argparse.Namespace) -> TrainConfig:
    return load_stage_config(TrainConfig, args, DEFAULT_CONFIG, SMOKE_CONFIG)


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    """Train a new version with Ray Train, export, evaluate and gate it."""
    from app.train.run import run

    cfg = load_train_config(args)
    storage = Storage(get_settings(args.root).root)
    summary = run(cfg, storage)
    return {k: summary[k] for k in ("version", "path", "gate", "train")} | {
        "models": summary["metrics"]["models"]
    }


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Re-evaluate an exported version (default: the current one) on the configured test split."""
    from app.registry import Registry
    from app.train.evaluate import evaluate
    from app.train.export import BatchScorer, model_dir
    from app.train.input import read_stats

    cfg = load_train_config(args)
    storage = Storage(get_settings(args.root).root)
    version = args.version or Registry(storage).current_model(cfg.name)[0]
    stats = read_stats(storage, cfg.samples_run)
    scorer = BatchScorer.load(storage.uri(model_dir(cfg.name, version)))  # DIN, whichever scorer serves
    metrics, _, _ = evaluate(
        scorer, storage, cfg.samples_run, stats, cfg.evaluation.lr_max_rows, cfg.evaluation.oracle, cfg.seed
    )
    return {"version": version, **metrics}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train, evaluate and gate the DIN click model")
    verbs = p.add_subparsers(dest="verb", required=True)
    run_p = verbs.add_parser("run", help="train a new version (Ray Train), export, evaluate, gate")
    add_common(run_p, DEFAULT_CONFIG)
    run_p.set_defaults(func=cmd_run)
    ev = verbs.add_parser("evaluate", help="metrics of an exported version vs baselines and oracle")
    add_common(ev, DEFAULT_CONFIG)
    ev.add_argument("--version", default=None, help="model version (default: current)")
    ev.set_defaults(func=cmd_evaluate)
