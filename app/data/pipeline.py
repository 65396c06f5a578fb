"""The data pipeline: raw ad logs -> keywords, persona, cleaned logs, unified logs, train-ready,
samples. Each stage is also runnable alone (``python -m app data run --stages trainready``); each
reads the previous stage's tables from storage, so a failed run resumes from the failed stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from app.config import dump_config
from app.data import clean_logs, keywords, persona, samples, trainready, unify
from app.data.config import DataConfig
from app.storage import Storage

STAGES: dict[str, Callable[[DataConfig, Storage], dict]] = {
    "keywords": keywords.run,
    "persona": persona.run,
    "clean": clean_logs.run,
    "unify": unify.run,
    "trainready": trainready.run,
    "samples": samples.run,
}


def run_pipeline(cfg: DataConfig, storage: Storage, stages: list[str] | None = None) -> dict:
    """Run the named stages (default: all, in order) under the current Ray; return their reports."""
    from app.ray_utils import init_ray

    chosen = stages or list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        from app.errors import ConfigError

        raise ConfigError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    init_ray()
    storage.recover()
    storage.write_text("reports/data_config.yaml", dump_config(cfg))
    started = time.perf_counter()
    reports = {}
    for name in STAGES:  # always in pipeline order, whatever order was asked
        if name in chosen:
            reports[name] = STAGES[name](cfg, storage)
    reports["seconds"] = round(time.perf_counter() - started, 3)
    return reports
