"""Test-split evaluation of DIN against two baselines and the generator's oracle.

- ``din``: the exported model (through :class:`BatchScorer`, i.e. exactly what is served);
- ``popularity``: the target keyword's smoothed click-through rate on the train split;
- ``logistic_regression``: scikit-learn on the same features DIN sees (target keyword, age,
  gender one-hots; history totals and the target keyword's own history shows/clicks), fit on a
  random sample of the train split;
- ``oracle``: the generator's ground truth. A sample's label is "clicked at least once in the
  target interval", and each of the n shows of that keyword in that interval is clicked with the
  planted probability p(user, keyword), so the true P(label = 1) is ``1 - (1 - p) ** n``; n is read
  from the train-ready table. (Using p alone ignores n, which a model can partly infer from the
  user's activity, and then a trained model beats the "oracle".) Skipped without ground truth.

AUC, GAUC (by did_index, weighted by impressions) and log loss for each, in ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from app import constants as C
from app.storage import Storage
from app.train.din import MODEL_FEATURES
from app.train.input import load_arrays, make_dataset, split_files
from app.train.metrics import click_metrics

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ train-split pass
def scan_train(
    files: list[str], hist_len: int, num_keywords: int, lr_rows: int, total_rows: int, seed: int = 0
):
    """One streaming pass over the train split: per-keyword (shows, clicks) and an LR sample."""
    from app.data.tfrecord import FEATURE_NAMES

    rng = np.random.default_rng(seed)
    keep_p = min(1.0, lr_rows / max(1, total_rows))
    shows = np.zeros(num_keywords, np.float64)
    clicks = np.zeros(num_keywords, np.float64)
    sample: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_NAMES}
    ds = make_dataset(files, hist_len, 65536, with_label=False, keep=FEATURE_NAMES)
    for b in ds.as_numpy_iterator():
        kw = np.clip(b["target_kwi"], 0, num_keywords - 1)
        shows += np.bincount(kw, minlength=num_keywords)
        clicks += np.bincount(kw, weights=b["label"], minlength=num_keywords)
        take = rng.random(len(kw)) < keep_p
        for k in FEATURE_NAMES:
            sample[k].append(b[k][take])
    lr_sample = {k: np.concatenate(v) for k, v in sample.items()} if sample["label"] else {}
    return shows, clicks, lr_sample


def popularity_scores(
    shows: np.ndarray, clicks: np.ndarray, target_kwi: np.ndarray, prior: float = 10.0
) -> np.ndarray:
    """Smoothed CTR of each keyword (toward the global CTR, ``prior`` pseudo-impressions)."""
    base = clicks.sum() / max(1.0, shows.sum())
    ctr = (clicks + prior * base) / (shows + prior)
    return ctr[np.clip(target_kwi, 0, len(ctr) - 1)]


# ------------------------------------------------------------------ logistic regression baseline
def baseline_features(
    a: dict[str, np.ndarray], num_keywords: int, age_vocab: int = 128, gender_vocab: int = 8
):
    """Sparse design matrix of the LR baseline from sample arrays."""
    import scipy.sparse as sp

    n = len(a["target_kwi"])
    valid = a["hist_kwi"] != C.PADDING_INDEX
    shows = np.where(valid, a["hist_show_counts"], 0).astype(np.float64)
    clicks = np.where(valid, a["hist_click_counts"], 0).astype(np.float64)
    match = valid & (a["hist_kwi"] == a["target_kwi"][:, None])
    dense = np.column_stack(
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

    def onehot(values: np.ndarray, size: int):
        idx = np.clip(values, 0, size - 1)
        return sp.csr_matrix((np.ones(n), (np.arange(n), idx)), shape=(n, size))

    return sp.hstack(
        [
            onehot(a["target_kwi"], num_keywords),
            onehot(a["age"], age_vocab),
            onehot(a["gender"], gender_vocab),
            sp.csr_matrix(dense),
        ],
        format="csr",
    )


def logistic_regression_scores(
    train: dict[str, np.ndarray], test: dict[str, np.ndarray], num_keywords: int
) -> np.ndarray | None:
    from sklearn.linear_model import LogisticRegression

    if not train or len(np.unique(train["label"])) < 2:
        return None
    clf = LogisticRegression(C=1.0, max_iter=500, solver="lbfgs")
    clf.fit(baseline_features(train, num_keywords), train["label"])
    return clf.predict_proba(baseline_features(test, num_keywords))[:, 1]


# ------------------------------------------------------------------ oracle
def target_show_counts(storage: Storage, test: dict[str, np.ndarray], interval_seconds: int) -> np.ndarray:
    """Shows of each test sample's target keyword in its target interval (from train-ready)."""
    from app.data.samples import explode

    table = storage.read_table(
        C.T_TRAINREADY, columns=[C.DID_INDEX, C.INTERVAL_STARTING_TIME, C.KWI, C.KWI_SHOW_COUNTS, C.KWI_CLICK_COUNTS]
    )
    long = explode(table, interval_seconds)
    did_index = table.column(C.DID_INDEX).to_numpy()[long.user]
    t_interval = test["interval_starting_time"] // interval_seconds
    base = int(min(long.interval.min(initial=0), t_interval.min(initial=0)))
    k = int(max(long.kwi.max(initial=0), test["target_kwi"].max(initial=0))) + 1
    n_int = int(max(long.interval.max(initial=0), t_interval.max(initial=0))) - base + 1
    key = (did_index * n_int + (long.interval - base)) * k + long.kwi
    order = np.argsort(key)
    key, shows = key[order], long.shows[order]
    want = (test["did_index"] * n_int + (t_interval - base)) * k + test["target_kwi"]
    pos = np.clip(np.searchsorted(key, want), 0, len(key) - 1)
    return np.where(key[pos] == want, shows[pos], 1)


