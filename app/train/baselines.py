"""The click model's own baselines, which every DIN version must beat: keyword popularity and
logistic regression on the features DIN sees.

- **popularity**: the target keyword's smoothed click-through rate on the train split; the same
  for every user, so it ranks samples but cannot tell users apart (it can never serve lookalike).
- **logistic regression**: scikit-learn on one-hots of the target keyword, age and gender plus the
  seven history statistics of :class:`app.train.din.HistoryStats` (history totals, the target
  keyword's own shows and clicks, the smoothed history CTR), fit on a random sample of the train
  split.

The fitted regression is also a Keras model with DIN's inputs and serving signature
(:func:`logistic_regression_model`): its weights are the regression's coefficients and its
statistics come from the very layer DIN uses, so it can be exported, gated and served exactly
like DIN when it is the better scorer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app import constants as C

#: the regression's dense features, in the order of :class:`app.train.din.HistoryStats`
DENSE_FEATURES = ("log_total_shows", "log_total_clicks", "log_history_length", "log_target_shows",
                  "log_target_clicks", "target_in_history", "history_ctr")


def popularity_scores(
    shows: np.ndarray, clicks: np.ndarray, target_kwi: np.ndarray, prior: float = 10.0
) -> np.ndarray:
    """Smoothed CTR of each keyword (toward the global CTR, ``prior`` pseudo-impressions)."""
    base = clicks.sum() / max(1.0, shows.sum())
    ctr = (clicks + prior * base) / (shows + prior)
    return ctr[np.clip(target_kwi, 0, len(ctr) - 1)]


def history_stats(a: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 7) float64: the same statistics as DIN's ``HistoryStats`` layer, in NumPy."""
    valid = a["hist_kwi"] != C.PADDING_INDEX
    shows = np.where(valid, np.maximum(a["hist_show_counts"], 0), 0).astype(np.float64)
    clicks = np.where(valid, np.maximum(a["hist_click_counts"], 0), 0).astype(np.float64)
    match = valid & (a["hist_kwi"] == np.asarray(a["target_kwi"])[:, None])
    return np.column_stack(
        [
            np.log1p(shows.sum(1)),
            np.log1p(clicks.sum(1)),
            np.log1p(valid.sum(1)),
            np.log1p((shows * match).sum(1)),
            np.log1p((clicks * match).sum(1)),
            match.any(1).astype(np.float64),
            (clicks.sum(1) + 0.1) / (shows.sum(1) + 1.0),
        ]
    )


def baseline_features(a: dict[str, np.ndarray], num_keywords: int, age_vocab: int = 128, gender_vocab: int = 8):
    """Sparse design matrix of the regression: one-hots (keyword, age, gender) | history stats."""
    import scipy.sparse as sp

    n = len(a["target_kwi"])

    def onehot(values: np.ndarray, size: int):
        idx = np.clip(values, 0, size - 1)
        return sp.csr_matrix((np.ones(n), (np.arange(n), idx)), shape=(n, size))

    return sp.hstack(
        [
            onehot(a["target_kwi"], num_keywords),
            onehot(a["age"], age_vocab),
            onehot(a["gender"], gender_vocab),
            sp.csr_matrix(history_stats(a)),
        ],
        format="csr",
    )


def fit_logistic_regression(train: dict[str, np.ndarray], num_keywords: int, age_vocab: int = 128,
                            gender_vocab: int = 8):
    """The fitted scikit-learn regression, or None when the sample has one class only."""
    from sklearn.linear_model import LogisticRegression

    if not train or len(np.unique(train["label"])) < 2:
        return None
    clf = LogisticRegression(C=1.0, max_iter=1000, solver="lbfgs")
    clf.fit(baseline_features(train, num_keywords, age_vocab, gender_vocab), train["label"])
    return clf


def logistic_regression_model(clf: Any, num_keywords: int, hist_len: int, age_vocab: int = 128,
                              gender_vocab: int = 8):
    """The fitted regression as a Keras model with DIN's inputs and ``prob`` output.

    ``sigmoid(b + w_kw[target] + w_age[age] + w_gender[gender] + w_stats . HistoryStats(...))``:
    three one-unit embeddings and a dense layer hold the coefficients, in float32.
    """
    import tensorflow as tf

    from app.train.din import ClipIndex, HistoryStats, model_inputs

    coef = np.asarray(clf.coef_, dtype=np.float64).ravel()
    n_kw, n_age = num_keywords, age_vocab
    w_kw, w_age = coef[:n_kw], coef[n_kw : n_kw + n_age]
    w_gender = coef[n_kw + n_age : n_kw + n_age + gender_vocab]
    w_stats = coef[n_kw + n_age + gender_vocab :]
    inp = model_inputs(hist_len)

    def onehot_weight(values, table: np.ndarray, name: str):
        emb = tf.keras.layers.Embedding(len(table), 1, name=f"{name}_weight")
        out = tf.keras.layers.Flatten(name=f"{name}_term")(emb(ClipIndex(len(table), name=f"{name}_index")(values)))
        return emb, out

    kw_emb, kw_term = onehot_weight(inp["target_kwi"], w_kw, "keyword")
    age_emb, age_term = onehot_weight(inp["age"], w_age, "age")
    gender_emb, gender_term = onehot_weight(inp["gender"], w_gender, "gender")
    stats = HistoryStats(name="history_stats")(
        inp["hist_kwi"], inp["hist_show_counts"], inp["hist_click_counts"], inp["target_kwi"]
    )
    dense = tf.keras.layers.Dense(1, name="stats_weight")
    logit = tf.keras.layers.Add(name="logit")([dense(stats), kw_term, age_term, gender_term])
    prob = tf.keras.layers.Activation("sigmoid", dtype="float32", name="prob")(logit)
    model = tf.keras.Model(inputs=inp, outputs=prob, name="logistic_regression")
    kw_emb.set_weights([w_kw.reshape(-1, 1).astype(np.float32)])
    age_emb.set_weights([w_age.reshape(-1, 1).astype(np.float32)])
    gender_emb.set_weights([w_gender.reshape(-1, 1).astype(np.float32)])
    dense.set_weights([w_stats.reshape(-1, 1).astype(np.float32),
                       np.asarray(clf.intercept_, dtype=np.float32).reshape(1)])
    return model
