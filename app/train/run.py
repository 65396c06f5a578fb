"""``python -m app train run``: train (Ray Train) -> export -> evaluate -> gate -> registry."""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Any

from app.config import dump_config
from app.registry import new_version
from app.storage import Storage
from app.train.config import TrainConfig
from app.train.export import SAVED_MODEL, BatchScorer, export_saved_model, model_dir, write_scorer_meta
from app.train.input import read_stats

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"


def export_checkpoint(
    checkpoint_dir: str, cfg: TrainConfig, stats: dict[str, Any], storage: Storage, rel_dir: str
) -> None:
    """Rebuild DIN in float32 on this process, load a checkpoint's weights, write the SavedModel."""
    import tensorflow as tf

    from app.train.din import build_din
    from app.train.driver import WEIGHTS

    tf.keras.mixed_precision.set_global_policy("float32")
    hist_len, num_keywords = int(stats["hist_len"]), int(stats["num_keywords"])
    model = build_din(num_keywords, hist_len, cfg.model)
    model.load_weights(os.path.join(checkpoint_dir, WEIGHTS)).expect_partial()
    export_saved_model(model, storage.uri(rel_dir, SAVED_MODEL), hist_len)
    write_scorer_meta(storage, rel_dir, hist_len, num_keywords, list(stats.get("keywords") or []))


def export_regression(clf: Any, cfg: TrainConfig, stats: dict[str, Any], storage: Storage, rel_dir: str) -> None:
    """The fitted logistic-regression baseline as a SavedModel beside DIN's (same signature)."""
    from app.train.baselines import logistic_regression_model

    hist_len, num_keywords = int(stats["hist_len"]), int(stats["num_keywords"])
    model = logistic_regression_model(clf, num_keywords, hist_len, cfg.model.age_vocab, cfg.model.gender_vocab)
    export_saved_model(model, storage.uri(rel_dir, SAVED_MODEL), hist_len)
    write_scorer_meta(storage, rel_dir, hist_len, num_keywords, list(stats.get("keywords") or []))


def evaluate_and_gate(
    cfg: TrainConfig,
    storage: Storage,
    version: str,
    stats: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate an exported version against its baselines, write metrics.json, export the
    regression, run the gate; returns the summary."""
    from app.train.evaluate import evaluate, model_batch
    from app.train.gate import LR, POPULARITY, apply_gate, scorer_dir
    from app.train.metrics import auc

    rel = model_dir(cfg.name, version)
    scorer = BatchScorer.load(storage.uri(rel))
    metrics, test, fitted = evaluate(
        scorer, storage, cfg.samples_run, stats, cfg.evaluation.lr_max_rows, cfg.evaluation.oracle, cfg.seed
    )
    metrics.update(version=version, **(extra or {}))
    storage.write_json(posixpath.join(rel, METRICS_FILE), metrics)
    if fitted.get(LR) is not None:
        export_regression(fitted[LR], cfg, stats, storage, scorer_dir(cfg.name, version, LR))
    models = metrics["models"]
    baselines = {k: models[k]["auc"] for k in (LR, POPULARITY) if k in models}
    new_auc = models["din"]["auc"]
    info = {
        "path": rel,
        "test_auc": new_auc,
        "test_gauc": models["din"]["gauc"],
        "test_fingerprint": metrics["test_fingerprint"],
        "samples_run": cfg.samples_run,
    }
    decision = apply_gate(
        storage,
        cfg.name,
        version,
        new_auc,
        lambda current: auc(test["label"], current.score(model_batch(test))),
        info,
        cfg.evaluation.min_improvement,
        baselines=baselines,
    )
    return {"version": version, "path": rel, "metrics": metrics, "gate": decision.to_dict()}


def run(cfg: TrainConfig, storage: Storage, version: str | None = None) -> dict[str, Any]:
    """Train one version end to end (starts a local Ray unless one is up); returns a JSON-able summary."""
    from app.ray_utils import init_ray

    version = version or new_version()
    rel = model_dir(cfg.name, version)
    stats = read_stats(storage, cfg.samples_run)  # fail fast, before Ray starts
    init_ray()
    storage.write_text(posixpath.join(rel, CONFIG_FILE), dump_config(cfg))

    from app.train.driver import fit_trainer

    result = fit_trainer({**cfg.model_dump(mode="json"), "root": storage.root, "version": version})
    if result.checkpoint is None:
        raise RuntimeError(f"training {version} finished without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as d:
        export_checkpoint(d, cfg, stats, storage, rel)
    train_metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    summary = evaluate_and_gate(cfg, storage, version, stats, {"train": train_metrics})
    summary["train"] = train_metrics
    return summary
