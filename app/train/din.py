"""The DIN click model: P(click | user history, user persona, target keyword).

The candidate (target keyword) embedding queries the user's history of keyword embeddings through
the attention unit; the weighted-sum pooled history, the candidate, the persona (age, gender) and
a few history statistics (total shows / clicks, shows / clicks of the target keyword itself) feed
a prediction MLP with Dice (or PReLU); a per-keyword bias is added to the logit and a sigmoid gives
the click probability, trained with sigmoid cross-entropy (Zhou et al., KDD 2018).

Inputs are the sample features of :data:`app.data.tfrecord.SAMPLE_FEATURES` minus the bookkeeping
ones (:data:`MODEL_FEATURES`), all int64: scalars ``(B,)`` and histories ``(B, hist_len)``.
Keyword index 0 is padding: it is masked out of the attention and of every history statistic.
"""

from __future__ import annotations

import tensorflow as tf

from app.constants import PADDING_INDEX
from app.data.tfrecord import HISTORY_FEATURES
from app.train.config import DinModelConfig
from app.train.layers import MLP, PACKAGE, AttentionUnit, WeightedSumPooling

#: the model's (and the serving signature's) inputs: the sample minus label / interval / did_index
MODEL_FEATURES = ("age", "gender", "hist_kwi", "hist_show_counts", "hist_click_counts", "target_kwi")
LABEL = "label"


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class NotPadding(tf.keras.layers.Layer):
    """``hist_kwi != 0`` as a bool mask ``(B, T)``."""

    def call(self, hist_kwi):
        return tf.not_equal(hist_kwi, PADDING_INDEX)


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class ClipIndex(tf.keras.layers.Layer):
    """Clip integer ids into ``[0, vocab)`` so unseen ages/genders never index out of range."""

    def __init__(self, vocab: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab = int(vocab)

    def call(self, x):
        return tf.clip_by_value(x, tf.constant(0, x.dtype), tf.constant(self.vocab - 1, x.dtype))

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab}


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class HistoryCounts(tf.keras.layers.Layer):
    """Per history item ``[log1p(shows), log1p(clicks)]``: ``(B, T), (B, T) -> (B, T, 2)``."""

    def call(self, shows, clicks):
        x = tf.stack([shows, clicks], axis=-1)
        return tf.math.log1p(tf.cast(tf.maximum(x, 0), self.compute_dtype))


@tf.keras.utils.register_keras_serializable(package=PACKAGE)
class HistoryStats(tf.keras.layers.Layer):
    """Side features from the history, padding excluded: ``-> (B, 7)``.

    log1p of total shows, total clicks, history length, shows and clicks of the target keyword;
    whether the target keyword is in the history; the smoothed history CTR.
    """

    def call(self, hist_kwi, shows, clicks, target_kwi):
        dtype = self.compute_dtype
        valid = tf.cast(tf.not_equal(hist_kwi, PADDING_INDEX), tf.float32)
        shows = tf.cast(tf.maximum(shows, 0), tf.float32) * valid
        clicks = tf.cast(tf.maximum(clicks, 0), tf.float32) * valid
        match = tf.cast(tf.equal(hist_kwi, tf.expand_dims(target_kwi, -1)), tf.float32) * valid
        total_shows = tf.reduce_sum(shows, -1)
        total_clicks = tf.reduce_sum(clicks, -1)
        out = tf.stack(
            [
                tf.math.log1p(total_shows),
                tf.math.log1p(total_clicks),
                tf.math.log1p(tf.reduce_sum(valid, -1)),
                tf.math.log1p(tf.reduce_sum(shows * match, -1)),
                tf.math.log1p(tf.reduce_sum(clicks * match, -1)),
                tf.reduce_max(match, -1),
                (total_clicks + 0.1) / (total_shows + 1.0),
            ],
            axis=-1,
        )
        return tf.cast(out, dtype)


def model_inputs(hist_len: int) -> dict[str, tf.keras.Input]:
    return {
        name: tf.keras.Input(shape=(hist_len,) if name in HISTORY_FEATURES else (), dtype=tf.int64, name=name)
        for name in MODEL_FEATURES
    }


def build_din(num_keywords: int, hist_len: int, cfg: DinModelConfig | None = None) -> tf.keras.Model:
    """The DIN model (functional Keras); output ``prob`` ``(B, 1)`` float32.

    Args:
        num_keywords: keyword vocabulary size including the padding index 0.
        hist_len: history length of the samples.
    """
    cfg = cfg or DinModelConfig()
    if num_keywords < 2:
        raise ValueError(f"num_keywords must be >= 2 (index 0 is padding), got {num_keywords}")
    d = cfg.embedding_dim
    reg = tf.keras.regularizers.l2(cfg.embedding_l2) if cfg.embedding_l2 > 0 else None
    inp = model_inputs(hist_len)

    keyword_embedding = tf.keras.layers.Embedding(
        num_keywords, d, embeddings_regularizer=reg, name="keyword_embedding"
    )
    query = keyword_embedding(inp["target_kwi"])  # (B, D)
    keys = keyword_embedding(inp["hist_kwi"])  # (B, T, D)
    counts = HistoryCounts(name="history_counts")(inp["hist_show_counts"], inp["hist_click_counts"])
    keys = tf.keras.layers.Add(name="keys")(
        [keys, tf.keras.layers.Dense(d, use_bias=False, name="count_projection")(counts)]
    )
    mask = NotPadding(name="history_mask")(inp["hist_kwi"])
    weights = AttentionUnit(
        cfg.attention_units, cfg.attention_activation, cfg.attention_normalization, name="attention"
    )(query, keys, mask)
    interest = WeightedSumPooling(name="interest")(keys, weights)

    age = tf.keras.layers.Embedding(cfg.age_vocab, 4, name="age_embedding")(
        ClipIndex(cfg.age_vocab, name="age_index")(inp["age"])
    )
    gender = tf.keras.layers.Embedding(cfg.gender_vocab, 2, name="gender_embedding")(
        ClipIndex(cfg.gender_vocab, name="gender_index")(inp["gender"])
    )
    stats = HistoryStats(name="history_stats")(
        inp["hist_kwi"], inp["hist_show_counts"], inp["hist_click_counts"], inp["target_kwi"]
    )
    x = tf.keras.layers.Concatenate(name="features")(
        [query, interest, tf.keras.layers.Multiply(name="match")([query, interest]), age, gender, stats]
    )
    h = MLP(cfg.mlp_units, cfg.activation, cfg.dropout, name="mlp")(x)
    logit = tf.keras.layers.Dense(1, name="logit")(h)
    bias = tf.keras.layers.Flatten(name="flat_bias")(
        tf.keras.layers.Embedding(num_keywords, 1, embeddings_initializer="zeros", name="keyword_bias")(
            inp["target_kwi"]
        )
    )
    logit = tf.keras.layers.Add(name="logit_with_bias")([logit, bias])
    prob = tf.keras.layers.Activation("sigmoid", dtype="float32", name="prob")(logit)
    return tf.keras.Model(inputs=inp, outputs=prob, name="din")


def compile_din(model: tf.keras.Model, learning_rate: float) -> tf.keras.Model:
    """Adam + sigmoid cross-entropy; AUC as the tracked metric."""
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.AUC(name="auc", num_thresholds=2000)],
    )
    return model
