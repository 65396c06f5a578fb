"""User selector (spec 000 step 4): the top M non-seed users by similarity score."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.errors import SeedError


def audience_size(n_found_seeds: int, size: int | None, percentage: float | None, default_percentage: float) -> int:
    """M: ``size`` if given, else ``percentage`` % of the found seeds (500 -> 5x), rounded up."""
    if size is not None:
        return int(size)
    pct = default_percentage if percentage is None else percentage
    m = math.ceil(n_found_seeds * pct / 100.0 - 1e-9)
    if m < 1:
        raise SeedError(f"extension of {pct}% of {n_found_seeds} seeds is an empty audience")
    return m


def block_candidates(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of a block's rows that can be in a global top M: the top M plus ties with the M-th.

    Keeping every tie of the M-th value makes the final selection independent of block order.
    """
    if scores.size <= m:
        return np.arange(scores.size)
    kth = np.partition(scores, scores.size - m)[scores.size - m]
    return np.flatnonzero(scores >= kth)


def select_top(dids: np.ndarray, scores: np.ndarray, m: int, exclude: np.ndarray | None = None) -> pa.Table:
    """Top ``m`` rows by score (ties broken by did, ascending), seeds in ``exclude`` removed.

    Returns a table with did, score, rank (1 = most similar).
    """
    dids = np.asarray(dids).astype(str)
    scores = np.asarray(scores, dtype=np.float32)
    if exclude is not None and len(exclude):
        keep = ~pc.is_in(pa.array(dids), value_set=pa.array(np.asarray(exclude).astype(str))).to_numpy(
            zero_copy_only=False)
        dids, scores = dids[keep], scores[keep]
    # sort only the rows that can make the top m (its M-th score and every tie): same result as
    # sorting every row by (score, did), without a string sort of the whole population
    cand = block_candidates(scores, m)
    dids, scores = dids[cand], scores[cand]
    order = np.lexsort((dids, -scores.astype(np.float64)))[:m]
    return pa.table(
        {
            "did": pa.array(dids[order], type=pa.string()),
            "score": pa.array(scores[order], type=pa.float32()),
            "rank": pa.array(np.arange(1, order.size + 1, dtype=np.int64)),
        }
    )
