"""Every user against every keyword in one pass of a trained DIN: the score table's fast path.

The DIN graph scores one (user, target keyword) row at a time. Scoring a user against all ``K``
keywords that way repeats the user's history ``K`` times and recomputes everything that does not
depend on the keyword ``K`` times: the history keys, their key-only attention terms, the persona
and history statistics. :class:`KeywordGrid` evaluates the same trained layers on a
``users x keywords`` grid instead:

* history keys (keyword embedding + count projection) and their attention logits once per
  *distinct* history item (keyword, shows, clicks) of a batch (:func:`distinct_items`): a key does
  not depend on the user, and a batch of thousands of users has a few thousand distinct items;
* the attention MLP's first layer split by its ``[q, k, q - k, q * k]`` kernel blocks
  ``Wq, Wk, Wd, Wp``: ``q (Wq + Wd)`` once per keyword, ``k (Wk - Wd)`` once per item, and
  ``(q * k) Wp = k (diag(q) Wp)`` as one matmul of the items with a ``(D, K * U)`` matrix;
* history statistics (totals once per user, target-keyword terms by one segment sum);
* the prediction MLP on the concatenated (user, keyword) features, as the model builds them.

Every Dense, PReLU, logit and the keyword bias is the model's own layer or weight, called on the
grid; Dice is evaluated from its own weights and moving statistics in a fused form (:func:`_dice`).

Same weights, same arithmetic up to the order of float additions: the scores equal the serving
signature's to about 1e-6 (tests/unit/test_keyword_grid.py compares them on random users). Built
from the Keras model reloaded from the exported SavedModel; a model that is not a DIN (the
logistic-regression fallback) has no grid and is scored row by row.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.train.din import HistoryCounts
from app.train.layers import MASK_LOGIT, Dice

#: layers the grid reads; a model lacking one of them is not a DIN built by app.train.din
REQUIRED_LAYERS = ("keyword_embedding", "count_projection", "history_counts", "attention", "age_index",
                   "age_embedding", "gender_index", "gender_embedding", "mlp", "logit", "keyword_bias")


def is_din(model: tf.keras.Model) -> bool:
    names = {layer.name for layer in model.layers}
    return all(n in names for n in REQUIRED_LAYERS)


#: see KeywordGrid.__call__
PAD_USERS = 64
PAD_ITEMS = 512


def _round_up(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def _pad_rows(a: np.ndarray, rows: int, fill: int = 0) -> np.ndarray:
    if len(a) == rows:
        return a
    pad = np.full((rows - len(a), *a.shape[1:]), fill, dtype=a.dtype)
    return np.concatenate([a, pad])


def distinct_items(hist_kwi: np.ndarray, shows: np.ndarray, clicks: np.ndarray):
    """The distinct (keyword, shows, clicks) of the valid history items, and each valid item's
    position among them (items in row-major order, as ``tf.where`` lists them).

    Counts are clipped at 0 first, as the model does before its log1p: equal after clipping, equal
    key. Thousands of users share a few thousand distinct items, so the attention MLP (the
    costliest part per item) runs once per distinct item instead of once per user's item.
    """
    valid = hist_kwi != 0
    kw, s, c = hist_kwi[valid], np.maximum(shows[valid], 0), np.maximum(clicks[valid], 0)
    if kw.size == 0:
        empty = np.zeros(0, np.int64)
        return (empty, empty, empty), empty
    bits = [int(v.max()).bit_length() for v in (kw, s, c)]
    if sum(bits) <= 62:
        packed = (kw << (bits[1] + bits[2])) | (s << bits[2]) | c
        packed, inverse = np.unique(packed, return_inverse=True)
        mask = lambda b: (1 << b) - 1  # noqa: E731
        kinds = (packed >> (bits[1] + bits[2]), (packed >> bits[2]) & mask(bits[1]), packed & mask(bits[2]))
    else:  # counts too large to pack into one int64: a (slower) row-wise unique
        rows, inverse = np.unique(np.stack([kw, s, c], 1), axis=0, return_inverse=True)
        kinds = (rows[:, 0], rows[:, 1], rows[:, 2])
    return tuple(np.ascontiguousarray(a, dtype=np.int64) for a in kinds), inverse.reshape(-1).astype(np.int64)


def _dice(layer: Dice, x):
    """Dice at inference in two fused steps: ``p = sigmoid(x * a + b)`` with the moving statistics
    folded into ``a = 1 / sqrt(var + eps)``, ``b = -mean * a``; ``x * (alpha + p * (1 - alpha))``.
    Algebraically the layer's ``p * x + (1 - p) * alpha * x``, with half the passes over x."""
    norm = layer.norm
    a = tf.math.rsqrt(norm.moving_variance + norm.epsilon)
    p = tf.sigmoid(x * a - norm.moving_mean * a)
    return x * (layer.alpha + p * (1.0 - layer.alpha))


