"""Batch prediction: the current clustering's cluster id for every banner of a table (Ray Data).

Reads any table with ``banner_id`` and ``embedding`` (default: the deduped ``tables/banners``),
assigns each row its nearest centre in ``map_batches`` tasks and writes
``tables/banner_clusters/<model version>/source=<input>/`` (banner_id, advertiser, cluster_id,
distance, reason), replacing a previous prediction of the same version and input atomically: the
deduped banners are ``source=banners``, a table of new banners (``--table``) gets its own partition
beside them, and readers of the version (the user features) see both. A row whose vector cannot be used
keeps ``cluster_id = -1`` and its reason (``missing_banner_id``, ``wrong_dimension``,
``non_finite_value``); the
report counts them per reason, so nothing is dropped silently.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.banners import schema as S
from app.banners.config import BannersConfig
from app.banners.dedupe import check_vectors
from app.banners.model import ClusterModel, load_current
from app.errors import SchemaError
from app.storage import Storage


def assign_batch(batch: pa.Table, model: bytes, dim: int) -> pa.Table:
    """Ray Data batch function: cluster id, distance and reason of each row."""
    m = ClusterModel.from_bytes(model)
    mat, reason = check_vectors(batch[S.EMBEDDING], dim)
    ids = batch[S.BANNER_ID].cast(pa.string())
    no_id = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True).to_numpy(zero_copy_only=False)
    reason = np.where(no_id, S.MISSING_ID, reason)  # a cluster nobody can join back is no use
    ok = reason == ""
    labels = np.full(batch.num_rows, -1, dtype=np.int32)
    dist = np.full(batch.num_rows, np.nan, dtype=np.float32)
    if ok.any():
        labels[ok], dist[ok] = m.assign(mat[ok])
    advertiser = batch[S.ADVERTISER] if S.ADVERTISER in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    return pa.table({
        S.BANNER_ID: ids, S.ADVERTISER: advertiser.cast(pa.string()),
        S.CLUSTER_ID: labels, S.DISTANCE: pa.array(dist, mask=~ok),
        S.REASON: pa.array(np.where(ok, None, reason).tolist(), pa.string()),
    })


def source_name(table: str) -> str:
    """The partition value naming what was assigned: ``banners`` for the deduped table, else the
    path with every other character than letters, digits, ``.`` and ``-`` made ``_``."""
    if table.strip("/") == S.T_BANNERS:
        return "banners"
    return re.sub(r"[^A-Za-z0-9.-]", "_", table.strip("/"))


def predict(cfg: BannersConfig, storage: Storage, table: str = S.T_BANNERS) -> dict[str, Any]:
    """Assign every banner of ``table`` (root-relative) with the current model; return the counts."""
    import pyarrow.parquet as pq
    import ray

    started = time.perf_counter()
    version, model = load_current(storage)
    wanted = [S.BANNER_ID, S.ADVERTISER, S.EMBEDDING]
    files = [storage.path(table)] if storage.exists(table) and not storage.is_dir(table) else \
        storage.list_files(table, suffix=".parquet")
    if not files:
        raise SchemaError(f"no Parquet files at {table!r} under {storage.root!r}")
    schema = pq.read_schema(files[0], filesystem=storage.fs)
    if S.BANNER_ID not in schema.names or S.EMBEDDING not in schema.names:
        raise SchemaError(f"{table!r} needs columns {S.BANNER_ID!r} and {S.EMBEDDING!r}; it has {schema.names}")
    ds = ray.data.read_parquet(storage.uri(table), columns=[c for c in wanted if c in schema.names],
                               filesystem=storage.fs if not storage._scheme else None)
    out = ds.map_batches(assign_batch, batch_format="pyarrow", batch_size=cfg.predict_batch_rows,
                         fn_kwargs={"model": model.to_bytes(), "dim": cfg.dim})
    staging = storage.new_staging("banner_clusters")
    ctx = ray.data.DataContext.get_current()
    saved, ctx.op_resource_reservation_enabled = ctx.op_resource_reservation_enabled, False
    try:  # one read -> map -> write chain: reservation only idles a CPU here (app.data.io.map_tasks)
        out.write_parquet(storage.uri(staging), filesystem=storage.fs if not storage._scheme else None)
    finally:
        ctx.op_resource_reservation_enabled = saved
    dest = f"{S.T_PREDICTIONS}/{version}/source={source_name(table)}"
    storage.commit_replace(staging, dest)
    result = storage.read_table(dest, columns=[S.CLUSTER_ID, S.REASON])
    labels = result[S.CLUSTER_ID].to_numpy()
    reasons = pc.value_counts(pc.drop_null(result[S.REASON])).to_pylist()
    report = {
        "stage": "banners_predict", "model_version": version, "table": dest, "rows": int(len(labels)),
        "assigned": int((labels >= 0).sum()),
        "unassigned": {r["values"]: int(r["counts"]) for r in reasons},
        "cluster_sizes": np.bincount(labels[labels >= 0], minlength=model.k).tolist(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_json(f"{S.REPORTS}/banners_predict.json", report)
    return report
