"""Item activity similarity (spec 003, "Item Activity Similarity"): cosine similarity between
items over the users who acted on them, exact or estimated with DIMSUM.

DIMSUM (Zadeh and Goel, "Dimension Independent Similarity Computation", JMLR 2013; Spark's
``RowMatrix.columnSimilarities(threshold)``, which the spec's job calls) estimates every column
pair's cosine from a sample: a user row's entry of item ``i`` is kept with probability
``p_i = min(1, sqrt(gamma) / ||c_i||)`` and scaled by ``1 / min(sqrt(gamma), ||c_i||)``, with
``gamma = 10 log(n_items) / threshold`` as in Spark. Each kept pair ``(i, j)`` (``i < j``,
second entry drawn again) adds the product of the two scaled values; the sum is an unbiased
estimate of ``cos(i, j)``, and pairs above ``threshold`` come out with small relative error while
popular items (large ``||c_i||``) emit far fewer products. ``threshold`` 0 makes every ``p_i``
1: the exact cosine, by the same code. (Spark draws the second entry once per pair; here once per
entry and row, which keeps the estimate unbiased and lets a block of rows be two sparse products.)

Work split: users are cut into blocks, one Ray task per block sums its rows' products
(``X^T Y`` restricted to ``i < j``) and returns them; the driver adds the blocks, mirrors the
upper triangle and keeps each item's ``limit`` most similar items. ``method: auto`` is exact up to
``exact_max_items`` items and DIMSUM above; a DIMSUM run on at most ``measure_error_max_items``
items also computes the exact matrix on the same data and reports the error (pairs at or above
the threshold, and how much of each item's exact top-``limit`` list DIMSUM finds).

Filters, from the spec: ``sample`` (fraction of actions used), ``item_type``,
``min_items_per_user``, ``min_users_per_item`` and ``max_users_per_item``, which the spec
describes as a bot filter on users ("the maximum number of items a user has interacted with for
that user to be included") and is applied as such. Actions count once per user and item.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from app.offline import common as O
from app.offline.config import SimilarItemsConfig
from app.storage import Storage


def binary_matrix(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """(user ids, item ids, users x items CSR with 1 per distinct user-item pair)."""
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(user_ids), len(item_ids)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return user_ids, item_ids, m


def filter_matrix(m: sp.csr_matrix, min_items_per_user: int, min_users_per_item: int,
                  max_items_per_user: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept user rows, kept item columns): items with enough users, then users with an item count
    in ``[min_items_per_user, max_items_per_user]`` over the kept items."""
    users_per_item = np.diff(m.tocsc().indptr)
    cols = np.flatnonzero(users_per_item >= max(min_users_per_item, 1))
    per_user = np.diff(m[:, cols].indptr)
    rows = np.flatnonzero((per_user >= max(min_items_per_user, 1)) & (per_user <= max_items_per_user))
    return rows, cols


def dimsum_gamma(threshold: float, n_items: int) -> float:
    """Spark's oversampling: ``10 log(n) / threshold``; infinite (exact) for threshold 0."""
    return math.inf if threshold < 1e-6 else 10 * math.log(max(n_items, 2)) / threshold


def block_products(block: sp.csr_matrix, col_norms: np.ndarray, gamma: float, seed: int) -> tuple[np.ndarray, ...]:
    """(rows, cols, values) of ``Σ_r x_ri y_rj`` over this block's user rows, for pairs ``i < j``.

    ``x``/``y``: the rows' entries scaled by ``1 / min(sqrt(gamma), ||c||)`` and each kept with
    probability ``min(1, sqrt(gamma) / ||c||)``, independently for the two roles (module doc).
    """
    rng = np.random.default_rng(seed)
    norms = np.where(col_norms == 0, 1.0, col_norms)
    sg = math.sqrt(gamma)
    q = np.minimum(sg, norms)
    p = sg / norms
    cols = block.indices
    scaled = block.data / q[cols]
    keep_i = rng.random(len(cols)) < p[cols] if math.isfinite(gamma) else np.ones(len(cols), bool)
    keep_j = rng.random(len(cols)) < p[cols] if math.isfinite(gamma) else keep_i
    # copies of the index arrays: eliminate_zeros compacts them in place, and they are the block's
    x = sp.csr_matrix((scaled * keep_i, cols.copy(), block.indptr.copy()), shape=block.shape)
    y = sp.csr_matrix((scaled * keep_j, cols.copy(), block.indptr.copy()), shape=block.shape)
    x.eliminate_zeros()
    y.eliminate_zeros()
    prod = sp.triu(x.T.tocsr() @ y, k=1).tocoo()
    return prod.row.astype(np.int32), prod.col.astype(np.int32), prod.data.astype(np.float32)


