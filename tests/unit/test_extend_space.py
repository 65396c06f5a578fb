"""The similarity space: raw click probabilities saturate cosine; logit-z per keyword spreads it."""

from __future__ import annotations

import numpy as np
import pytest

from app.extend.engine import MIN_SPREAD, size_warnings, spread_warnings
from app.extend.kernel import l2_normalize, top_n_mean_numpy
from app.extend.space import ScoreSpace, logit, similarity_spread


def _population(n: int = 4000, k: int = 12, seed: int = 0) -> np.ndarray:
    """Predicted CTRs like a real score table: a high base rate per keyword, small user effects."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.6, 0.9, size=k)  # every user likes every keyword a lot (MovieLens-like)
    taste = rng.normal(0, 0.3, size=(n, k))
    return 1 / (1 + np.exp(-(logit(base) + taste)))


def test_fit_matches_numpy_and_streams():
    p = _population()
    whole = ScoreSpace.fit([p])
    streamed = ScoreSpace.fit([p[:1000], p[1000:2500], p[2500:], p[:0]])
    unit = l2_normalize(p.astype(np.float32)).astype(np.float64)
    np.testing.assert_allclose(whole.mean, unit.mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole.std, unit.std(0), rtol=1e-5)
    np.testing.assert_allclose(streamed.mean, whole.mean, rtol=1e-9)
    np.testing.assert_allclose(streamed.std, whole.std, rtol=1e-9)
    assert streamed.users == 4000
    with pytest.raises(ValueError):
        ScoreSpace.fit([])


def test_apply_is_unit_centred_and_round_trips_json():
    p = _population()
    space = ScoreSpace.fit([p])
    v = space.apply(p)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    unit = l2_normalize(p.astype(np.float32)).astype(np.float64)
    expected = (unit - unit.mean(0)) / unit.std(0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(v, expected, atol=1e-5)
    again = ScoreSpace.from_json(space.to_json())
    np.testing.assert_allclose(again.apply(p), v, atol=1e-7)


def test_identical_users_carry_no_information():
    p = np.tile(_population(n=1, k=5), (50, 1))
    space = ScoreSpace.fit([p])
    assert np.all(space.std < 1e-6) and np.all(space.apply(p) == 0.0)


def test_raw_cosine_saturates_and_the_space_spreads_it():
    """The failure seen on real data, as a property of generated scores: with raw vectors the
    users' similarity to the seeds barely differs; in the space it spans a wide range."""
    p = _population()
    seeds = p[:200]
    users = p[200:]
    raw = ScoreSpace.raw(p.shape[1])
    raw_scores = top_n_mean_numpy(raw.apply(users), raw.apply(seeds), 10)
    space = ScoreSpace.fit([p])
    spaced = top_n_mean_numpy(space.apply(users), space.apply(seeds), 10)
    narrow, wide = similarity_spread(raw_scores), similarity_spread(spaced)
    assert narrow["p50"] > 0.99 and narrow["width_p10_p90"] < MIN_SPREAD
    assert wide["width_p10_p90"] > 0.1
    assert spread_warnings(narrow) and not spread_warnings(wide)


def test_raw_space_is_plain_l2():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(ScoreSpace.raw(2).apply(x), [[0.6, 0.8], [0.0, 0.0]])


def test_size_warning_names_requested_and_delivered():
    assert size_warnings(500, 500, 900, 100) == []
    (w,) = size_warnings(955, 752, 852, 100)
    assert "955" in w and "752" in w and "852 eligible" in w


def test_space_finds_planted_lookalikes_as_well_as_raw_cosine_with_a_wide_spread():
    """Two segments with different keyword tastes, a per-user activity level on top: the seeds'
    segment is found as well as with raw cosine, and the similarities spread out."""
    from app.train.metrics import auc

    rng = np.random.default_rng(3)
    k, n = 10, 3000
    base = logit(rng.uniform(0.6, 0.9, size=k))
    taste = np.stack([rng.normal(0, 0.4, k), rng.normal(0, 0.4, k)])
    segment = rng.integers(0, 2, n)
    level = rng.normal(0, 0.5, (n, 1))
    p = 1 / (1 + np.exp(-(base + taste[segment] + level + rng.normal(0, 0.2, (n, k)))))
    seeds = np.flatnonzero(segment == 0)[:100]
    users = np.setdiff1d(np.arange(n), seeds)
    space, raw = ScoreSpace.fit([p]), ScoreSpace.raw(k)
    got = {name: top_n_mean_numpy(sp.apply(p[users]), sp.apply(p[seeds]), 10) for name, sp in
           (("space", space), ("raw", raw))}
    truth = segment[users] == 0
    assert auc(truth, got["space"]) >= auc(truth, got["raw"]) - 0.01
    assert auc(truth, got["space"]) > 0.9
    assert similarity_spread(got["space"])["width_p10_p90"] > 10 * similarity_spread(got["raw"])["width_p10_p90"]
