"""Item similarity: exact cosine against a dense oracle, DIMSUM against exact on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from app.offline import similarity as S


def planted(n_users=3000, n_items=60, groups=3, per_user=6, seed=0) -> sp.csr_matrix:
    """Users act within one item group (item % groups) with a few random items on top."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        g = u % groups
        own = g + groups * rng.choice(n_items // groups, per_user, replace=False)
        cols += own.tolist() + rng.integers(0, n_items, 2).tolist()
        rows += [u] * (per_user + 2)
    _u, _i, m = S.binary_matrix(np.array(rows), np.array(cols))
    return m


def dense_cosine(m: sp.csr_matrix) -> np.ndarray:
    a = m.toarray().astype(np.float64)
    n = np.linalg.norm(a, axis=0)
    n[n == 0] = 1
    c = (a.T @ a) / np.outer(n, n)
    np.fill_diagonal(c, 0)
    return c


def test_exact_matches_dense_oracle():
    m = planted(n_users=300, n_items=30)
    got = S.cosine(m, math.inf, seed=0, users_per_task=70, remote=False).toarray()
    np.testing.assert_allclose(got, dense_cosine(m), atol=1e-5)


def test_threshold_zero_is_exact():
    assert S.dimsum_gamma(0.0, 100) == math.inf
    assert S.dimsum_gamma(0.1, 100) == pytest.approx(10 * math.log(100) / 0.1)


def test_dimsum_error_against_exact():
    """DIMSUM's promise: pairs at or above the threshold keep a small relative error, while far
    fewer products are emitted than exact would."""
    m = planted()
    exact = S.cosine(m, math.inf, 0, 1000, remote=False)
    gamma = S.dimsum_gamma(0.1, m.shape[1]) / 4  # less oversampling than Spark's, so sampling bites here
    est = S.cosine(m, gamma, 0, 1000, remote=False)
    err = S.similarity_error(est, exact, threshold=0.1, limit=10)
    assert err["pairs_at_threshold"] > 100
    assert err["mean_rel_error"] < 0.2 and err["pairs_found"] == 1.0
    top = S.top_k_rows(est, 10).tocoo()  # the planted truth: neighbours share the item's group
    assert np.mean(top.row % 3 == top.col % 3) > 0.95
    # unbiased: the mean of many estimates approaches exact
    mean = sum(S.cosine(m, gamma, s, 1000, remote=False) for s in range(10)) / 10
    big = exact.toarray() >= 0.1
    assert np.abs(mean.toarray()[big] - exact.toarray()[big]).mean() < err["mean_abs_error"]


def test_top_k_rows_and_table():
    s = sp.csr_matrix(np.array([[0, 0.5, 0.9, 0.5], [0.5, 0, 0.1, 0], [0.9, 0.1, 0, 0], [0.5, 0, 0, 0]]))
    top = S.top_k_rows(s, 2).toarray()
    assert top[0].tolist() == [0, 0.5, 0.9, 0] and top[1].tolist() == [0.5, 0, 0.1, 0]
    t = S.similarity_table(S.top_k_rows(s, 2), np.array([10, 11, 12, 13])).to_pydict()
    assert t["itemid"][:2] == [10, 10] and t["similar_itemid"][:2] == [12, 11]


def test_filters_items_then_users():
    m = sp.csr_matrix(np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=np.float32))
    rows, cols = S.filter_matrix(m, min_items_per_user=2, min_users_per_item=2, max_items_per_user=2)
    assert cols.tolist() == [0, 1, 3]  # item 2 has one user
    rows, cols = S.filter_matrix(m, min_items_per_user=2, min_users_per_item=2, max_items_per_user=3)
    assert rows.tolist() == [0, 2]  # user 1 and 3 have one kept item; user 2 has 3 (allowed)
    rows, _ = S.filter_matrix(m, 2, 2, 2)
    assert rows.tolist() == []  # user 0 and 2 have three kept items: bots at max 2
