"""DIN layers against hand formulas / a NumPy oracle (no Ray)."""

import numpy as np
import pytest
import tensorflow as tf

from app.train.layers import MLP, AttentionUnit, Dice, WeightedSumPooling


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _numpy_attention(layer, q, k, mask, normalization):
    w0, b0, w1, b1 = [
        w.numpy() for w in (layer.hidden[0].kernel, layer.hidden[0].bias, layer.out.kernel, layer.out.bias)
    ]
    qt = np.repeat(q[:, None, :], k.shape[1], axis=1)
    x = np.concatenate([qt, k, qt - k, qt * k], axis=-1)
    logits = (_sigmoid(x @ w0 + b0) @ w1 + b1)[..., 0]
    if normalization == "none":
        return logits * mask
    e = np.exp(np.where(mask, logits, -np.inf) - np.where(mask, logits, -np.inf).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("normalization", ["softmax", "none"])
def test_attention_weights_match_numpy_oracle(normalization):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 3)).astype("float32")
    k = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    layer = AttentionUnit([5], "sigmoid", normalization)
    got = layer(q, k, mask).numpy()
    want = _numpy_attention(layer, q, k, mask, normalization)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[~mask] == 0)
    if normalization == "softmax":
        np.testing.assert_allclose(got.sum(-1), [1.0, 1.0], rtol=1e-6)


def test_attention_padding_changes_nothing_and_empty_history_is_zero():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 3)).astype("float32")
    k = rng.normal(size=(1, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0]], bool)
    layer = AttentionUnit([4, 2], "dice")
    pool = WeightedSumPooling()
    w1 = layer(q, k, mask)
    k2 = k.copy()
    k2[:, 2:] = rng.normal(size=(1, 2, 3)) * 100  # garbage in the padding slots
    w2 = layer(q, k2, mask)
    np.testing.assert_allclose(w1.numpy(), w2.numpy(), atol=1e-7)
    np.testing.assert_allclose(pool(k, w1).numpy(), pool(k2, w2).numpy(), atol=1e-6)
    empty = layer(q, k, np.zeros((1, 4), bool)).numpy()
    assert np.all(empty == 0) and np.all(np.isfinite(empty))


def test_weighted_sum_pooling_formula():
    keys = np.arange(12, dtype="float32").reshape(1, 3, 4)
    w = np.array([[0.5, 0.25, 0.0]], "float32")
    np.testing.assert_allclose(WeightedSumPooling()(keys, w).numpy(), [0.5 * keys[0, 0] + 0.25 * keys[0, 1]])


def test_dice_matches_formula_in_training_and_inference():
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 3.0, size=(64, 3)).astype("float32")
    dice = Dice(epsilon=1e-8)
    dice.build(x.shape)
    alpha = np.array([0.1, -0.2, 0.5], "float32")
    dice.alpha.assign(alpha)
    # training: batch statistics
    mean, var = x.mean(0), x.var(0)
    p = _sigmoid((x - mean) / np.sqrt(var + 1e-8))
    np.testing.assert_allclose(
        dice(x, training=True).numpy(), p * x + (1 - p) * alpha * x, rtol=1e-4, atol=1e-5
    )
    # inference: moving statistics (set them explicitly)
    dice.norm.moving_mean.assign([1.0, 0.0, -1.0])
    dice.norm.moving_variance.assign([4.0, 1.0, 0.25])
    p = _sigmoid((x - np.array([1.0, 0.0, -1.0])) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-8))
    np.testing.assert_allclose(
        dice(x, training=False).numpy(), p * x + (1 - p) * alpha * x, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    "layer",
    [Dice(epsilon=1e-6, momentum=0.9), AttentionUnit([7, 3], "prelu", "none"), MLP([4, 2], "dice", 0.1)],
)
def test_layers_round_trip_their_config(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert tf.keras.utils.get_registered_object(f"lookalike>{type(layer).__name__}") is type(layer)


def test_attention_refuses_unknown_normalization():
    with pytest.raises(ValueError, match="normalization"):
        AttentionUnit([4], normalization="l2")
