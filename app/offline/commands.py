"""CLI of the offline jobs (spec 003): ``python -m app offline <job> -c configs/offline/<job>.yaml``.

Every job is registered from :data:`JOBS` (name -> config model, ``module:function``); a command
loads the config (``--smoke`` picks ``configs/offline/smoke/<job>.yaml``), starts or joins Ray,
runs the job's function and prints its report. ``ray job submit --working-dir . -- python -m app
offline <job> ...`` runs the same command on a cluster.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from app.cli import add_common, load_stage_config, stage_config_path
from app.settings import get_settings
from app.storage import Storage

#: job -> (config class in app.offline.config or app.offline.generate, "module:function", help)
JOBS: dict[str, tuple[str, str, str]] = {
    "generate": ("app.offline.generate:GenerateActionsConfig", "app.offline.generate:generate_actions",
                 "write generated JSON action logs with planted item groups (and their truth)"),
    "actions": ("app.offline.config:ActionsConfig", "app.offline.actions:run_actions",
                "group one day of raw JSON actions into per-client daily Parquet partitions"),
    "matrix-factorization": ("app.offline.config:MatrixFactorizationConfig", "app.offline.als:run_als",
                             "implicit ALS: user/item factors and top-N recommendations per user"),
    "similar-items": ("app.offline.config:SimilarItemsConfig", "app.offline.similarity:run_similar_items",
                      "item-item cosine similarity, exact or DIMSUM-sampled"),
    "session-items": ("app.offline.config:SessionItemsConfig", "app.offline.item2vec:run_session_items",
                      "cut each user's actions into sessions of items"),
    "word2vec": ("app.offline.config:Word2VecConfig", "app.offline.item2vec:run_word2vec",
                 "item vectors from sessions (item2vec) and the nearest items per item"),
    "cluster-by-dimension": ("app.offline.config:ClusterByDimensionConfig",
                             "app.offline.clusters:run_cluster_by_dimension",
                             "users in the item dimensions they use more than average"),
    "tag-affinity": ("app.offline.config:TagAffinityConfig", "app.offline.clusters:run_tag_affinity",
                     "users and the item tags they use more than average"),
    "basket-analysis": ("app.offline.config:BasketAnalysisConfig", "app.offline.rules:run_basket_analysis",
                        "add/remove-from-basket events into one basket per session"),
    "fpgrowth": ("app.offline.config:FpGrowthConfig", "app.offline.rules:run_fpgrowth",
                 "frequent item sets (FP-growth) and association rules itemset -> item"),
}


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def config_paths(job: str) -> tuple[str, str]:
    """(default config, smoke config) of ``job``."""
    return f"configs/offline/{job}.yaml", f"configs/offline/smoke/{job}.yaml"


def run_job(job: str, args: argparse.Namespace) -> dict[str, Any]:
    """Load ``job``'s config from ``args``, run it against the storage root, return its report."""
    model_ref, fn_ref, _help = JOBS[job]
    default, smoke = config_paths(job)
    cfg = load_stage_config(_load(model_ref), args, default, smoke)
    storage = Storage(get_settings(args.root).root)
    report = _load(fn_ref)(cfg, storage)
    report["config"] = stage_config_path(args, default, smoke)
    return report


def register(subparsers) -> None:
    """Add the ``offline`` stage and one verb per job."""
    p = subparsers.add_parser("offline", help="offline recommender jobs: actions, ALS, similar items, item2vec, "
                                              "clusters, tag affinity, association rules")
    verbs = p.add_subparsers(dest="verb", required=True)
    for job, (_model, _fn, text) in JOBS.items():
        q = verbs.add_parser(job, help=text, description=text)
        add_common(q, config=config_paths(job)[0])
        q.set_defaults(func=lambda args, job=job: run_job(job, args))
