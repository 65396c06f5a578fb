"""The clustering strategy, measured (spec 002, "Determine the clustering strategy").

Fit rows are sampled from the deduped table; an optional PCA is fitted on them (variance kept is
reported); then one Ray task per K fits k-means (scikit-learn, its threads limited to the task's
CPUs) and scores it: inertia, sampled silhouette, spec 002's advertiser metrics
(:mod:`app.banners.metrics`), fit seconds and memory (``peak_mib``: the peak of the fit's traced
Python/numpy allocations; ``rss_mib``: the worker process's resident size after it), and, when the planted truth is
there (generated or digits data), the adjusted Rand index against it. The K is chosen by the stated
rule of :class:`~app.banners.config.SweepConfig` (default: best silhouette; the smallest K within
``tolerance`` of the best). Ray tasks, not Ray Tune: a K grid is a handful of independent
fits with nothing to schedule adaptively, and plain tasks share one object-store copy of the data.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.banners import schema as S
from app.banners.config import BannersConfig, SweepConfig
from app.banners.metrics import METRICS, advertiser_counts, advertiser_metrics
from app.banners.model import ClusterModel
from app.console import get_console
from app.errors import SchemaError
from app.storage import Storage

#: report columns, in order
TABLE_COLUMNS = ("k", "silhouette", *METRICS, "ari_truth", "inertia", "n_iter", "fit_seconds", "peak_mib", "rss_mib")


def embedding_matrix(col: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """(n, dim) float32 of a fixed-size (or exact-length) list column."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], pa.list_(pa.float32(), dim))
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


def load_fit_rows(storage: Storage, cfg: BannersConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, advertisers, banner ids) of up to ``sweep.fit_rows`` deduped banners, sampled
    uniformly with the sweep's seed. Files are read one at a time and only the sampled rows kept,
    so the driver holds one bucket file plus the sample, never the whole table."""
    import pyarrow.parquet as pq

    files = storage.list_files(S.T_BANNERS, suffix=".parquet")
    if not files:
        raise SchemaError(f"no deduped banners under {S.T_BANNERS!r}: run `python -m app banners dedupe` first")
    sizes = np.array([pq.ParquetFile(f, filesystem=storage.fs).metadata.num_rows for f in files])
    total = int(sizes.sum())
    rng = np.random.default_rng(cfg.sweep.seed)
    picked = np.sort(rng.choice(total, cfg.sweep.fit_rows, replace=False)) if total > cfg.sweep.fit_rows else None
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for i, f in enumerate(files):
        t = pq.read_table(f, filesystem=storage.fs, columns=[S.BANNER_ID, S.ADVERTISER, S.EMBEDDING])
        if picked is not None:
            local = picked[(picked >= starts[i]) & (picked < starts[i + 1])] - starts[i]
            t = t.take(pa.array(local))
        parts.append(t)
    table = pa.concat_tables(parts)
    x = embedding_matrix(table[S.EMBEDDING], cfg.dim)
    advertisers = pc.fill_null(table[S.ADVERTISER], "").to_numpy(zero_copy_only=False)
    return x, advertisers, table[S.BANNER_ID].to_numpy(zero_copy_only=False)


def fit_pca(x: np.ndarray, components: int | None, seed: int) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(mean, components, variance kept); (None, None, 1.0) without PCA."""
    if components is None:
        return None, None, 1.0
    from sklearn.decomposition import PCA

    if components > min(x.shape):
        raise ValueError(f"pca_components={components} exceeds min(rows, dim) = {min(x.shape)}")
    pca = PCA(n_components=components, svd_solver="randomized" if components < x.shape[1] // 2 else "auto",
              random_state=seed).fit(x)
    return (pca.mean_.astype(np.float32), pca.components_.astype(np.float32),
            float(pca.explained_variance_ratio_.sum()))


def fit_one_k(x: np.ndarray, advertisers: np.ndarray, k: int, params: dict[str, Any]) -> dict[str, Any]:
    """Fit and score one K (the body of a Ray task; plain function for tests)."""
    import psutil
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    sweep = SweepConfig.model_validate(params)
    threads = max(1, int(sweep.cpus_per_task))
    with threadpool_limits(limits=threads):
        tracemalloc.start()
        started = time.perf_counter()
        if sweep.algorithm == "kmeans":
            km = KMeans(k, n_init=sweep.n_init, max_iter=sweep.max_iter, random_state=sweep.seed)
        else:
            km = MiniBatchKMeans(k, n_init=sweep.n_init, max_iter=sweep.max_iter, random_state=sweep.seed,
                                 batch_size=4096)
        labels = km.fit_predict(x).astype(np.int32)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss = psutil.Process().memory_info().rss
        rng = np.random.default_rng(sweep.seed)
        sample = rng.choice(len(x), min(sweep.silhouette_sample, len(x)), replace=False)
        sil = (float(silhouette_score(x[sample], labels[sample]))
               if len(np.unique(labels[sample])) > 1 else float("nan"))
    _, counts = advertiser_counts(advertisers, labels, k)
    return {"k": k, "silhouette": sil, **advertiser_metrics(counts, km.cluster_centers_),
            "inertia": float(km.inertia_), "n_iter": int(km.n_iter_), "fit_seconds": round(seconds, 3),
            "peak_mib": round(peak / 2**20, 1), "rss_mib": round(rss / 2**20, 1), "centres": km.cluster_centers_.astype(np.float32),
            "labels": labels}


