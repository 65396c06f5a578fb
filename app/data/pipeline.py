"""The data pipeline: raw ad logs -> keywords, persona, cleaned logs, unified logs, train-ready,
samples. Each stage is also runnable alone (``python -m app data run --stages trainready``); each
reads the previous stage's tables from storage, so a failed run resumes from the failed stage.

One fusion: the clean stage also writes the unify stage's table (``tables/logs``) in the pass
that writes the cleaned logs (see :mod:`app.data.clean_logs`). When both run in one call, the
unify stage's report is the one clean wrote (``written_by: clean``) and its time is inside
clean's; run alone, unify rebuilds the table from the cleaned logs.

The result holds each stage's report and ``stage_seconds``, the wall time of each stage as run
here (the per-log clean reports share one clean run, so their own ``seconds`` overlap).
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
#: stage -> the stage that also produces its output when both run in one call
FUSED = {"unify": "clean"}


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
    reports: dict = {}
    stage_seconds = {}
    for name in STAGES:  # always in pipeline order, whatever order was asked
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        if name in FUSED and FUSED[name] in reports:
            reports[name] = storage.read_json(f"reports/{name}.json")  # written by the fused stage
        else:
            reports[name] = STAGES[name](cfg, storage)
        stage_seconds[name] = round(time.perf_counter() - t0, 3)
    reports["seconds"] = round(time.perf_counter() - started, 3)
    reports["stage_seconds"] = stage_seconds
    return reports
