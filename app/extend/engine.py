"""The audience-extension job: seed reader -> clustering -> similarity -> selection (spec 000).

:func:`extend_audience` is the one entry point; the CLI, the validation and the Serve worker
actors call it. It needs a running Ray (for the similarity generator) and writes
``<out_dir>/audience.parquet``, ``<out_dir>/audience.csv`` (did, score, rank) and
``<out_dir>/report.json`` under the storage root.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.extend.clustering import choose_k
from app.extend.config import ExtendConfig
from app.extend.scores import read_score_vectors, score_space, score_table_files, score_table_for
from app.extend.seeds import SeedSet, read_seeds
from app.extend.selection import audience_size, select_top
from app.extend.similarity import similarity_candidates
from app.extend.space import similarity_spread
from app.storage import Storage

Progress = Callable[[float, str], None]


def _noop(_fraction: float, _message: str) -> None:
    return None


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.steps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 3)
        self.last = now

    def summary(self) -> dict[str, float]:
        return {**self.steps, "total": round(time.perf_counter() - self.t0, 3)}


def score_distribution(scores: np.ndarray) -> dict[str, Any]:
    if scores.size == 0:
        return {"n": 0}
    qs = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
    vals = np.quantile(scores.astype(np.float64), qs)
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "quantiles": {f"p{int(q * 100)}": round(float(v), 6) for q, v in zip(qs, vals, strict=True)},
    }


def seed_count_warnings(n_found: int, recommended: tuple[int, int]) -> list[str]:
    lo, hi = recommended
    if n_found < lo:
        return [f"{n_found} seeds found: fewer than the recommended {lo}; distributions are noisy"]
    if n_found > hi:
        return [f"{n_found} seeds found: more than the recommended {hi}; the seed set may be too general"]
    return []


#: a p10-p90 width of the users' similarity to the seeds below this is reported as too narrow
MIN_SPREAD = 0.05


def spread_warnings(spread: dict[str, Any]) -> list[str]:
    width = spread.get("width_p10_p90")
    if width is None or width >= MIN_SPREAD:
        return []
    return [f"users barely differ in similarity to the seeds (p10-p90 width {width:.4f} < {MIN_SPREAD}): "
            "the ranking is close to arbitrary"]


def size_warnings(requested: int, delivered: int, eligible: int, seeds: int) -> list[str]:
    """Say so when the audience is smaller than asked: the eligible pool ran out."""
    if delivered >= requested:
        return []
    return [f"requested an audience of {requested} but only {delivered} eligible non-seed users exist "
            f"({eligible} eligible users, {seeds} of them seeds): delivered {delivered}"]


def write_audience(storage: Storage, out_dir: str, audience: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(audience, buf)
    storage.write_bytes(f"{out_dir}/audience.parquet", buf.getvalue())
    buf = io.BytesIO()
    pacsv.write_csv(audience.select(["did", "score", "rank"]), buf)
    storage.write_bytes(f"{out_dir}/audience.csv", buf.getvalue())


def _extend_din(
    storage: Storage, seeds: list[str], cfg: ExtendConfig, progress: Progress, timer: _Timer
) -> tuple[pa.Table, dict[str, Any]]:
    version, info = score_table_for(storage, cfg)
    users = storage.read_table(f"scores/{version}", columns=["did"])
    all_dids = users.column("did").to_numpy(zero_copy_only=False).astype(str)
    seedset: SeedSet = read_seeds(seeds, all_dids, cfg.min_found_seeds, cfg.max_seeds)
    timer.lap("seed_reader")
    progress(0.15, f"{seedset.found} seeds found of {seedset.submitted}")

    seed_vecs = read_score_vectors(storage, version, seedset.found_dids)
    clusters = choose_k(seed_vecs, cfg.max_clusters, cfg.seed, cfg.min_silhouette,
                        cfg.max_coherent_clusters, cfg.cluster_sample)
    timer.lap("clustering")
    progress(0.3, f"seeds form {clusters.k} cluster(s)")

    m = audience_size(seedset.found, cfg.size, cfg.percentage, cfg.default_percentage)
    files, _ = score_table_files(storage, version)
    space = score_space(storage, version, seed_vecs.shape[1])
    cand = similarity_candidates(
        storage.root, files, seed_vecs, seedset.found_dids, cfg.top_n, m,
        backend=cfg.backend, blocks={"user_block": cfg.user_block, "seed_block": cfg.seed_block}
        if cfg.backend != "tf" else {},
        batch_rows=cfg.batch_rows, num_actors=cfg.num_actors, sample=cfg.distribution_sample, seed=cfg.seed,
        space=space,
    )
    timer.lap("similarity")
    progress(0.85, "similarity done")
    candidate = cand.column("candidate").to_numpy(zero_copy_only=False)
    sampled = cand.column("sampled").to_numpy(zero_copy_only=False)
    scores = cand.column("score").to_numpy()
    dids = cand.column("did").to_numpy(zero_copy_only=False)
    audience = select_top(dids[candidate], scores[candidate], m, exclude=seedset.found_dids)
    timer.lap("selection")
    spread = similarity_spread(scores[sampled])
    report = {
        "strategy": "din",
        "score_table": version,
        "as_of": info.get("as_of"),
        "similarity_space": space.transform,
        "keywords": info.get("keywords"),
        "seeds": seedset.counts(),
        "unknown_examples": seedset.unknown_examples,
        "clusters": clusters.summary(),
        "warnings": clusters.warnings + seed_count_warnings(seedset.found, cfg.recommended_seeds)
        + spread_warnings(spread),
        "eligible_users": int(all_dids.size),
        "requested_size": m,
        "audience_size": audience.num_rows,
        "top_n": cfg.top_n,
        "similarity_spread": spread,
        # the sample is uniform per batch, candidates are the top; report both views
        "score_distribution": {
            "population_sample": score_distribution(scores[sampled]),
            "audience": score_distribution(audience.column("score").to_numpy()),
        },
    }
    return audience, report


def extend_audience(
    storage: Storage,
    seeds: list[str],
    cfg: ExtendConfig,
    out_dir: str,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Extend ``seeds`` (user ids) to a lookalike audience; write files under ``out_dir``; report.

    Raises SeedError (unusable seeds) and ModelNotReady (no score table / feature table).
    """
    progress = progress or _noop
    timer = _Timer()
    out_dir = out_dir.strip("/")
    progress(0.0, f"extending {len(seeds)} seeds with strategy {cfg.strategy}")
    if cfg.strategy == "jsd":
        from app.extend.jsd import extend_jsd

        audience, report = extend_jsd(storage, seeds, cfg, out_dir, progress, timer.lap)
    else:
        audience, report = _extend_din(storage, seeds, cfg, progress, timer)
    report["warnings"] = report.get("warnings", []) + size_warnings(
        report["requested_size"], audience.num_rows, report.get("eligible_users", 0), report["seeds"]["found"])
    write_audience(storage, out_dir, audience)
    timer.lap("write")
    report["out_dir"] = out_dir
    report["files"] = [f"{out_dir}/audience.parquet", f"{out_dir}/audience.csv", f"{out_dir}/report.json"]
    report["timings_s"] = timer.summary()
    report["config"] = cfg.model_dump(mode="json", exclude={"validation", "scores"})
    storage.write_json(f"{out_dir}/report.json", report)
    progress(1.0, f"audience of {audience.num_rows} users written")
    return report
