"""Reusable DIN layers: Dice, the attention unit and weighted-sum pooling.

Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction",
KDD 2018) represents a user by *which* of their past behaviours matter for the candidate at hand:
an attention unit scores every history item against the candidate (the query), and the history is
pooled with those scores as weights. Dice is the paper's data-adaptive activation.

Every layer is registered for Keras serialization (package ``lookalike``) and has a full
``get_config``, so models built from them save and reload with identical predictions.
"""

from __future__ import annotations

import tensorflow as tf

PACKAGE = "lookalike"
#: finite "minus infinity" for masked attention logits; representable in float16
MASK_LOGIT = -1e4


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class Dice(tf.keras.layers.Layer):
    """Dice activation (DIN paper, eq. 9): a PReLU whose switch point adapts to the data.

    ``f(s) = p(s) * s + (1 - p(s)) * alpha * s`` with ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``.
    ``E`` and ``Var`` are the batch statistics while training and their moving averages at inference
    (a BatchNormalization without scale or offset). ``alpha`` is learned per unit.

    Args:
        epsilon: added to the variance.
        momentum: of the moving mean / variance.
    Shapes: ``(..., units) -> (..., units)``.
    """

    def __init__(self, epsilon: float = 1e-8, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.momentum = momentum
        self.norm = tf.keras.layers.BatchNormalization(
            axis=-1, center=False, scale=False, epsilon=epsilon, momentum=momentum, name="norm"
        )

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha", shape=(input_shape[-1],), initializer="zeros", trainable=True
        )
        self.norm.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        p = tf.sigmoid(self.norm(inputs, training=training))
        alpha = tf.cast(self.alpha, inputs.dtype)
        return p * inputs + (1.0 - p) * alpha * inputs

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum}


