"""The data pipeline: raw ad logs -> keywords, persona, cleaned logs, unified logs, train-ready,
samples. Each stage is also runnable alone (``python -m app data run --stages trainready``); each
reads the previous stage's tables from storage, so a failed run resumes from the failed stage.

Stages after clean are fused into it. Its second step has one Ray Data task per did_bucket that
holds all of the bucket's cleaned rows; in the same task it writes the unified logs
(``tables/logs``, always) and, when the run includes them, goes on to the bucket's train-ready
rows and its TFRecord shards. Each stage's rows, quarantine and report counts are the same as
when the stage runs alone (the integration tests compare the rows, and the TFRecord files byte
for byte), and each is committed separately. What the fusion saves is re-reading ``tables/logs`` and
``tables/trainready`` and two more Ray Data jobs: about a quarter of the pipeline at 10M rows
(BENCHMARKS.md). A fused report says ``written_by: clean``, and its ``seconds`` are the task
seconds spent on that stage (summed over buckets, which run in parallel). Where the fused
output would differ from a stage run alone (an older ``tables/logs`` partition the new input
lacks, a cut that moved; :func:`app.data.clean_logs._commit_downstream`) it is dropped and the
stage runs alone after clean.

The result holds each stage's report, ``stage_seconds`` (the wall time of each stage as run
here; the per-log clean reports share one clean run, so their own ``seconds`` overlap) and
``fused`` (the stages the clean stage wrote).
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
#: stages the clean stage can run fused, in order (unify always is)
FUSABLE = ("trainready", "samples")


def run_pipeline(cfg: DataConfig, storage: Storage, stages: list[str] | None = None, fuse: bool = True) -> dict:
    """Run the named stages (default: all, in order) under the current Ray; return their reports.

    ``fuse=False`` runs every stage on its own (tests compare the two).
    """
    from app.ray_utils import init_ray, prewarm_data_workers

    chosen = stages or list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        from app.errors import ConfigError

        raise ConfigError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    init_ray()
    prewarm_data_workers()
    storage.recover()
    storage.write_text("reports/data_config.yaml", dump_config(cfg))
    fusable: list[str] = []
    for name in FUSABLE:  # a prefix of FUSABLE: samples fuses only behind train-ready
        if fuse and name in chosen and len(fusable) == FUSABLE.index(name):
            fusable.append(name)
    started = time.perf_counter()
    reports: dict = {}
    stage_seconds = {}
    written: set[str] = set()  # stages whose output the clean stage wrote
    for name in STAGES:  # always in pipeline order, whatever order was asked
        if name not in chosen:
            continue
        t0 = time.perf_counter()
        if name in written:
            reports[name] = storage.read_json(f"reports/{name}.json")
        elif name == "clean":
            reports[name] = clean_logs.run(cfg, storage, fuse=tuple(fusable))
            written = set(reports[name].pop("fused"))
        else:
            reports[name] = STAGES[name](cfg, storage)
        stage_seconds[name] = round(time.perf_counter() - t0, 3)
    reports["seconds"] = round(time.perf_counter() - started, 3)
    reports["stage_seconds"] = stage_seconds
    reports["fused"] = [name for name in STAGES if name in written]
    return reports