def _apply(layers, x):
    """Run a layer list at inference (Dice uses its moving statistics; dropout is the identity)."""
    for layer in layers:
        if isinstance(layer, tf.keras.layers.Dropout):
            continue
        x = _dice(layer, x) if isinstance(layer, Dice) else layer(x)
    return x


class KeywordGrid:
    """Scores ``(N, K)`` of N users against keyword indices 1..K from a trained DIN model.

    Args:
        model: the Keras DIN (:func:`app.train.din.build_din`), trained.
    Call: ``(age (N,), gender (N,), hist_kwi, hist_show_counts, hist_click_counts (N, T))``
    int64 -> float32 ``(N, K)`` click probabilities, ``K = num_keywords - 1``.
    """

    def __init__(self, model: tf.keras.Model):
        if not is_din(model):
            raise ValueError(f"model {model.name!r} is not a DIN: it lacks some of {REQUIRED_LAYERS}")
        get = model.get_layer
        self.embedding = get("keyword_embedding").embeddings  # (V, D)
        self.count_projection = get("count_projection")
        self.history_counts: HistoryCounts = get("history_counts")
        self.attention = get("attention")
        self.age = (get("age_index"), get("age_embedding"))
        self.gender = (get("gender_index"), get("gender_embedding"))
        self.mlp = get("mlp")
        self.logit = get("logit")
        self.keyword_bias = get("keyword_bias").embeddings  # (V, 1)
        self.num_keywords = int(self.embedding.shape[0]) - 1
        self._fn = tf.function(self._scores, reduce_retracing=True)

    def __call__(self, age, gender, hist_kwi, hist_show_counts, hist_click_counts) -> np.ndarray:
        dense = [np.asarray(a, dtype=np.int64) for a in (age, gender, hist_kwi, hist_show_counts, hist_click_counts)]
        n = len(dense[0])
        # Every shape is padded to a few sizes (users to a multiple of PAD_USERS with empty
        # histories, distinct items to a multiple of PAD_ITEMS), and nothing inside depends on the
        # number of valid items: a call with shapes TF has not run yet costs tens of ms more
        # (measured: 100+ ms against 15 ms), and every batch has its own counts.
        dense = [_pad_rows(a, _round_up(n, PAD_USERS)) for a in dense]
        kinds, inverse = distinct_items(*dense[2:])
        size = _round_up(len(kinds[0]) + 1, PAD_ITEMS)  # at least one unused row, for padding
        kinds = [_pad_rows(a, size, fill=1 if i == 0 else 0) for i, a in enumerate(kinds)]
        item_of = np.full(dense[2].shape, size - 1, dtype=np.int64)  # padding -> the unused last row
        item_of[dense[2] != 0] = inverse
        args = [tf.constant(a) for a in (*dense, *kinds, item_of)]
        return self._fn(*args).numpy()[:n]

    # ------------------------------------------------------------------ the grid
    def _scores(self, age, gender, hist_kwi, shows, clicks, kind_kwi, kind_shows, kind_clicks, item_of):
        emb = self.embedding
        d = tf.shape(emb)[1]
        n = tf.shape(hist_kwi)[0]
        queries = emb[1:]  # (K, D): keyword index k+1 in column k
        k = tf.shape(queries)[0]
        mask = tf.not_equal(hist_kwi, 0)  # (N, T)
        # a history item's key, hence its attention logits, depend on (keyword, shows, clicks) only
        items = tf.gather(emb, kind_kwi) + self.count_projection(
            self.history_counts(kind_shows[:, None], kind_clicks[:, None]))[:, 0]  # (I, D) distinct items
        keys = tf.gather(items, item_of)  # (N, T, D); padding positions hold an unused row's key

        # attention, first layer: dense_0([q, k, q - k, q * k]) by kernel blocks
        att = self.attention
        dense0 = att.hidden[0]
        kernel = dense0.kernel
        wq, wk, wd, wp = kernel[:d], kernel[d : 2 * d], kernel[2 * d : 3 * d], kernel[3 * d :]
        units = tf.shape(kernel)[1]
        per_query = tf.matmul(queries, wq + wd)  # (K, U)
        if dense0.use_bias:
            per_query = per_query + dense0.bias
        per_item = tf.matmul(items, wk - wd)  # (I, U)
        cross = tf.reshape(tf.einsum("kd,du->dku", queries, wp), [d, k * units])
        x = tf.reshape(tf.matmul(items, cross), [-1, k, units]) + per_item[:, None, :] + per_query[None]
        x = _apply(att.hidden[1:], tf.reshape(x, [-1, units]))
        item_logits = tf.reshape(att.out(x), [-1, k])  # (I, K)

        # weights over each user's valid items, per keyword (padding: weight exactly 0)
        logits = tf.transpose(tf.gather(item_logits, item_of), [0, 2, 1])  # (N, K, T)
        maskf = tf.cast(mask, logits.dtype)[:, None, :]  # (N, 1, T)
        if att.normalization == "softmax":
            logits = tf.where(mask[:, None, :], logits, tf.cast(MASK_LOGIT, logits.dtype))
            weights = tf.nn.softmax(logits, axis=-1) * maskf
        else:
            weights = logits * maskf
        interest = tf.einsum("nkt,ntd->nkd", weights, keys)  # (N, K, D)

        stats = self._history_stats(hist_kwi, shows, clicks, mask, n, k)  # (N, K, 7)
        age_e = self.age[1](self.age[0](age))
        gender_e = self.gender[1](self.gender[0](gender))

        # the prediction MLP on every (user, keyword) row of [query, interest, query * interest,
        # age, gender, stats]: one matmul over the concatenation reads a few more MACs than a
        # block-split first layer but writes its (rows x units) output once, and on 2 cores
        # these passes over memory, not the multiplications, are the cost
        q = tf.broadcast_to(queries[None], [n, k, d])
        persona = tf.concat([age_e, gender_e], -1)
        features = tf.concat([q, interest, q * interest,
                              tf.broadcast_to(persona[:, None, :], [n, k, tf.shape(persona)[1]]), stats], -1)
        h = _apply(self.mlp.blocks, tf.reshape(features, [n * k, -1]))  # the layers were built 2-D
        logit = tf.reshape(self.logit(h), [n, k]) + self.keyword_bias[1:, 0][None]  # (N, K)
        return tf.sigmoid(tf.cast(logit, tf.float32))

    @staticmethod
    def _history_stats(hist_kwi, shows, clicks, mask, n, k):
        """HistoryStats for every (user, target keyword): totals once per user, target terms by
        summing each history item into its (user, keyword) cell (padding lands in keyword 0's
        cell, which is dropped, and counts nothing)."""
        valid = tf.cast(mask, tf.float32)
        s = tf.cast(tf.maximum(shows, 0), tf.float32) * valid
        c = tf.cast(tf.maximum(clicks, 0), tf.float32) * valid
        cells = tf.range(n, dtype=tf.int64)[:, None] * tf.cast(k + 1, tf.int64) + hist_kwi  # (N, T)
        size = n * (k + 1)
        grid = lambda v: tf.reshape(tf.math.unsorted_segment_sum(v, cells, size), [n, k + 1])[:, 1:]  # noqa: E731
        target_shows, target_clicks = grid(s), grid(c)
        present = tf.cast(grid(valid) > 0, tf.float32)
        total_shows, total_clicks, length = (tf.reduce_sum(v, -1) for v in (s, c, valid))
        per_user = tf.stack([tf.math.log1p(total_shows), tf.math.log1p(total_clicks), tf.math.log1p(length)], -1)
        ctr = (total_clicks + 0.1) / (total_shows + 1.0)
        shape = tf.shape(target_shows)
        return tf.concat(
            [
                tf.broadcast_to(per_user[:, None, :], [shape[0], shape[1], 3]),
                tf.stack([tf.math.log1p(target_shows), tf.math.log1p(target_clicks), present], -1),
                tf.broadcast_to(ctr[:, None, None], [shape[0], shape[1], 1]),
            ],
            axis=-1,
        )
