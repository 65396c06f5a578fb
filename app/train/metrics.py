"""Click-model metrics in NumPy: AUC, GAUC (per-user AUC weighted by impressions), log loss.

AUC is computed from midranks (Mann-Whitney U), so ties count one half, exactly like
``sklearn.metrics.roc_auc_score``; the grouped version does every user at once with sorts instead
of a Python loop (100k users in well under a second).
"""

from __future__ import annotations

import numpy as np


def _midranks(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by (group, value) and the 1-based midrank of each element *within its group*."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    n = len(v)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    pos = np.arange(n) - group_start + 1  # ordinal rank within the group
    # ties: runs of equal (group, value) share the mean of their ordinal ranks
    new_run = new_group.copy()
    new_run[1:] |= v[1:] != v[:-1]
    run_id = np.cumsum(new_run) - 1
    run_sum = np.bincount(run_id, weights=pos)
    run_len = np.bincount(run_id)
    ranks = (run_sum / run_len)[run_id]
    return order, ranks


def grouped_auc(groups, labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC. Returns ``(group ids, auc (nan if one class only), impressions)``."""
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not (len(groups) == len(labels) == len(scores)):
        raise ValueError(f"lengths differ: groups {len(groups)}, labels {len(labels)}, scores {len(scores)}")
    ids, gidx = np.unique(groups, return_inverse=True)
    order, ranks = _midranks(scores, gidx)
    g, pos_label = gidx[order], labels[order]
    k = len(ids)
    n_pos = np.bincount(g, weights=pos_label, minlength=k)
    n_all = np.bincount(g, minlength=k).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(g, weights=ranks * pos_label, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return ids, auc, n_all


def auc(labels, scores) -> float:
    """ROC AUC; nan when only one class is present."""
    labels = np.asarray(labels).ravel()
    _, a, _ = grouped_auc(np.zeros(len(labels), dtype=np.int8), labels, scores)
    return float(a[0]) if len(a) else float("nan")


def gauc(users, labels, scores) -> float:
    """Group AUC: per-user AUC weighted by the user's impressions, over users with both classes."""
    _, a, w = grouped_auc(users, labels, scores)
    ok = ~np.isnan(a)
    if not ok.any():
        return float("nan")
    return float(np.sum(a[ok] * w[ok]) / np.sum(w[ok]))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps])."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def click_metrics(users, labels, probs, probabilities: bool = True) -> dict[str, float | None]:
    """``{"auc", "gauc", "logloss"}``; logloss is None for scores that are not probabilities."""
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(users, labels, probs),
        "logloss": log_loss(labels, probs) if probabilities else None,
    }


def paired_auc_difference(users, labels, a, b, reps: int = 200, seed: int = 0,
                          max_rows: int = 200_000) -> dict[str, float | list[float] | int]:
    """AUC(a) - AUC(b) on the same samples, with a 95% CI from a bootstrap over users.

    Samples of one user are correlated, so users (not rows) are resampled; both scores see the
    same resample, which makes the interval of the *difference* much tighter than two separate
    ones. Above ``max_rows`` a random subset of users is used for the interval (not the point).
    """
    users = np.asarray(users)
    labels = np.asarray(labels).astype(bool)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    point = auc(labels, a) - auc(labels, b)
    ids, inv = np.unique(users, return_inverse=True)
    rng = np.random.default_rng(seed)
    if len(users) > max_rows:
        keep_users = rng.random(len(ids)) < max_rows / len(users)
        rows = keep_users[inv]
        _, inv = np.unique(inv[rows], return_inverse=True)
        labels, a, b = labels[rows], a[rows], b[rows]
        ids = np.arange(inv.max() + 1 if inv.size else 0)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(len(ids)))
    sizes = np.bincount(inv, minlength=len(ids))
    diffs = []
    for _ in range(reps):
        pick = rng.integers(0, len(ids), len(ids))
        n = sizes[pick]
        idx = order[np.repeat(starts[pick], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))]
        diffs.append(auc(labels[idx], a[idx]) - auc(labels[idx], b[idx]))
    d = np.asarray(diffs)
    d = d[~np.isnan(d)]
    lo, hi = (np.quantile(d, [0.025, 0.975]) if d.size else (np.nan, np.nan))
    return {"diff": float(point), "ci95": [float(lo), float(hi)], "users": int(len(ids)), "reps": int(reps)}
