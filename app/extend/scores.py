"""Score-table generator (spec 000 "Post Process"): every user x every keyword, from the DIN model.

Ray Data reads the train-ready table; ``map_batches`` with an actor pool whose actors load the
current model once each (a GPU per actor when the cluster has them) turns every batch of users
into their latest history (the same window as training) and scores all keywords at once with
``BatchScorer.score_all_keywords``. Output, partitioned by did_bucket::

    <root>/scores/<version>/did_bucket=B/*.parquet   did, did_index, scores
    <root>/scores/<version>/keywords.json            keyword of each vector position
    <root>/scores/<version>/space.json               the similarity space (app.extend.space)

``scores`` is a fixed-size float32 list of K click probabilities in keyword order (index 1
first). The similarity space (per-keyword population mean and std of their logits) is fitted in
one streaming pass after the write. The version is registered as the current score table.

**As of a date.** With ``as_of`` (validation, ``extend scores --as-of``, ``extend run --as-of``)
every interval from that date on is dropped first, and users left with no history are not in the
table (``active_only``): a user first seen after the date is future information. Such a table is
registered without becoming current, and is reused by later runs for the same model and date.
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from app import constants as C
from app.errors import ConfigError, ModelNotReady, SchemaError
from app.extend.config import ExtendConfig, ScoresConfig
from app.extend.space import SPACE_FILE, ScoreSpace
from app.registry import Registry, new_version
from app.storage import Storage

USER_KEYS = ("age", "gender", "hist_kwi", "hist_show_counts", "hist_click_counts")
SCORES = "scores"
HISTORY_LISTS = (C.INTERVAL_STARTING_TIME, C.KWI, C.KWI_SHOW_COUNTS, C.KWI_CLICK_COUNTS)
DEFAULT_LOADER = "app.train.export:load_current_scorer"


# ------------------------------------------------------------------ reading a score table
def resolve_score_table(storage: Storage, version: str | None = None) -> tuple[str, dict[str, Any]]:
    """(version, info) of the given or current score table; ModelNotReady when there is none."""
    reg = Registry(storage)
    if version is None:
        return reg.current_score_table()
    versions = reg.read().get("score_tables", {}).get("versions", {})
    if version not in versions:
        raise ModelNotReady(f"score table {version!r} is not registered")
    return version, versions[version]


def score_table_files(storage: Storage, version: str) -> tuple[list[str], Any]:
    files = storage.list_files(f"scores/{version}", suffix=".parquet")
    if not files:
        raise ModelNotReady(f"score table {version!r} has no Parquet files")
    return files, storage.fs


def score_space(storage: Storage, version: str, k: int) -> ScoreSpace:
    """The table's similarity space; plain L2 of the raw scores for tables made before spaces."""
    rel = f"scores/{version}/{SPACE_FILE}"
    if not storage.exists(rel):
        return ScoreSpace.raw(k)
    return ScoreSpace.from_json(storage.read_json(rel))


def read_score_vectors(storage: Storage, version: str, dids: np.ndarray) -> np.ndarray:
    """Unit vectors of ``dids`` (in that order) in the table's similarity space."""
    from app.extend.similarity import vectors

    files, fs = score_table_files(storage, version)
    ds = pads.dataset(files, filesystem=fs, format="parquet")
    wanted = pa.array(np.asarray(dids).astype(str), type=pa.string())
    table = ds.to_table(columns=["did", SCORES], filter=pads.field("did").isin(wanted))
    got = table.column("did").to_numpy(zero_copy_only=False).astype(str)
    order = {d: i for i, d in enumerate(got)}
    missing = [d for d in wanted.to_pylist() if d not in order]
    if missing:
        raise SchemaError(f"score table {version!r} lacks seeds {missing[:5]}")
    idx = np.fromiter((order[d] for d in wanted.to_pylist()), dtype=np.int64, count=len(wanted))
    raw = vectors(table, SCORES)[idx]
    return score_space(storage, version, raw.shape[1]).apply(raw)


def fit_space(storage: Storage, version_dir: str) -> ScoreSpace:
    """Fit the similarity space over every row of a written table, one file at a time."""
    from app.extend.similarity import iter_file_batches, vectors

    files = storage.list_files(version_dir, suffix=".parquet")
    return ScoreSpace.fit(vectors(t, SCORES) for t in iter_file_batches(files, storage.fs, [SCORES], 65536))