def fit_grid(x: np.ndarray, advertisers: np.ndarray, sweep: SweepConfig) -> list[dict[str, Any]]:
    """One Ray task per K of the grid, the data shared through the object store; in K order."""
    import ray

    task = ray.remote(num_cpus=sweep.cpus_per_task)(fit_one_k)
    x_ref, adv_ref = ray.put(x), ray.put(advertisers)
    params = sweep.model_dump(mode="json")
    pending = {task.remote(x_ref, adv_ref, k, params): k for k in sweep.k_grid}
    rows = []
    with get_console().progress("k-means", total=len(pending), unit="K") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            rows.append(ray.get(done[0]))
            pending.pop(done[0])
            bar.update(1)
    return sorted(rows, key=lambda r: r["k"])


def select_k(rows: list[dict[str, Any]], select_by: str, tolerance: float) -> tuple[int, str]:
    """The chosen K and the rule in words. Best value of ``select_by`` (lowest for heuristic3, a
    distance; highest otherwise); among the K within ``tolerance`` of it, the smallest."""
    lower = select_by == "heuristic3"
    scored = [r for r in rows if np.isfinite(r[select_by])]
    if not scored:
        raise ValueError(f"no K has a finite {select_by}")
    best = (min if lower else max)(r[select_by] for r in scored)
    near = [r["k"] for r in scored if abs(r[select_by] - best) <= tolerance]
    rule = (f"{'lowest' if lower else 'highest'} {select_by}; the smallest K within {tolerance} of the best "
            f"({best:.4f})")
    return min(near), rule


def truth_ari(storage: Storage, truth: str | None, ids: np.ndarray, rows: list[dict[str, Any]]) -> None:
    """Add ``ari_truth`` (adjusted Rand index vs the planted clusters) to each row, when known."""
    if truth and storage.exists(truth):
        from sklearn.metrics import adjusted_rand_score

        t = storage.read_table(truth, columns=[S.BANNER_ID, S.TRUE_CLUSTER])
        pos = pc.index_in(pa.array(ids), t[S.BANNER_ID]).to_numpy(zero_copy_only=False)
        known = ~np.isnan(pos.astype(float))
        planted = t[S.TRUE_CLUSTER].to_numpy()[pos[known].astype(np.int64)]
        for r in rows:
            r["ari_truth"] = float(adjusted_rand_score(planted, r["labels"][known]))
    else:
        for r in rows:
            r["ari_truth"] = None


def metric_table(rows: list[dict[str, Any]], chosen: int | None = None) -> str:
    """The per-K table as Markdown (the chosen K marked)."""
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in rows:
        mark = " *" if r["k"] == chosen else ""
        lines.append("| " + " | ".join(cell(r.get(c)) + (mark if c == "k" else "") for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def run_sweep(cfg: BannersConfig, storage: Storage) -> tuple[dict[str, Any], ClusterModel]:
    """Sample, PCA, fit the grid, choose K; write the report; return it with the chosen model."""
    console = get_console()
    started = time.perf_counter()
    x, advertisers, ids = load_fit_rows(storage, cfg)
    if len(x) < max(cfg.sweep.k_grid):
        raise SchemaError(f"{len(x)} deduped banners cannot make {max(cfg.sweep.k_grid)} clusters; "
                          f"lower sweep.k_grid {cfg.sweep.k_grid}")
    mean, components, kept = fit_pca(x, cfg.sweep.pca_components, cfg.sweep.seed)
    z = x if components is None else (x - mean) @ components.T
    console.step("banners", f"fitting K in {cfg.sweep.k_grid} on {len(z):,} x {z.shape[1]} "
                            f"(PCA variance kept {kept:.3f})")
    rows = fit_grid(np.ascontiguousarray(z, dtype=np.float32), advertisers, cfg.sweep)
    truth_ari(storage, cfg.truth, ids, rows)
    chosen, rule = select_k(rows, cfg.sweep.select_by, cfg.sweep.tolerance)
    best = next(r for r in rows if r["k"] == chosen)
    table = [{c: r.get(c) for c in TABLE_COLUMNS} for r in rows]
    report = {
        "stage": "banners_sweep", "rows_fit": int(len(z)), "dim": cfg.dim, "fit_dim": int(z.shape[1]),
        "pca": {"components": cfg.sweep.pca_components, "variance_kept": round(kept, 4)},
        "algorithm": cfg.sweep.algorithm, "k_grid": cfg.sweep.k_grid, "table": table,
        "rule": rule, "chosen": {c: best.get(c) for c in TABLE_COLUMNS},
        "seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_json(f"{S.REPORTS}/banners_sweep.json", report)
    storage.write_text(f"{S.REPORTS}/banners_sweep.md", metric_table(rows, chosen) + f"\n\nchosen K = {chosen}: {rule}\n")
    return report, ClusterModel(best["centres"], cfg.dim, mean, components)