def cosine(m: sp.csr_matrix, gamma: float, seed: int, users_per_task: int, remote: bool) -> sp.csr_matrix:
    """Symmetric items x items similarity (zero diagonal): exact for ``gamma`` inf, else DIMSUM."""
    m = m.tocsr().astype(np.float32)
    col_norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=0)).ravel())
    blocks = [m[s: s + users_per_task] for s in range(0, m.shape[0], users_per_task)]
    seeds = [seed * 1_000_003 + k for k in range(len(blocks))]
    if remote and len(blocks) > 0:
        import ray

        from app.offline.tasks import run_tasks

        norms_ref = ray.put(col_norms)
        parts = run_tasks(_pair_task, list(zip(blocks, seeds, strict=True)), norms_ref, gamma,
                          desc="dimsum" if math.isfinite(gamma) else "exact cosine")
    else:
        parts = [block_products(b, col_norms, gamma, s) for b, s in zip(blocks, seeds, strict=True)]
    n = m.shape[1]
    if parts:
        rows = np.concatenate([p[0] for p in parts])
        cols = np.concatenate([p[1] for p in parts])
        vals = np.concatenate([p[2] for p in parts])
    else:
        rows = cols = np.empty(0, np.int32)
        vals = np.empty(0, np.float32)
    upper = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    upper.sum_duplicates()
    return (upper + upper.T).tocsr()


def _pair_task(pair: tuple[sp.csr_matrix, int], col_norms: np.ndarray, gamma: float) -> tuple[np.ndarray, ...]:
    block, seed = pair
    return block_products(block, col_norms, gamma, seed)