# ------------------------------------------------------------------ history helpers
def truncate_history(table: pa.Table, before_seconds: int) -> pa.Table:
    """Drop every interval starting at or after ``before_seconds`` from the train-ready lists."""
    ist = table.column(C.INTERVAL_STARTING_TIME).combine_chunks()
    flat = ist.flatten().to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(ist).to_numpy(zero_copy_only=False)
    keep = flat < before_seconds
    counts = np.bincount(parents[keep], minlength=len(table))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    mask = pa.array(keep)
    for name in HISTORY_LISTS:
        arr = table.column(name).combine_chunks()
        values = arr.flatten().filter(mask)
        new = pa.ListArray.from_arrays(offsets, values)
        table = table.set_column(table.schema.get_field_index(name), name, new)
    return table


def load_callable(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def history_window(storage: Storage, run: str) -> dict[str, Any]:
    rel = f"samples/{run}/stats.json"
    if not storage.exists(rel):
        raise ModelNotReady(f"{rel} not found: build samples first")
    return storage.read_json(rel)


def fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def score_rows(users: dict[str, np.ndarray], scores: np.ndarray, buckets: np.ndarray) -> pa.Table:
    scores = np.asarray(scores, dtype=np.float32)
    return pa.table(
        {
            "did": pa.array(np.asarray(users["did"]).astype(str), type=pa.string()),
            "did_index": pa.array(np.asarray(users["did_index"], dtype=np.int64)),
            SCORES: fixed_list(scores),
            C.DID_BUCKET: pa.array(np.asarray(buckets, dtype=np.int64)),
        }
    )


def _bucket_of(path: str) -> int:
    for seg in path.split("/"):
        if seg.startswith(f"{C.DID_BUCKET}="):
            return int(seg.split("=", 1)[1])
    return 0


class ScoreActor:
    """Ray Data actor: loads the model once, scores batches of train-ready users on all keywords."""

    def __init__(self, root: str, loader: str, model_name: str, version: str, length: int,
                 hist_len: int, interval_seconds: int, before_seconds: int | None, history_fn: str,
                 batch_rows: int, active_only: bool = True, threads: int = 0):
        if threads:  # TensorFlow's pools default to every core of the node, whatever Ray reserved
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already started in this worker: keep its pools
                pass
        got, self.scorer = load_callable(loader)(Storage(root), name=model_name)
        if got != version:
            raise ModelNotReady(f"current {model_name!r} model changed during scoring ({version} -> {got})")
        self.length, self.hist_len, self.before = length, hist_len, before_seconds
        self.interval_seconds = interval_seconds
        self.fs = Storage(root).fs
        self.rows = batch_rows
        self.history = load_callable(history_fn)
        self.active_only = active_only

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from app.extend.similarity import iter_file_batches

        parts = []
        for path in batch["path"]:
            bucket = _bucket_of(str(path))
            for t in iter_file_batches([str(path)], self.fs, None, self.rows):
                if C.DID_BUCKET not in t.column_names:
                    t = t.append_column(C.DID_BUCKET, pa.array(np.full(t.num_rows, bucket, np.int64)))
                parts.append(self.score_table(t))
        return pa.concat_tables(parts)

    def score_table(self, batch: pa.Table) -> pa.Table:
        if self.before is not None:
            batch = truncate_history(batch, self.before)
            if self.active_only:  # nobody seen before the date: not part of the population then
                batch = batch.filter(pc.greater(pc.list_value_length(batch.column(C.INTERVAL_STARTING_TIME)), 0))
        users = self.history(batch, self.length, self.hist_len, self.interval_seconds)
        scores = self.scorer.score_all_keywords({k: users[k] for k in USER_KEYS})
        if C.DID_BUCKET in batch.column_names:
            buckets = batch.column(C.DID_BUCKET).to_numpy(zero_copy_only=False)
        else:
            buckets = np.zeros(len(users["did"]), dtype=np.int64)
        return score_rows(users, scores, buckets)


def generate_score_table(
    storage: Storage,
    cfg: ScoresConfig,
    as_of: dt.date | None = None,
    make_current: bool | None = None,
    loader: str | None = None,
    history_fn: str = "app.data.samples:latest_history",
    active_only: bool = True,
) -> dict[str, Any]:
    """Score every train-ready user against every keyword; write and register a score table.

    ``as_of``: history before that date only; with ``active_only`` users with none are left out.
    """
    import ray
    from ray.data import ActorPoolStrategy

    from app.console import get_console
    from app.extend.similarity import paths_dataset

    t0 = time.perf_counter()
    loader = loader or cfg.loader
    model_version, scorer = load_callable(loader)(storage, name=cfg.model_name)
    keywords = list(scorer.keywords)
    stats = history_window(storage, cfg.samples_run)
    length, hist_len = int(stats["length"]), int(getattr(scorer, "hist_len", stats["hist_len"]))
    del scorer
    before = as_of_seconds(as_of)
    files = storage.list_files(C.T_TRAINREADY, suffix=".parquet")
    if not files:
        raise SchemaError(f"{C.T_TRAINREADY} is empty: run the data pipeline")
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 1)
    use_gpu = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and gpus >= 1)
    cpus_per_actor = min(cfg.cpus_per_actor, cpus)
    actors = cfg.num_actors or (max(1, int(gpus)) if use_gpu else max(1, int(cpus // cpus_per_actor)))
    version = new_version()
    out = paths_dataset(files).map_batches(
        ScoreActor,
        fn_constructor_kwargs={
            "root": storage.root, "loader": loader, "model_name": cfg.model_name, "version": model_version,
            "length": length, "hist_len": hist_len, "before_seconds": before,
            "interval_seconds": int(stats.get("interval_time_in_seconds", 86400)), "history_fn": history_fn,
            "batch_rows": cfg.batch_rows, "active_only": active_only,
            "threads": 0 if use_gpu else max(1, round(cpus_per_actor)),
        },
        batch_format="numpy",
        batch_size=1,
        compute=ActorPoolStrategy(size=actors),
        num_gpus=1 if use_gpu else None,
        num_cpus=None if use_gpu else cpus_per_actor,
    )
    staging = storage.new_staging(f"scores-{version}")
    with get_console().progress("score table"):
        out.write_parquet(storage.uri(staging), partition_cols=[C.DID_BUCKET])
    if not storage.list_files(staging, suffix=".parquet"):
        storage.delete(staging)
        when = f" before {as_of.isoformat()}" if as_of else ""
        raise SchemaError(f"no train-ready user has any history{when}: nothing to score")
    space = fit_space(storage, staging)
    storage.write_json(f"{staging}/keywords.json", keywords)
    storage.write_json(f"{staging}/{SPACE_FILE}", space.to_json())
    storage.commit_replace(staging, f"scores/{version}")
    seconds = time.perf_counter() - t0
    info = {
        "path": f"scores/{version}",
        "model": cfg.model_name,
        "model_version": model_version,
        "keywords": keywords,
        "num_users": space.users,
        "as_of": as_of.isoformat() if as_of else None,
        "active_only": bool(active_only),
        "window": {"length": length, "hist_len": hist_len},
        "seconds": round(seconds, 2),
        "users_per_s": round(space.users / seconds, 1) if seconds else None,
    }
    current = (as_of is None) if make_current is None else make_current
    Registry(storage).add_score_table(version, info, make_current=current)
    return {"version": version, "current": current, **info}


def as_of_seconds(day: dt.date | None) -> int | None:
    """Start of ``day`` (UTC) in epoch seconds: history strictly before it is "as of" the day."""
    if day is None:
        return None
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp())


def as_of_score_table(storage: Storage, cfg: ScoresConfig, as_of: dt.date, active_only: bool = True) -> str:
    """A registered score table made as of ``as_of`` by the current model, else a new one."""
    reg = Registry(storage).read()
    model_current = reg.get("models", {}).get(cfg.model_name, {}).get("current")
    for version, info in sorted(reg.get("score_tables", {}).get("versions", {}).items(), reverse=True):
        if (info.get("as_of") == as_of.isoformat() and info.get("model_version") == model_current
                and bool(info.get("active_only", False)) == active_only and storage.exists(f"scores/{version}")):
            return version
    return generate_score_table(storage, cfg, as_of=as_of, make_current=False, active_only=active_only)["version"]


def score_table_for(storage: Storage, cfg: ExtendConfig) -> tuple[str, dict[str, Any]]:
    """The score table an extension job reads: the one named in ``cfg.score_table`` (which must
    have been made as of ``cfg.as_of``), else one as of ``cfg.as_of``, else the current one."""
    active_only = cfg.eligible == "active_before"
    if cfg.score_table is not None:
        version, info = resolve_score_table(storage, cfg.score_table)
        want = cfg.as_of.isoformat() if cfg.as_of else None
        if want and info.get("as_of") != want:
            raise ConfigError(f"score table {version!r} was made as of {info.get('as_of') or 'its creation'}, "
                              f"not as of {want}: leave score_table unset to get one as of {want}")
        return version, info
    if cfg.as_of is not None:
        return resolve_score_table(storage, as_of_score_table(storage, cfg.scores, cfg.as_of, active_only))
    return resolve_score_table(storage)
