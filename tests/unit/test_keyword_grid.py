"""KeywordGrid (all users x all keywords) equals the DIN model scored one row at a time."""

import numpy as np
import pytest
import tensorflow as tf

from app.train.config import DinModelConfig
from app.train.din import MODEL_FEATURES, build_din
from app.train.keyword_grid import KeywordGrid, is_din
from app.train.layers import Dice


def random_users(rng, n, hist_len, num_keywords):
    lengths = rng.integers(0, hist_len + 1, n)
    lengths[0] = 0  # a user with no history at all
    lengths[1] = hist_len  # and one with a full window
    kwi = rng.integers(1, num_keywords, (n, hist_len))
    kwi[np.arange(hist_len)[None, :] >= lengths[:, None]] = 0
    shows = np.where(kwi > 0, rng.integers(0, 40, (n, hist_len)), 0)
    clicks = np.where(kwi > 0, rng.binomial(shows, 0.1), 0)
    return {"age": rng.integers(0, 140, n), "gender": rng.integers(0, 4, n),
            "hist_kwi": kwi, "hist_show_counts": shows, "hist_click_counts": clicks}


def row_by_row(model, users, num_keywords):
    n, k = len(users["age"]), num_keywords - 1
    rows = {name: np.repeat(v, k, axis=0) for name, v in users.items()}
    rows["target_kwi"] = np.tile(np.arange(1, k + 1), n)
    feats = {name: tf.constant(rows[name], tf.int64) for name in MODEL_FEATURES}
    return model(feats, training=False).numpy().reshape(n, k)


def perturb_dice(model, rng):
    """Non-trivial moving statistics and alphas, so inference-mode Dice is really exercised."""
    for layer in model.submodules:
        if isinstance(layer, Dice):
            units = layer.alpha.shape[0]
            layer.alpha.assign(rng.normal(0, 0.5, units).astype(np.float32))
            layer.norm.moving_mean.assign(rng.normal(0, 0.3, units).astype(np.float32))
            layer.norm.moving_variance.assign(rng.uniform(0.5, 2.0, units).astype(np.float32))


@pytest.mark.parametrize(
    "cfg",
    [
        DinModelConfig(embedding_dim=8, attention_units=[12, 6], mlp_units=[16, 8]),
        DinModelConfig(embedding_dim=6, attention_units=[10], attention_activation="dice",
                       attention_normalization="none", mlp_units=[12], activation="prelu", dropout=0.3),
    ],
    ids=["sigmoid-softmax-dice", "dice-none-prelu-dropout"],
)
def test_grid_equals_row_by_row(cfg):
    rng = np.random.default_rng(3)
    num_keywords, hist_len = 11, 7
    tf.keras.utils.set_random_seed(1)
    model = build_din(num_keywords, hist_len, cfg)
    for w in model.weights:  # biases and the keyword bias start at zero: give them values
        w.assign(w + rng.normal(0, 0.2, w.shape).astype(np.float32))
    perturb_dice(model, rng)
    users = random_users(rng, 37, hist_len, num_keywords)
    want = row_by_row(model, users, num_keywords)
    got = KeywordGrid(model)(**users)
    assert got.shape == (37, num_keywords - 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_grid_refuses_other_models():
    inp = tf.keras.Input((3,))
    other = tf.keras.Model(inp, tf.keras.layers.Dense(1)(inp))
    assert not is_din(other)
    with pytest.raises(ValueError, match="not a DIN"):
        KeywordGrid(other)


def test_grid_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(5)
    model = build_din(6, 4, DinModelConfig(embedding_dim=4, attention_units=[5], mlp_units=[6]))
    users = random_users(rng, 9, 4, 6)
    before = KeywordGrid(model)(**users)
    model.save(tmp_path / "m", save_format="tf", include_optimizer=False)
    loaded = tf.keras.models.load_model(tmp_path / "m", compile=False)
    np.testing.assert_allclose(KeywordGrid(loaded)(**users), before, atol=1e-6)


def test_distinct_items_round_trip_packed_and_row_wise():
    from app.train.keyword_grid import distinct_items

    rng = np.random.default_rng(7)
    for scale in (50, 2**45):  # the second cannot be packed into one int64
        kwi = rng.integers(0, 6, (40, 5))
        shows = rng.integers(-2, scale, (40, 5), dtype=np.int64) // max(1, scale // 8)  # repeats on purpose
        clicks = rng.integers(0, 3, (40, 5))
        (k, s, c), inv = distinct_items(kwi, shows, clicks)
        valid = kwi != 0
        assert len(k) == len(set(zip(k.tolist(), s.tolist(), c.tolist(), strict=True)))
        np.testing.assert_array_equal(k[inv], kwi[valid])
        np.testing.assert_array_equal(s[inv], np.maximum(shows[valid], 0))
        np.testing.assert_array_equal(c[inv], clicks[valid])


def test_grid_with_counts_too_large_to_pack():
    rng = np.random.default_rng(11)
    model = build_din(6, 4, DinModelConfig(embedding_dim=4, attention_units=[5], mlp_units=[6]))
    users = random_users(rng, 12, 4, 6)
    users["hist_show_counts"] = np.where(users["hist_kwi"] > 0, rng.integers(0, 2**45, (12, 4)), 0)
    np.testing.assert_allclose(KeywordGrid(model)(**users), row_by_row(model, users, 6), atol=2e-6)
