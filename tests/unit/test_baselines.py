"""The baselines DIN must beat; the regression as a Keras model scores exactly like scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from app.train.baselines import (
    baseline_features,
    fit_logistic_regression,
    history_stats,
    logistic_regression_model,
    popularity_scores,
)
from app.train.metrics import auc, paired_auc_difference

K, H = 6, 5


def _arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    kwi = rng.integers(0, K, size=(n, H))  # 0 = padding
    shows = rng.integers(0, 6, size=(n, H)) * (kwi > 0)
    clicks = np.minimum(rng.integers(0, 3, size=(n, H)), shows)
    target = rng.integers(1, K, size=n)
    ratio = (clicks.sum(1) + 0.1) / (shows.sum(1) + 1.0)
    label = (rng.random(n) < 0.2 + 0.6 * ratio).astype(np.int64)
    return {"age": rng.integers(0, 7, n), "gender": rng.integers(0, 2, n), "hist_kwi": kwi,
            "hist_show_counts": shows, "hist_click_counts": clicks, "target_kwi": target, "label": label}


def test_history_stats_hand_values():
    a = {"hist_kwi": np.array([[2, 3, 0]]), "hist_show_counts": np.array([[4, 1, 9]]),
         "hist_click_counts": np.array([[1, 0, 9]]), "target_kwi": np.array([2])}
    got = history_stats(a)[0]
    np.testing.assert_allclose(got, [np.log1p(5), np.log1p(1), np.log1p(2), np.log1p(4), np.log1p(1), 1.0, 1.1 / 6])


def test_popularity_is_smoothed_keyword_ctr():
    got = popularity_scores(np.array([0.0, 10, 0]), np.array([0.0, 5, 0]), np.array([1, 2]), prior=10)
    np.testing.assert_allclose(got, [(5 + 10 * 0.5) / 20, 0.5])


def test_regression_keras_model_matches_sklearn():
    train, test = _arrays(3000, 1), _arrays(500, 2)
    clf = fit_logistic_regression(train, K)
    expected = clf.predict_proba(baseline_features(test, K))[:, 1]
    model = logistic_regression_model(clf, K, H)
    feats = {k: v for k, v in test.items() if k != "label"}
    got = model.predict(feats, verbose=0).ravel()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert fit_logistic_regression({"label": np.ones(5), **{k: v[:5] for k, v in train.items() if k != "label"}},
                                   K) is None


def test_paired_difference_of_a_model_with_itself_is_zero_and_a_better_one_positive():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(300), 10)
    labels = rng.random(users.size) < 0.5
    good = labels + rng.normal(0, 1.0, users.size)
    bad = labels + rng.normal(0, 3.0, users.size)
    same = paired_auc_difference(users, labels, good, good, reps=50)
    assert same["diff"] == 0.0 and same["ci95"] == [0.0, 0.0]
    d = paired_auc_difference(users, labels, good, bad, reps=100)
    assert d["diff"] == pytest.approx(auc(labels, good) - auc(labels, bad))
    assert 0 < d["ci95"][0] < d["diff"] < d["ci95"][1]
    sub = paired_auc_difference(users, labels, good, bad, reps=50, max_rows=1000)
    assert sub["users"] < 300 and sub["diff"] == pytest.approx(d["diff"])