def make_activation(name: str, prefix: str) -> tf.keras.layers.Layer:
    """``dice`` | ``prelu`` | any Keras activation name (``sigmoid``, ``relu``...)."""
    if name == "dice":
        return Dice(name=f"{prefix}_dice")
    if name == "prelu":
        return tf.keras.layers.PReLU(name=f"{prefix}_prelu")
    return tf.keras.layers.Activation(name, name=f"{prefix}_{name}")


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class AttentionUnit(tf.keras.layers.Layer):
    """DIN's local activation unit: how relevant is each history item to the candidate?

    An MLP reads ``[q, k, q - k, q * k]`` for the query ``q`` (candidate keyword) and every key ``k``
    (history keyword) and returns one logit per key. Padding keys (``mask == False``) get weight 0.
    With ``normalization="softmax"`` the weights over the valid keys sum to 1 (as in the authors'
    code); with ``"none"`` they are the raw MLP outputs (as in the paper, keeping the intensity of
    the user's interest).

    Args:
        units: hidden layer sizes of the MLP (paper: ``[80, 40]``).
        activation: ``sigmoid`` (paper), ``dice``, ``prelu`` or a Keras activation name.
        normalization: ``softmax`` or ``none``.
    Call: ``(query (B, D), keys (B, T, D), mask (B, T) bool) -> weights (B, T)``.
    """

    def __init__(self, units=(80, 40), activation: str = "sigmoid", normalization: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        if normalization not in ("softmax", "none"):
            raise ValueError(f"normalization must be 'softmax' or 'none', got {normalization!r}")
        self.units = [int(u) for u in units]
        self.activation = activation
        self.normalization = normalization
        self.hidden = []
        for i, u in enumerate(self.units):
            self.hidden.append(tf.keras.layers.Dense(u, name=f"dense_{i}"))
            self.hidden.append(make_activation(activation, f"act_{i}"))
        self.out = tf.keras.layers.Dense(1, name="logit")

    def build(self, input_shape):
        # ``input_shape`` is that of ``query``: (B, D). The first Dense reads [q, k, q - k, q * k].
        d = int(input_shape[-1])
        self.hidden[0].build(tf.TensorShape([None, None, 4 * d]))
        super().build(input_shape)

    def _first_layer(self, query, keys, rows):
        """``dense_0([q, k, q - k, q * k])`` of the valid keys, without tiling ``q``.

        With the kernel split into the four ``D``-row blocks ``Wq, Wk, Wd, Wp`` the product is
        ``q (Wq + Wd) + [k, q * k] [Wk - Wd; Wp] + b``: the query part is computed once per example
        and gathered for its keys, and the per-key matmul reads 2D instead of 4D columns. Same
        weights, same result as the concatenation (the NumPy oracle test checks the concat form).
        ``keys`` are the valid keys ``(N, D)``, ``rows`` the example of each ``(N,)``.
        """
        dense = self.hidden[0]
        d = tf.shape(query)[-1]
        kernel = tf.cast(dense.kernel, keys.dtype)
        wq, wk, wd, wp = kernel[:d], kernel[d : 2 * d], kernel[2 * d : 3 * d], kernel[3 * d :]
        per_query = tf.matmul(query, wq + wd)  # (B, U)
        if dense.use_bias:
            per_query = per_query + tf.cast(dense.bias, keys.dtype)
        q = tf.gather(query, rows)  # (N, D)
        per_key = tf.matmul(tf.concat([keys, q * keys], axis=-1), tf.concat([wk - wd, wp], 0))
        return per_key + tf.gather(per_query, rows)  # (N, U)

    def call(self, query, keys, mask, training=None):
        # The MLP runs on the valid (example, position) pairs only: histories are often far
        # shorter than hist_len, and padding never reaches the output anyway. (Dice's batch
        # statistics are therefore over valid keys, which is what they should describe.)
        mask = tf.cast(mask, tf.bool)
        where = tf.where(mask)  # (N, 2) int64
        x = self._first_layer(query, tf.gather_nd(keys, where), where[:, 0])
        for layer in self.hidden[1:]:
            x = layer(x, training=training) if isinstance(layer, Dice) else layer(x)
        valid_logits = tf.squeeze(self.out(x), axis=-1)  # (N,)
        logits = tf.scatter_nd(where, valid_logits, tf.shape(mask, out_type=tf.int64))  # (B, T)
        maskf = tf.cast(mask, logits.dtype)
        if self.normalization == "softmax":
            logits = tf.where(mask, logits, tf.cast(MASK_LOGIT, logits.dtype))
            # an all-padding history gives a uniform softmax; the mask then zeroes it
            return tf.nn.softmax(logits, axis=-1) * maskf
        return logits * maskf

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "normalization": self.normalization,
        }


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class WeightedSumPooling(tf.keras.layers.Layer):
    """Pool a history by attention weights: ``sum_t w[b, t] * keys[b, t, :]``.

    Call: ``(keys (B, T, D), weights (B, T)) -> (B, D)``.
    """

    def call(self, keys, weights):
        return tf.reduce_sum(keys * tf.expand_dims(tf.cast(weights, keys.dtype), -1), axis=1)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class MLP(tf.keras.layers.Layer):
    """Dense layers, each followed by an activation (``dice``, ``prelu``...) and optional dropout.

    Call: ``(B, F) -> (B, units[-1])``.
    """

    def __init__(self, units=(200, 80), activation: str = "dice", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        self.activation = activation
        self.dropout = float(dropout)
        self.blocks = []
        for i, u in enumerate(self.units):
            self.blocks.append(tf.keras.layers.Dense(u, name=f"dense_{i}"))
            self.blocks.append(make_activation(activation, f"act_{i}"))
            if self.dropout > 0:
                self.blocks.append(tf.keras.layers.Dropout(self.dropout, name=f"dropout_{i}"))

    def call(self, x, training=None):
        for layer in self.blocks:
            if isinstance(layer, (Dice, tf.keras.layers.Dropout)):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "dropout": self.dropout,
        }
