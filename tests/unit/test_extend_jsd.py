"""JS divergence vs a hand computation, feature selection, the no-divergent-feature error."""

import math

import numpy as np
import pyarrow as pa
import pytest

from app.errors import SeedError
from app.extend.config import JsdConfig
from app.extend.jsd import (
    feature_histograms,
    js_divergence,
    select_features,
    user_features,
    weighted_distance,
)


def test_js_divergence_hand_computation():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    # m = [.25, .5, .25]; KL(p||m) = .5*log2(2) + .5*log2(1) = .5; same for q -> JSD = .5
    assert js_divergence(p, q) == pytest.approx(0.5)
    p2, q2 = np.array([0.9, 0.1]), np.array([0.4, 0.6])
    m = (p2 + q2) / 2
    hand = 0.5 * sum(a * math.log2(a / b) for a, b in zip(p2, m, strict=True)) + 0.5 * sum(
        a * math.log2(a / b) for a, b in zip(q2, m, strict=True)
    )
    assert js_divergence(p2 * 10, q2 * 3) == pytest.approx(hand)  # counts are normalized
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: the maximum
    assert js_divergence([3, 3], [1, 1]) == pytest.approx(0.0)


def test_histograms_categorical_and_binned():
    s, p = feature_histograms(np.array([1, 1, 2]), np.array([1, 2, 3, 3]), bins=10)
    assert s.tolist() == [2, 1, 0] and p.tolist() == [1, 1, 2]
    rng = np.random.default_rng(0)
    s, p = feature_histograms(rng.normal(size=500), rng.normal(size=1000), bins=5)
    assert s.size == p.size == 5 and p.sum() == 1000


def test_select_features_threshold_max_and_weights():
    rng = np.random.default_rng(1)
    pop = rng.integers(0, 4, size=(2000, 4)).astype(float)
    seeds = pop[:300].copy()
    seeds[:, 1] = 3  # strongly divergent
    seeds[:, 2] = rng.choice([2, 3], size=300)  # mildly divergent
    fw = select_features(seeds, pop, ["a", "b", "c", "d"], JsdConfig(threshold=0.05, max_features=20))
    assert [fw.names[j] for j in fw.selected] == ["b", "c"]
    assert fw.weights.sum() == pytest.approx(1.0)
    assert fw.weights[0] > fw.weights[1]
    fw1 = select_features(seeds, pop, ["a", "b", "c", "d"], JsdConfig(threshold=0.05, max_features=1))
    assert fw1.selected.tolist() == [1] and fw1.weights.tolist() == [1.0]


def test_no_divergent_feature_is_the_seed_error():
    rng = np.random.default_rng(2)
    pop = rng.integers(0, 4, size=(5000, 3)).astype(float)
    with pytest.raises(SeedError, match="No feature observes a significant divergence"):
        select_features(pop[:2000], pop, ["a", "b", "c"], JsdConfig(threshold=0.05))


def test_weighted_distance():
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    d = weighted_distance(x, np.array([1.0, 0.0]), np.array([0.75, 0.25]))
    np.testing.assert_allclose(d, [math.sqrt(0.75), math.sqrt(0.25 * 4)])


def test_user_features_from_trainready_lists():
    t = pa.table({
        "did": ["a", "b"], "age": [3, 5], "gender": [0, 1],
        "interval_starting_time": pa.array([[200, 100], [100]], pa.list_(pa.int64())),
        "kwi": pa.array([[[1, 2], [2]], [[3]]], pa.list_(pa.list_(pa.int32()))),
        "kwi_show_counts": pa.array([[[4, 1], [2]], [[7]]], pa.list_(pa.list_(pa.int32()))),
        "kwi_click_counts": pa.array([[[1, 0], [1]], [[2]]], pa.list_(pa.list_(pa.int32()))),
    })
    x = user_features(t, 3)
    np.testing.assert_array_equal(x, [[3, 0, 4, 3, 0, 1, 1, 0], [5, 1, 0, 0, 7, 0, 0, 2]])
    x_before = user_features(t, 3, before_seconds=150)  # drops a's newest interval
    np.testing.assert_array_equal(x_before[0], [3, 0, 0, 2, 0, 0, 1, 0])


def _row(sets, keyword="drama", factor=5):
    return {"keyword": keyword, "seeds": 100, "factor": factor, "sets": sets, "runs": {}}


def _m(lift, lo, hi):
    return {"lift": lift, "lift_ci95": [lo, hi]}


def test_verdicts_say_in_plain_words_who_wins():
    from app.extend.validate import verdicts

    rows = [
        _row({"random": {}, "din": _m(1.6, 1.2, 2.1), "popularity": _m(1.3, 0.9, 1.8), "jsd": _m(1.1, 0.8, 1.5)}),
        _row({"random": {}, "din": _m(0.6, 0.35, 0.9), "popularity": _m(1.8, 1.3, 2.4), "jsd": _m(2.0, 1.5, 2.6)},
             keyword="comedy"),
        _row({"random": {}, "din": _m(1.4, 0.9, 2.0), "popularity": _m(1.1, 0.8, 1.5)}, keyword="war"),
    ]
    v = verdicts(rows, "din")
    assert v[0].startswith("drama (100 seeds, 5x): din beats random") and "popularity (1.30)" in v[0]
    assert "din does NOT beat random" in v[1] and "nor popularity (1.80)" in v[1] and "use jsd: jsd lift 2.00" in v[1]
    assert v[2] == "war (100 seeds, 5x): din does NOT beat random (its CI reaches 1 or below) (din lift 1.40 [0.90, 2.00])"


def test_verdict_when_the_default_strategy_gave_no_audience():
    from app.extend.validate import verdicts

    row = _row({"random": {}, "popularity": _m(1.8, 1.3, 2.4)})
    row["runs"] = {"jsd": {"refused": ["Critical Error: no feature diverges"]}}
    (v,) = verdicts([row], "jsd")
    assert "jsd gave no audience (Critical Error: no feature diverges)" in v and "popularity lift 1.80" in v


def test_pooled_ratio_ci_pools_draws_and_covers_the_truth():
    from app.extend.validate import pooled_ratio_ci

    rng = np.random.default_rng(0)
    a = [rng.poisson(2.0, 400) for _ in range(3)]
    b = [rng.poisson(1.0, 600) for _ in range(3)]
    point, lo, hi = pooled_ratio_ci(a, b, 400, rng)
    assert point == pytest.approx(sum(x.mean() for x in a) / sum(x.mean() for x in b))
    assert lo < 2.0 < hi and hi - lo < 0.4
    one = pooled_ratio_ci(a[:1], b[:1], 400, rng)
    assert (one[2] - one[1]) > (hi - lo)  # one draw: a wider interval
    inf = pooled_ratio_ci([np.ones(5)], [np.zeros(5)], 50, rng)
    assert inf[0] == float("inf") and inf[2] == float("inf")


def test_distance_scale_logs_counts_only():
    from app.extend.jsd import distance_scale

    x = np.array([[3.0, 1.0, 0.0, 9.0]])
    got = distance_scale(x, ["age", "gender", "shows:a", "clicks:a"])
    np.testing.assert_allclose(got, [[3.0, 1.0, 0.0, np.log(10.0)]])
