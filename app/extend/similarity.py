"""Similarity generator (spec 000 step 3) over the score table with Ray Data.

Each user partition (a Ray Data block of the score table) is scored against all seeds by the
blocked kernel in :mod:`app.extend.kernel`. The seed matrix is put in the object store once
(``ray.put``) and fetched once per actor. Each batch returns only what the selector can use: its
candidate top-M non-seed rows, plus a small random sample of scores for the report's
distribution (flagged ``sampled``; a row can be both).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from app.extend.kernel import top_n_mean
from app.extend.selection import block_candidates
from app.extend.space import ScoreSpace

SCORES = "scores"


def vectors(table: pa.Table, column: str = SCORES) -> np.ndarray:
    """(rows, K) float32 matrix from a fixed-size-list (or list) column, without Python loops."""
    col = table.column(column).combine_chunks()
    if col.type.num_fields == 0:  # pragma: no cover - not a list
        raise TypeError(f"column {column!r} is not a list column")
    if isinstance(col.type, pa.FixedSizeListType):
        width = col.type.list_size
    else:
        width = int(col.value_lengths()[0].as_py()) if len(col) else 0
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(col), width) if len(col) else np.zeros((0, width), np.float32)


def pick_backend(backend: str) -> str:
    """``auto``: TensorFlow when a GPU is visible to this process, NumPy BLAS otherwise."""
    if backend != "auto":
        return backend
    try:
        import ray

        if ray.is_initialized() and ray.get_gpu_ids():
            return "tf"
    except Exception:  # noqa: BLE001 - no Ray context: plain NumPy
        pass
    return "numpy"


def score_batch(
    batch: pa.Table,
    seeds: np.ndarray,
    seed_dids: np.ndarray,
    top_n: int,
    m: int,
    backend: str = "numpy",
    blocks: dict[str, int] | None = None,
    sample: int = 0,
    rng: np.random.Generator | None = None,
    space: ScoreSpace | None = None,
) -> pa.Table:
    """Top-N mean similarity of a batch of non-seed users; keep only selector candidates + a sample.

    ``batch`` holds raw ``scores``; ``space`` turns them into unit vectors (default: plain L2).
    """
    dids = batch.column("did").to_numpy(zero_copy_only=False).astype(str)
    keep = ~np.isin(dids, seed_dids)
    raw = vectors(batch)[keep]
    users = (space or ScoreSpace.raw(raw.shape[1])).apply(raw)
    dids = dids[keep]
    scores = top_n_mean(users, seeds, top_n, backend=backend, **(blocks or {}))
    candidate = np.zeros(scores.size, dtype=bool)
    candidate[block_candidates(scores, m)] = True
    sampled = np.zeros(scores.size, dtype=bool)
    if sample and scores.size:
        rng = rng or np.random.default_rng(0)
        sampled[rng.choice(scores.size, min(sample, scores.size), replace=False)] = True
    rows = np.flatnonzero(candidate | sampled)
    return pa.table(
        {
            "did": pa.array(dids[rows], type=pa.string()),
            "score": pa.array(scores[rows], type=pa.float32()),
            "candidate": pa.array(candidate[rows]),
            # a uniform sample of the batch, candidates included: the population's distribution
            "sampled": pa.array(sampled[rows]),
        }
    )


def iter_file_batches(paths: list[str], filesystem: Any, columns: list[str], rows: int):
    """Read score-table / train-ready files inside a worker, ``rows`` at a time."""
    import pyarrow.parquet as pq

    for path in paths:
        pf = pq.ParquetFile(filesystem.open_input_file(path))
        for rb in pf.iter_batches(batch_size=rows, columns=columns):
            yield pa.Table.from_batches([rb])


def paths_dataset(files: list[str]):
    """A Ray Dataset of file paths. The actors read the files themselves: a read stage would need
    CPU slots of its own, and with an actor pool holding every CPU of a small node it never runs."""
    import ray

    return ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))


def actor_pool_size(requested: int) -> int:
    import ray

    return max(1, min(requested, int(ray.cluster_resources().get("CPU", 1))))


class SimilarityActor:
    """Ray Data actor: fetches the seed matrix once from the object store, scores its files."""

    def __init__(self, root: str, seeds_ref: Any, seed_dids_ref: Any, params: dict[str, Any]):
        import ray

        from app.storage import Storage

        self.fs = Storage(root).fs
        self.seeds = ray.get(seeds_ref)
        self.seed_dids = ray.get(seed_dids_ref)
        self.params = dict(params)
        self.rows = self.params.pop("batch_rows")
        self.params["backend"] = pick_backend(self.params.get("backend", "auto"))
        self.rng = np.random.default_rng(self.params.pop("seed", 0))
        space = self.params.pop("space", None)
        self.space = ScoreSpace.from_json(space) if space else None

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        parts = [
            score_batch(t, self.seeds, self.seed_dids, rng=self.rng, space=self.space, **self.params)
            for t in iter_file_batches(list(batch["path"]), self.fs, ["did", SCORES], self.rows)
        ]
        return pa.concat_tables(parts) if parts else _empty()


def _empty() -> pa.Table:
    return pa.table({"did": pa.array([], pa.string()), "score": pa.array([], pa.float32()),
                     "candidate": pa.array([], pa.bool_()), "sampled": pa.array([], pa.bool_())})


def similarity_candidates(
    root: str,
    files: list[str],
    seeds: np.ndarray,
    seed_dids: np.ndarray,
    top_n: int,
    m: int,
    *,
    backend: str = "auto",
    blocks: dict[str, int] | None = None,
    batch_rows: int = 65536,
    num_actors: int = 2,
    sample: int = 0,
    seed: int = 0,
    space: ScoreSpace | None = None,
) -> pa.Table:
    """Run the similarity generator over the score-table files; returns candidates + samples.

    ``seeds`` are unit vectors already in ``space``; the users' raw scores are moved into it here.
    """
    import ray
    from ray.data import ActorPoolStrategy

    seeds_ref = ray.put(np.ascontiguousarray(seeds, dtype=np.float32))
    seed_dids_ref = ray.put(np.asarray(seed_dids).astype(str))
    params = {"top_n": top_n, "m": m, "backend": backend, "blocks": blocks or {}, "sample": sample,
              "seed": seed, "batch_rows": batch_rows, "space": space.to_json() if space else None}
    num_actors = actor_pool_size(num_actors)
    out = paths_dataset(files).map_batches(
        SimilarityActor,
        fn_constructor_kwargs={"root": root, "seeds_ref": seeds_ref, "seed_dids_ref": seed_dids_ref,
                               "params": params},
        batch_format="numpy",
        batch_size=1,
        compute=ActorPoolStrategy(size=num_actors),
        num_gpus=1 if backend == "tf" and ray.cluster_resources().get("GPU", 0) >= num_actors else None,
    )
    refs = out.to_arrow_refs()
    tables = [t for t in ray.get(refs) if t.num_rows]
    return pa.concat_tables(tables) if tables else _empty()
