"""Every user against every keyword in one pass of a trained DIN: the score table's fast path.

The DIN graph scores one (user, target keyword) row at a time. Scoring a user against all ``K``
keywords that way repeats the user's history ``K`` times and recomputes everything that does not
depend on the keyword ``K`` times: the history keys, their key-only attention terms, the persona
and history statistics. :class:`KeywordGrid` evaluates the same trained layers on a
``users x keywords`` grid instead:

* history keys (keyword embedding + count projection) once per user, and only for the valid
  (non-padding) history items;
* the attention MLP's first layer split by its ``[q, k, q - k, q * k]`` kernel blocks
  ``Wq, Wk, Wd, Wp``: ``q (Wq + Wd)`` once per keyword, ``k (Wk - Wd)`` once per item, and
  ``(q * k) Wp = k (diag(q) Wp)`` as one matmul of the items with a ``(D, K * U)`` matrix;
* the prediction MLP's first layer split the same way (query block once per keyword, persona
  block once per user);
* every later layer (Dense, Dice with its moving statistics, PReLU, the attention logit, the
  keyword bias) is the model's own layer object, called on the grid.

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


def _apply(layers, x):
    """Run a layer list at inference (Dice uses its moving statistics; dropout is the identity)."""
    for layer in layers:
        if isinstance(layer, tf.keras.layers.Dropout):
            continue
        x = layer(x, training=False) if isinstance(layer, Dice) else layer(x)
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
        args = [tf.constant(np.asarray(a, dtype=np.int64))
                for a in (age, gender, hist_kwi, hist_show_counts, hist_click_counts)]
        return self._fn(*args).numpy()

    # ------------------------------------------------------------------ the grid
    def _scores(self, age, gender, hist_kwi, shows, clicks):
        emb = self.embedding
        d = tf.shape(emb)[1]
        n, t = tf.shape(hist_kwi)[0], tf.shape(hist_kwi)[1]
        queries = emb[1:]  # (K, D): keyword index k+1 in column k
        k = tf.shape(queries)[0]
        keys = tf.gather(emb, hist_kwi) + self.count_projection(self.history_counts(shows, clicks))  # (N, T, D)
        mask = tf.not_equal(hist_kwi, 0)
        where = tf.where(mask)  # (M, 2) valid (user, position)
        items = tf.gather_nd(keys, where)  # (M, D)
        rows = where[:, 0]

        # attention, first layer: dense_0([q, k, q - k, q * k]) by kernel blocks
        att = self.attention
        dense0 = att.hidden[0]
        kernel = dense0.kernel
        wq, wk, wd, wp = kernel[:d], kernel[d : 2 * d], kernel[2 * d : 3 * d], kernel[3 * d :]
        units = tf.shape(kernel)[1]
        per_query = tf.matmul(queries, wq + wd)  # (K, U)
        if dense0.use_bias:
            per_query = per_query + dense0.bias
        per_item = tf.matmul(items, wk - wd)  # (M, U)
        cross = tf.reshape(tf.einsum("kd,du->dku", queries, wp), [d, k * units])
        x = tf.reshape(tf.matmul(items, cross), [-1, k, units]) + per_item[:, None, :] + per_query[None]
        x = _apply(att.hidden[1:], tf.reshape(x, [-1, units]))
        item_logits = tf.reshape(att.out(x), [-1, k])  # (M, K)

        # weights over each user's valid items, per keyword
        logits = tf.transpose(tf.scatter_nd(where, item_logits, tf.cast(tf.stack([n, t, k]), tf.int64)), [0, 2, 1])
        maskf = tf.cast(mask, logits.dtype)[:, None, :]  # (N, 1, T)
        if att.normalization == "softmax":
            logits = tf.where(mask[:, None, :], logits, tf.cast(MASK_LOGIT, logits.dtype))
            weights = tf.nn.softmax(logits, axis=-1) * maskf
        else:
            weights = logits * maskf
        interest = tf.einsum("nkt,ntd->nkd", weights, keys)  # (N, K, D)

        stats = self._history_stats(hist_kwi, shows, clicks, where, rows, n, k)  # (N, K, 7)
        age_e = self.age[1](self.age[0](age))
        gender_e = self.gender[1](self.gender[0](gender))

        # prediction MLP, first layer: [query, interest, query * interest, age, gender, stats]
        first = self.mlp.blocks[0]
        w = first.kernel
        da, dg = tf.shape(age_e)[1], tf.shape(gender_e)[1]
        w_q, w_i, w_m = w[:d], w[d : 2 * d], w[2 * d : 3 * d]
        w_a, w_g, w_s = w[3 * d : 3 * d + da], w[3 * d + da : 3 * d + da + dg], w[3 * d + da + dg :]
        h = (tf.einsum("nkd,dh->nkh", interest, w_i) + tf.einsum("nkd,dh->nkh", interest * queries[None], w_m)
             + tf.einsum("nks,sh->nkh", stats, w_s))
        per_user = tf.matmul(age_e, w_a) + tf.matmul(gender_e, w_g)
        if first.use_bias:
            per_user = per_user + first.bias
        h = h + tf.matmul(queries, w_q)[None] + per_user[:, None, :]
        h = _apply(self.mlp.blocks[1:], tf.reshape(h, [n * k, -1]))  # the layers were built 2-D
        logit = tf.reshape(self.logit(h), [n, k]) + self.keyword_bias[1:, 0][None]  # (N, K)
        return tf.sigmoid(tf.cast(logit, tf.float32))

    @staticmethod
    def _history_stats(hist_kwi, shows, clicks, where, rows, n, k):
        """HistoryStats for every (user, target keyword): totals once per user, target terms by
        summing each valid item into its (user, keyword) cell."""
        kwi = tf.gather_nd(hist_kwi, where)
        s = tf.cast(tf.maximum(tf.gather_nd(shows, where), 0), tf.float32)
        c = tf.cast(tf.maximum(tf.gather_nd(clicks, where), 0), tf.float32)
        cells = rows * tf.cast(k + 1, tf.int64) + kwi
        size = n * (k + 1)
        grid = lambda v: tf.reshape(tf.math.unsorted_segment_sum(v, cells, size), [n, k + 1])[:, 1:]  # noqa: E731
        target_shows, target_clicks = grid(s), grid(c)
        present = tf.cast(grid(tf.ones_like(s)) > 0, tf.float32)
        total_shows = tf.math.unsorted_segment_sum(s, rows, n)
        total_clicks = tf.math.unsorted_segment_sum(c, rows, n)
        length = tf.math.unsorted_segment_sum(tf.ones_like(s), rows, n)
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
