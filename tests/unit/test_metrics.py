"""Click metrics: golden values and boundaries."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from app.train.metrics import auc, click_metrics, gauc, grouped_auc, log_loss


@pytest.mark.parametrize(
    "labels, scores, want",
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),  # perfect ranking
        ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 0.0),  # every pair wrong
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),  # all ties
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1, 1], [0.2, 0.2, 0.9], 0.75),  # one tied pair counts one half
    ],
)
def test_auc_golden(labels, scores, want):
    assert auc(labels, scores) == pytest.approx(want)


def test_auc_one_class_is_nan():
    assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_auc_matches_sklearn_on_random_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 7, 500) / 6
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_gauc_weights_users_by_impressions_and_skips_one_class_users():
    users = ["a", "a", "b", "b", "b", "b", "c", "c"]
    labels = [0, 1, 0, 1, 0, 1, 1, 1]  # c has clicks only: no AUC, not counted
    scores = [0.1, 0.9, 0.2, 0.1, 0.1, 0.2, 0.3, 0.4]
    # a: AUC 1 on 2 impressions; b: pairs (0.2 vs .1 wrong, .2 vs .2 tie, .1 vs .1 tie, .1 vs .2 right) = 0.5 on 4
    assert gauc(users, labels, scores) == pytest.approx((2 * 1.0 + 4 * 0.5) / 6)
    ids, a, w = grouped_auc(users, labels, scores)
    assert list(ids) == ["a", "b", "c"] and list(w) == [2, 4, 2] and np.isnan(a[2])


def test_gauc_perfect_and_none():
    assert gauc([1, 1, 2, 2], [0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert np.isnan(gauc([1, 2], [0, 1], [0.3, 0.4]))


def test_log_loss_golden_and_clipping():
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
    assert np.isfinite(log_loss([1], [0.0]))


def test_click_metrics_keys_and_non_probability_scores():
    m = click_metrics([1, 1], [0, 1], [0.2, 3.0], probabilities=False)
    assert m == {"auc": 1.0, "gauc": 1.0, "logloss": None}


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="lengths"):
        grouped_auc([1, 2], [0, 1, 1], [0.1, 0.2, 0.3])