def oracle_scores(
    storage: Storage, test: dict[str, np.ndarray], keywords: list[str], interval_seconds: int = 86400
) -> np.ndarray | None:
    """True P(label = 1) from the generator's ground truth; None when there is none."""
    if not storage.exists(C.RAW_TRUTH) or not keywords:
        return None
    try:
        from app.data.synthetic import Truth
    except ImportError:
        return None
    table = storage.read_table(C.T_TRAINREADY, columns=[C.DID, C.DID_INDEX])
    did_index = table.column(C.DID_INDEX).to_numpy()
    dids = np.asarray(table.column(C.DID).to_pylist(), dtype=object)
    lookup = np.empty(int(did_index.max()) + 1, dtype=object)
    lookup[did_index] = dids
    kw = np.asarray(keywords, dtype=object)
    p = np.asarray(
        Truth.load(storage).click_prob(lookup[test["did_index"]], kw[test["target_kwi"] - 1]),
        dtype=np.float64,
    )
    n = target_show_counts(storage, test, interval_seconds)
    return 1.0 - np.power(1.0 - p, n)


# ------------------------------------------------------------------ the whole evaluation
def test_fingerprint(run: str, files: list[str], rows: int) -> str:
    names = ",".join(f.rsplit("/", 1)[-1] for f in files)
    return hashlib.sha1(f"{run}|{rows}|{names}".encode()).hexdigest()[:16]


def model_batch(test: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: test[k] for k in MODEL_FEATURES}


def evaluate(
    scorer,
    storage: Storage,
    run: str,
    stats: dict[str, Any],
    lr_rows: int = 300_000,
    oracle: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metrics of DIN, the baselines and the oracle on the test split; also returns the test arrays."""
    hist_len, num_keywords = int(stats["hist_len"]), int(stats["num_keywords"])
    test_files = split_files(storage, run, "test")
    test = load_arrays(test_files, hist_len)
    shows, clicks, lr_train = scan_train(
        split_files(storage, run, "train"), hist_len, num_keywords, lr_rows, int(stats["train"]["rows"]), seed
    )
    users, labels = test["did_index"], test["label"]
    models: dict[str, Any] = {"din": click_metrics(users, labels, scorer.score(model_batch(test)))}
    models["popularity"] = click_metrics(users, labels, popularity_scores(shows, clicks, test["target_kwi"]))
    lr = logistic_regression_scores(lr_train, test, num_keywords)
    if lr is not None:
        models["logistic_regression"] = click_metrics(users, labels, lr)
    if oracle:
        truth = oracle_scores(storage, test, list(stats.get("keywords") or []),
                              int(stats.get("interval_time_in_seconds", 86400)))
        if truth is not None:
            models["oracle"] = click_metrics(users, labels, truth)
    out: dict[str, Any] = {
        "samples_run": run,
        "test_rows": int(len(labels)),
        "test_positives": int(labels.sum()),
        "test_users": int(len(np.unique(users))),
        "test_fingerprint": test_fingerprint(run, test_files, len(labels)),
        "lr_train_rows": int(len(lr_train.get("label", []))),
        "models": models,
    }
    if "oracle" in models:
        out["din_over_oracle_auc"] = models["din"]["auc"] / models["oracle"]["auc"]
    return out, test
