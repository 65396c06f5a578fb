"""Word2vec on sessions, item2vec (spec 003, "Word2Vec"; Barkan and Koenigstein, "Item2Vec: Neural
Item Embedding for Collaborative Filtering", 2016): a user session is a sentence whose words are
the items acted on, and skip-gram vectors of the items place items used in the same sessions
close together.

Two jobs, as in the spec:

- ``session-items``: each user's actions in time order, cut where two actions are more than
  ``max_intra_session_gap_secs`` apart (-1: never), repeats of the same item in a row collapsed
  (a reload is not a new word); users outside ``[min_actions_per_user, max_actions_per_user]``
  and sessions with fewer than ``min_session_items`` items are left out (cut in one Ray task).
  Table ``sessions``:
  ``userid, session_start, items``.
- ``word2vec``: gensim's Word2Vec on the current ``session-items`` version of the client, fitted
  in one Ray task with that task's CPUs as threads (``min_word_count``, ``vector_size``, window,
  epochs, negative sampling). Tables ``item_vectors`` (itemid, vector) and ``nearest`` (itemid,
  similar_itemid, similarity: cosine, the ``top_n`` nearest items of each item, best first).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from app.offline import common as O
from app.offline.config import SessionItemsConfig, Word2VecConfig
from app.storage import Storage


def sessions(users: np.ndarray, items: np.ndarray, times: np.ndarray, max_gap: int,
             min_session_items: int = 1) -> pa.Table:
    """``userid, session_start, items`` of parallel action arrays (``times`` in seconds)."""
    order = np.lexsort((items, times, users))
    u, it, t = users[order], items[order], times[order]
    n = len(u)
    new_user = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
    new = new_user.copy()
    if max_gap >= 0 and n:
        new[1:] |= (t[1:] - t[:-1]) > max_gap
    repeat = np.r_[False, (it[1:] == it[:-1]) & ~new[1:]] if n else np.zeros(0, bool)
    keep = ~repeat
    sid = np.cumsum(new)[keep] - 1
    u, it, t, new = u[keep], it[keep], t[keep], new[keep]
    counts = np.bincount(sid, minlength=int(sid[-1]) + 1 if len(sid) else 0)
    starts = np.flatnonzero(new)
    ok = counts >= min_session_items
    offsets = np.r_[0, np.cumsum(counts[ok])].astype(np.int32)
    member = ok[sid]
    return pa.table({
        O.USER: pa.array(u[starts][ok]),
        "session_start": pa.array(t[starts][ok], pa.int64()),
        "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(it[member])),
    })


def run_session_items(cfg: SessionItemsConfig, storage: Storage) -> dict[str, Any]:
    """Cut the client's actions into sessions; write and register them."""
    actions, days = O.read_actions(storage, cfg.input_path, cfg.client, cfg.start_day, cfg.days,
                                   columns=[O.USER, O.ITEM, O.TIMESTAMP])
    actions = O.user_activity_filter(actions, cfg.min_actions_per_user, cfg.max_actions_per_user)
    from app.offline.tasks import run_one

    writer = O.ModelWriter(storage, cfg, "session-items")
    secs = actions[O.TIMESTAMP].cast(pa.int64()).to_numpy()
    table = run_one(sessions, actions[O.USER].to_numpy(), actions[O.ITEM].to_numpy(), secs,
                    cfg.max_intra_session_gap_secs, cfg.min_session_items)
    writer.write("sessions", table)
    lengths = np.diff(table["items"].combine_chunks().offsets.to_numpy()) if table.num_rows else np.zeros(1)
    return writer.commit({"days": [d.isoformat() for d in days], "actions": actions.num_rows,
                          "sessions": table.num_rows, "mean_session_items": round(float(lengths.mean()), 3)})


def fit_word2vec(sentences: list[list[str]], cfg: Word2VecConfig, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(item ids as int64, vectors [n, vector_size]) of a gensim Word2Vec fit on ``sentences``."""
    from gensim.models import Word2Vec

    model = Word2Vec(sentences=sentences, vector_size=cfg.vector_size, window=cfg.window,
                     min_count=cfg.min_word_count, sg=int(cfg.sg), negative=cfg.negative, epochs=cfg.epochs,
                     seed=cfg.seed, workers=max(1, threads))
    words = model.wv.index_to_key
    return np.array([int(w) for w in words], dtype=np.int64), np.asarray(model.wv.vectors, dtype=np.float32)


def _fit_remote(sentences: list[list[str]], cfg: Word2VecConfig) -> tuple[np.ndarray, np.ndarray, float]:
    from app.offline.tasks import task_cpus

    started = time.perf_counter()
    ids, vectors = fit_word2vec(sentences, cfg, task_cpus(cfg.workers))
    return ids, vectors, time.perf_counter() - started


def nearest_items(ids: np.ndarray, vectors: np.ndarray, n: int) -> pa.Table:
    """``itemid, similar_itemid, similarity``: each item's ``n`` nearest by cosine, itself excluded."""
    import scipy.sparse as sp

    from app.offline.als import recommend

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    self_seen = sp.identity(len(ids), format="csr", dtype=np.float32)
    idx, val = recommend(unit, unit, self_seen, n)
    keep = np.isfinite(val)
    rows = np.repeat(np.arange(len(ids)), keep.sum(axis=1))
    return pa.table({O.ITEM: pa.array(ids[rows]), "similar_itemid": pa.array(ids[idx[keep]]),
                     "similarity": pa.array(val[keep].astype(np.float32))})


def run_word2vec(cfg: Word2VecConfig, storage: Storage) -> dict[str, Any]:
    """Item vectors from the client's current sessions, fitted in a Ray task; nearest items."""
    from app.offline.als import train_cpus
    from app.offline.tasks import ensure_ray, run_one

    ensure_ray()
    path = O.upstream_path(storage, cfg, "session-items")
    table = O.read_model_table(storage, "session-items", cfg.client, "sessions", path=path)
    sentences = [[str(i) for i in s] for s in table["items"].to_pylist()]
    writer = O.ModelWriter(storage, cfg, "word2vec")
    cpus = train_cpus(cfg.workers)
    ids, vectors, fit_s = run_one(_fit_remote, sentences, cfg, num_cpus=cpus)
    flat = pa.array(vectors.ravel())
    writer.write("item_vectors", pa.table({O.ITEM: pa.array(ids),
                                           "vector": pa.FixedSizeListArray.from_arrays(flat, cfg.vector_size)}))
    writer.write("nearest", nearest_items(ids, vectors, cfg.top_n))
    return writer.commit({"sessions": table.num_rows, "source": path, "items": len(ids),
                          "fit_seconds": round(fit_s, 3), "fit_cpus": cpus})
