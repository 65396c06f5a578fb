"""Implicit ALS and the ranking metrics: golden values, boundaries, brute-force oracles."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from app.config import load_config
from app.errors import ConfigError
from app.offline import als
from app.offline.config import MatrixFactorizationConfig
from app.offline.evaluate import popularity_top, ranking_metrics, split_per_user


def test_ndcg_and_recall_golden():
    truth = sp.csr_matrix(np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]))
    top = np.array([[2, 1, 3], [0, 1, 2], [0, 1, 2]])
    m = ranking_metrics(top, truth, k=3)
    # user 0: one hit at rank 1 of 2 relevant; user 1: no hit; user 2 has no test items (skipped)
    idcg0 = 1 + 1 / np.log2(3)
    assert m["users"] == 2
    assert m["recall@3"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["ndcg@3"] == pytest.approx((1 / idcg0 + 0) / 2)


def test_metric_boundaries():
    truth = sp.csr_matrix(np.eye(4))
    perfect = ranking_metrics(np.stack([np.arange(4), (np.arange(4) + 1) % 4], axis=1), truth, k=2)
    assert perfect["recall@2"] == perfect["ndcg@2"] == 1.0
    none = ranking_metrics(np.stack([(np.arange(4) + 1) % 4, (np.arange(4) + 2) % 4], axis=1), truth, k=2)
    assert none["recall@2"] == none["ndcg@2"] == 0.0


def test_split_is_per_user_8_1_1():
    users = np.repeat(np.arange(3), [10, 20, 1])
    part = split_per_user(users, seed=1)
    for u, n in [(0, 10), (1, 20)]:
        counts = np.bincount(part[users == u], minlength=3)
        assert counts.tolist() == [int(n * 0.8), int(n * 0.9) - int(n * 0.8), n - int(n * 0.9)]
    assert part[users == 2].tolist() == [2]  # floor(0.8) = floor(0.9) = 0: the one row is test
    assert not np.array_equal(part, split_per_user(users, seed=2))


def test_top_n_matches_sort_and_recommend_excludes_seen():
    rng = np.random.default_rng(0)
    scores = rng.random((7, 30)).astype(np.float32)
    idx, val = als.top_n(scores, 5)
    assert np.array_equal(idx, np.argsort(-scores, axis=1)[:, :5])
    uf, itf = rng.random((7, 4)), rng.random((30, 4))
    seen = sp.csr_matrix((np.ones(7), (np.arange(7), np.zeros(7, int))), shape=(7, 30))
    best = np.argsort(-(uf @ itf.T), axis=1)
    got, _ = als.recommend(uf, itf, seen, 3, block_floats=60)  # two users per block
    for r in range(7):
        assert got[r].tolist() == [i for i in best[r] if i != 0][:3]


def test_popularity_excludes_training_items():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]))
    top = popularity_top(train, 2)
    assert top[0].tolist() == [2, 3] and top[1].tolist() == [1, 2]


def test_als_recovers_planted_blocks():
    """Two user groups, each acting on its own half of the items: the top recommendation of every
    user is an unseen item of its own half."""
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 40
    group = np.arange(n_users) % 2
    rows, cols = [], []
    for u in range(n_users):
        items = rng.choice(20, 8, replace=False) + 20 * group[u]
        rows += [u] * 8
        cols += items.tolist()
    users, items, m = als.interaction_matrix(np.array(rows), np.array(cols), np.ones(len(rows)))
    assert m.shape == (n_users, n_items) and m.nnz == len(rows)
    uf, itf = als.fit_als(m, rank=4, reg=0.1, alpha=5.0, iterations=10, threads=1, seed=0)
    top, _ = als.recommend(uf, itf, m, 1)
    assert np.mean(top[:, 0] // 20 == group) > 0.95


def test_confidence_is_one_plus_alpha_r():
    m = sp.csr_matrix(np.array([[0, 2.0], [1.0, 0]]))
    assert als.confidence(m, 3.0).toarray().tolist() == [[0, 7.0], [4.0, 0]]


def test_config_accepts_the_spec_lambda_name():
    cfg = MatrixFactorizationConfig.model_validate({"lambda": 0.5, "rank": 3})
    assert cfg.lambda_ == 0.5
    with pytest.raises(ConfigError, match="rnak"):
        load_config(MatrixFactorizationConfig, None, ["rnak=3"])
