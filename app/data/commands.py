"""CLI of the data stage: ``python -m app data <verb> ...``.

``data generate`` writes synthetic raw tables (app/data/synthetic.py). Each verb is registered by
its own ``register_<verb>(data_sub)`` and runs a plain function the tests call too.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import add_common, load_stage_config, stage_config_path
from app.settings import get_settings
from app.storage import Storage

GENERATE_CONFIG = "configs/generate.yaml"
GENERATE_SMOKE_CONFIG = "configs/smoke/generate.yaml"
DATA_CONFIG = "configs/data.yaml"
DATA_SMOKE_CONFIG = "configs/smoke/data.yaml"


def register(subparsers) -> None:
    """Add the ``data`` stage and its verbs to the top-level parser."""
    p = subparsers.add_parser("data", help="raw data: generate synthetic logs, run the pipeline")
    data_sub = p.add_subparsers(dest="verb", required=True)
    register_generate(data_sub)
    register_movielens(data_sub)
    register_run(data_sub)


def register_generate(data_sub) -> None:
    p = data_sub.add_parser(
        "generate",
        help="write synthetic raw tables + ground truth under <root>/raw",
        description="Synthetic persona, show/click logs, keyword and slot tables from a planted model.",
    )
    add_common(p, config=GENERATE_CONFIG)
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    """``--smoke`` uses the smoke config; ``--set`` overrides apply on top of either."""
    from app.data.synthetic import GenerateConfig, generate

    cfg = load_stage_config(GenerateConfig, args, GENERATE_CONFIG, GENERATE_SMOKE_CONFIG)
    storage = Storage(get_settings(args.root).root)
    summary = generate(cfg, storage)
    summary["config"] = stage_config_path(args, GENERATE_CONFIG, GENERATE_SMOKE_CONFIG)
    return summary


def register_movielens(data_sub) -> None:
    p = data_sub.add_parser(
        "movielens",
        help="write MovieLens-100K (real ratings, fetched from PyPI) as the raw tables under <root>/raw",
        description="Downloads the recbole==1.2.1 wheel with pip (cached), maps ratings to shows and clicks.",
    )
    add_common(p, config=None)
    p.add_argument("--cache", default=None, help="folder for the downloaded wheel (default .cache/movielens)")
    p.set_defaults(func=cmd_movielens)


def cmd_movielens(args: argparse.Namespace) -> dict[str, Any]:
    from app.config import load_config
    from app.data.movielens import MovieLensConfig, write_movielens

    cfg = load_config(MovieLensConfig, args.config, args.overrides)
    if args.cache:
        cfg.cache_dir = args.cache
    return write_movielens(cfg, Storage(get_settings(args.root).root))


def register_run(data_sub) -> None:
    from app.data.pipeline import STAGES

    p = data_sub.add_parser(
        "run",
        help="run the pipeline: raw logs -> keywords, persona, clean, unify, trainready, samples",
        description="Ray Data pipeline; --stages runs a subset (each stage reads the previous one's tables).",
    )
    add_common(p, config=DATA_CONFIG)
    p.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
    p.set_defaults(func=cmd_run)
    for name in STAGES:  # each stage alone: python -m app data trainready
        q = data_sub.add_parser(name, help=f"run only the {name} stage")
        add_common(q, config=DATA_CONFIG)
        q.set_defaults(func=cmd_run, stages=name)


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from app.data.config import DataConfig
    from app.data.pipeline import run_pipeline

    cfg = load_stage_config(DataConfig, args, DATA_CONFIG, DATA_SMOKE_CONFIG)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    storage = Storage(get_settings(args.root).root)
    return run_pipeline(cfg, storage, stages)
