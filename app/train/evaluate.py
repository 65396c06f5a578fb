"""Test-split evaluation of DIN against its baselines and the generator's oracle.

- ``din``: the exported model (through :class:`BatchScorer`, i.e. exactly what is served);
- ``popularity`` and ``logistic_regression``: :mod:`app.train.baselines`, fit on the train split;
- ``oracle``: the generator's ground truth. A sample's label is "clicked at least once in the
  target interval", and each of the n shows of that keyword in that interval is clicked with the
  planted probability p(user, keyword), so the true P(label = 1) is ``1 - (1 - p) ** n``; n is read
  from the train-ready table. (Using p alone ignores n, which a model can partly infer from the
  user's activity, and then a trained model beats the "oracle".) Skipped without ground truth.

AUC, GAUC (by did_index, weighted by impressions) and log loss for each, in ``metrics.json``,
and DIN's AUC minus each baseline's with a 95% CI from a bootstrap over test users (samples of
one user move together): ``comparisons``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

from app import constants as C
from app.storage import Storage
from app.train.baselines import baseline_features, fit_logistic_regression, popularity_scores
from app.train.din import MODEL_FEATURES
from app.train.input import load_arrays, make_dataset, split_files
from app.train.metrics import click_metrics, paired_auc_difference

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
    bootstrap: int = 200,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Metrics of DIN, the baselines and the oracle on the test split.

    Returns (metrics, the test arrays, the fitted baselines: ``{"logistic_regression": clf or
    None}``) so that the gate can export the regression when it is the better scorer.
    """
    hist_len, num_keywords = int(stats["hist_len"]), int(stats["num_keywords"])
    test_files = split_files(storage, run, "test")
    test = load_arrays(test_files, hist_len)
    shows, clicks, lr_train = scan_train(
        split_files(storage, run, "train"), hist_len, num_keywords, lr_rows, int(stats["train"]["rows"]), seed
    )
    users, labels = test["did_index"], test["label"]
    scores = {"din": scorer.score(model_batch(test)),
              "popularity": popularity_scores(shows, clicks, test["target_kwi"])}
    clf = fit_logistic_regression(lr_train, num_keywords)
    if clf is not None:
        scores["logistic_regression"] = clf.predict_proba(baseline_features(test, num_keywords))[:, 1]
    models: dict[str, Any] = {name: click_metrics(users, labels, s) for name, s in scores.items()}
    if oracle:
        truth = oracle_scores(storage, test, list(stats.get("keywords") or []),
                              int(stats.get("interval_time_in_seconds", 86400)))
        if truth is not None:
            models["oracle"] = click_metrics(users, labels, truth)
    comparisons = {
        f"din - {name}": paired_auc_difference(users, labels, scores["din"], scores[name], bootstrap, seed)
        for name in ("logistic_regression", "popularity") if name in scores
    }
    out: dict[str, Any] = {
        "samples_run": run,
        "test_rows": int(len(labels)),
        "test_positives": int(labels.sum()),
        "test_users": int(len(np.unique(users))),
        "test_fingerprint": test_fingerprint(run, test_files, len(labels)),
        "lr_train_rows": int(len(lr_train.get("label", []))),
        "models": models,
        "comparisons": comparisons,
    }
    if "oracle" in models:
        out["din_over_oracle_auc"] = models["din"]["auc"] / models["oracle"]["auc"]
    return out, test, {"logistic_regression": clf}
