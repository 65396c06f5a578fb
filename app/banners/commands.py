"""CLI of the banner-clustering stage: ``python -m app banners <verb> ...``.

``generate`` (synthetic banners + events) or ``digits`` (scikit-learn's digits as banners) write
the raw tables; ``dedupe``, ``sweep`` (which registers the chosen model), ``predict`` and
``features`` are the steps; ``run`` does the four in order. Each verb runs a plain function the
tests call too.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import add_common, load_stage_config, stage_config_path
from app.settings import get_settings
from app.storage import Storage

GENERATE_CONFIG = "configs/banners/generate.yaml"
GENERATE_SMOKE_CONFIG = "configs/banners/smoke/generate.yaml"
BANNERS_CONFIG = "configs/banners/banners.yaml"
BANNERS_SMOKE_CONFIG = "configs/banners/smoke/banners.yaml"
STEPS = ("dedupe", "sweep", "predict", "features")


def register(subparsers) -> None:
    """Add the ``banners`` stage and its verbs to the top-level parser."""
    p = subparsers.add_parser("banners", help="banner clustering (spec 002): dedupe, k-means sweep, predict, user features")
    sub = p.add_subparsers(dest="verb", required=True)
    q = sub.add_parser("generate", help="write synthetic banners (planted clusters, advertisers) and user events under <root>/raw")
    add_common(q, config=GENERATE_CONFIG)
    q.set_defaults(func=cmd_generate)
    q = sub.add_parser("digits", help="write scikit-learn's handwritten digits as raw banners (digit = advertiser = truth)")
    add_common(q, config=None)
    q.set_defaults(func=cmd_digits)
    helps = {"dedupe": "validate, quarantine and dedupe the raw embeddings by banner_id",
             "sweep": "PCA + k-means over the K grid on Ray, metrics per K, register the chosen model",
             "predict": "cluster id of every deduped banner with the current model (Ray Data)",
             "features": "per-user cluster counts (request/impression/click) and per-cluster analytics",
             "run": "dedupe, sweep, predict, features in order"}
    for verb, text in helps.items():
        q = sub.add_parser(verb, help=text)
        add_common(q, config=BANNERS_CONFIG)
        q.set_defaults(func=cmd_steps, steps=list(STEPS) if verb == "run" else [verb])
        if verb == "predict":
            q.add_argument("--table", default=None,
                           help="root-relative Parquet table with banner_id and embedding, e.g. a new day's "
                                "raw/banners/part-011.parquet (default: the deduped tables/banners)")


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    from app.banners.config import BannerGenerateConfig
    from app.banners.synthetic import generate_banners

    cfg = load_stage_config(BannerGenerateConfig, args, GENERATE_CONFIG, GENERATE_SMOKE_CONFIG)
    summary = generate_banners(cfg, Storage(get_settings(args.root).root))
    summary["config"] = stage_config_path(args, GENERATE_CONFIG, GENERATE_SMOKE_CONFIG)
    return summary


def cmd_digits(args: argparse.Namespace) -> dict[str, Any]:
    from app.banners.digits import write_digits

    return write_digits(Storage(get_settings(args.root).root))


def run_steps(cfg: Any, storage: Storage, steps: list[str], predict_table: str | None = None) -> dict[str, Any]:
    """The named steps in order, each one's report under its name (Ray started when needed).
    ``predict_table``: what ``predict`` assigns (default: the deduped banners)."""
    from app.banners.config import BannersConfig
    from app.console import get_console

    cfg = BannersConfig.model_validate(cfg.model_dump())
    console = get_console()
    out: dict[str, Any] = {}
    if {"dedupe", "sweep", "predict"} & set(steps):
        from app.ray_utils import init_ray

        init_ray()
    for step in steps:
        if step == "features" and len(steps) > 1 and not _has_events(storage, cfg.events):
            out[step] = {"skipped": f"no event table at {cfg.events!r}"}  # e.g. the digits data
            continue
        console.step("banners", step)
        if step == "predict" and predict_table:
            from app.banners.predict import predict

            out[step] = predict(cfg, storage, predict_table)
        else:
            out[step] = STEP_FUNCTIONS[step](cfg, storage)
    return out


def _has_events(storage: Storage, path: str) -> bool:
    if "://" in path or path.startswith("/"):
        return True  # let the step read it (and say what is wrong)
    return bool(storage.list_files(path, suffix=".parquet"))


def _dedupe(cfg: Any, storage: Storage) -> dict[str, Any]:
    from app.banners.dedupe import dedupe

    return dedupe(cfg, storage)


def _sweep(cfg: Any, storage: Storage) -> dict[str, Any]:
    from app.banners.model import register_model
    from app.banners.sweep import run_sweep

    report, model = run_sweep(cfg, storage)
    report["model_version"] = register_model(storage, model, report, cfg)
    return {k: report[k] for k in ("model_version", "rule", "chosen", "table", "pca", "rows_fit", "seconds")}


def _predict(cfg: Any, storage: Storage) -> dict[str, Any]:
    from app.banners.predict import predict

    return predict(cfg, storage)


def _features(cfg: Any, storage: Storage) -> dict[str, Any]:
    from app.banners.features import user_features

    return user_features(cfg, storage)


STEP_FUNCTIONS = {"dedupe": _dedupe, "sweep": _sweep, "predict": _predict, "features": _features}


def cmd_steps(args: argparse.Namespace) -> dict[str, Any]:
    from app.banners.config import BannersConfig

    cfg = load_stage_config(BannersConfig, args, BANNERS_CONFIG, BANNERS_SMOKE_CONFIG)
    out = run_steps(cfg, Storage(get_settings(args.root).root), args.steps, getattr(args, "table", None))
    out["config"] = stage_config_path(args, BANNERS_CONFIG, BANNERS_SMOKE_CONFIG)
    return out
