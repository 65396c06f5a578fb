"""Top-K ranking metrics and the per-user random split, as RecBole computes them, so the offline
models' numbers on MovieLens-100K can sit next to RecBole's published rows.

Protocol (RecBole's ``RS: [0.8, 0.1, 0.1]``, ``group_by: user``, ``order: RO``, full ranking):
each user's interactions are shuffled and cut 8:1:1 into train / valid / test; a model sees train
only; every item is ranked for every user with test items, the user's *training* items excluded
(RecBole masks the training history only); metrics are averaged over those users.

- ``Recall@K = |top-K ∩ test| / |test|``
- ``NDCG@K = DCG / IDCG`` with ``DCG = Σ_{hits at rank r} 1/log2(r+1)`` and
  ``IDCG = Σ_{r=1}^{min(|test|, K)} 1/log2(r+1)`` (binary relevance).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def split_per_user(users: np.ndarray, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> np.ndarray:
    """Part (0 train, 1 valid, 2 test) of each interaction: every user's rows shuffled and cut by
    ``ratios``; the counts are RecBole's (``floor`` of the cumulative ratios, rest to the last)."""
    rng = np.random.default_rng(seed)
    users = np.asarray(users)
    order = np.lexsort((rng.random(len(users)), users))
    u_sorted = users[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    pos = np.arange(len(users)) - np.repeat(starts, sizes)
    n = np.repeat(sizes, sizes)
    cut1 = np.floor(n * ratios[0]).astype(np.int64)
    cut2 = np.floor(n * (ratios[0] + ratios[1])).astype(np.int64)
    part = np.where(pos < cut1, 0, np.where(pos < cut2, 1, 2))
    out = np.empty(len(users), dtype=np.int8)
    out[order] = part
    return out


def ranking_metrics(top_items: np.ndarray, truth: sp.csr_matrix, k: int = 10) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over the rows of ``truth`` (users x items, nonzero = relevant)
    that have at least one relevant item. ``top_items``: [users, >=k] item indices, best first."""
    truth = truth.tocsr()
    has = np.diff(truth.indptr) > 0
    top = np.asarray(top_items)[:, :k]
    hits = np.zeros(top.shape, dtype=bool)
    for r in np.flatnonzero(has):  # rows are short: a set test per row is fast enough for 100k users
        rel = truth.indices[truth.indptr[r]: truth.indptr[r + 1]]
        hits[r] = np.isin(top[r], rel)
    n_rel = np.diff(truth.indptr)[has]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[has] * discount[: top.shape[1]]).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    recall = hits[has].sum(axis=1) / n_rel
    return {f"recall@{k}": float(recall.mean()), f"ndcg@{k}": float((dcg / idcg).mean()),
            "users": int(has.sum())}


def popularity_top(train: sp.csr_matrix, k: int) -> np.ndarray:
    """Each user's top-k of the most popular training items, their own training items excluded."""
    pop = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.float64)
    scores = np.tile(pop, (train.shape[0], 1))
    r = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    scores[r, train.indices] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order