def top_k_rows(s: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's ``k`` largest entries (ties: lower column first), the rest dropped."""
    s = s.tocsr()
    s.sum_duplicates()
    row = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
    order = np.lexsort((s.indices, -s.data, row))
    rank = np.arange(len(order)) - np.repeat(s.indptr[:-1], np.diff(s.indptr))
    keep = order[rank < k]
    return sp.csr_matrix((s.data[keep], (row[keep], s.indices[keep])), shape=s.shape)


def similarity_error(estimate: sp.csr_matrix, exact: sp.csr_matrix, threshold: float, limit: int) -> dict[str, Any]:
    """How far DIMSUM is from exact on the same data.

    ``pairs_at_threshold``: exact pairs with cosine >= threshold (DIMSUM's guarantee is for them);
    their mean and max absolute error, and mean relative error; ``pairs_found``: the share of them
    the estimate has at all; ``top_recall``: the share of each item's exact top-``limit`` list
    that is in its estimated top-``limit`` list (averaged over items with a list); ``emitted``:
    estimated nonzero pairs / exact nonzero pairs (the work DIMSUM saves shows here).
    """
    ex = sp.triu(exact, k=1).tocsr()
    est = sp.triu(estimate, k=1).tocsr()
    big = ex.multiply(ex >= max(threshold, 1e-12)).tocsr()
    big.eliminate_zeros()
    r, c = big.nonzero()
    true = np.asarray(big[r, c]).ravel()
    got = np.asarray(est[r, c]).ravel()
    abs_err = np.abs(got - true)
    top_ex, top_est = top_k_rows(exact, limit), top_k_rows(estimate, limit)
    has = np.diff(top_ex.indptr) > 0
    overlap = np.asarray(top_ex.astype(bool).multiply(top_est.astype(bool)).sum(axis=1)).ravel()
    recall = overlap[has] / np.diff(top_ex.indptr)[has]
    return {
        "threshold": threshold, "pairs_at_threshold": int(len(true)),
        "mean_abs_error": float(abs_err.mean()) if len(true) else None,
        "max_abs_error": float(abs_err.max()) if len(true) else None,
        "mean_rel_error": float((abs_err / true).mean()) if len(true) else None,
        "pairs_found": float((got != 0).mean()) if len(true) else None,
        "top_recall": float(recall.mean()) if has.any() else None,
        "emitted": float(est.nnz / ex.nnz) if ex.nnz else None,
    }


def similarity_table(s: sp.csr_matrix, item_ids: np.ndarray) -> pa.Table:
    """``itemid, similar_itemid, similarity`` rows of a (top-k) similarity matrix, best first."""
    s = s.tocsr()
    row = np.repeat(np.arange(s.shape[0]), np.diff(s.indptr))
    order = np.lexsort((s.indices, -s.data, row))
    return pa.table({O.ITEM: pa.array(item_ids[row[order]]), "similar_itemid": pa.array(item_ids[s.indices[order]]),
                     "similarity": pa.array(s.data[order].astype(np.float32))})


def prepare(cfg: SimilarItemsConfig, actions: pa.Table) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, dict[str, int]]:
    """(user ids, item ids, filtered users x items binary matrix, counts) from the actions."""
    if cfg.item_type >= 0:
        actions = actions.filter(pc.equal(actions[O.TYPE], cfg.item_type))
    if cfg.sample < 1.0:
        rng = np.random.default_rng(cfg.seed)
        actions = actions.filter(pa.array(rng.random(actions.num_rows) < cfg.sample))
    user_ids, item_ids, m = binary_matrix(actions[O.USER].to_numpy(), actions[O.ITEM].to_numpy())
    rows, cols = filter_matrix(m, cfg.min_items_per_user, cfg.min_users_per_item, cfg.max_users_per_item)
    m = m[rows][:, cols]
    return user_ids[rows], item_ids[cols], m, {"actions": actions.num_rows, "users": len(rows), "items": len(cols)}


def run_similar_items(cfg: SimilarItemsConfig, storage: Storage) -> dict[str, Any]:
    """Item-item similarities of the client's actions; the top ``limit`` per item, written and registered."""
    from app.offline.tasks import ensure_ray

    ensure_ray()
    actions, days = O.read_actions(storage, cfg.input_path, cfg.client, cfg.start_day, cfg.days,
                                   columns=[O.USER, O.ITEM, O.TYPE])
    _users, item_ids, m, counts = prepare(cfg, actions)
    n_items = m.shape[1]
    method = cfg.method if cfg.method != "auto" else ("exact" if n_items <= cfg.exact_max_items else "dimsum")
    gamma = math.inf if method == "exact" else dimsum_gamma(cfg.dimsum_threshold, n_items)
    writer = O.ModelWriter(storage, cfg, "similar-items")
    started = time.perf_counter()
    sims = cosine(m, gamma, cfg.seed, cfg.users_per_task, remote=True)
    seconds = {method: round(time.perf_counter() - started, 3)}
    error = None
    if method == "dimsum" and math.isfinite(gamma) and n_items <= cfg.measure_error_max_items:
        started = time.perf_counter()
        exact = cosine(m, math.inf, cfg.seed, cfg.users_per_task, remote=True)
        seconds["exact"] = round(time.perf_counter() - started, 3)
        error = similarity_error(sims, exact, cfg.dimsum_threshold, cfg.limit)
    writer.write("similarities", similarity_table(top_k_rows(sims, cfg.limit), item_ids))
    return writer.commit({"days": [d.isoformat() for d in days], **counts, "method": method,
                          "gamma": None if math.isinf(gamma) else gamma, "pairs": int(sims.nnz // 2),
                          "compute_seconds": seconds, "error_vs_exact": error})
