"""What ``POST /score`` computes: DIN scores of known dids against every keyword.

The scoring deployment receives a *loader* (``storage -> DidScorer``) so tests pass a fake. The
default loader, :func:`load_din_scorer`, loads the current DIN model (app.train.export) and builds
an in-memory did -> history-features index from the train-ready table (the same latest window the
score generator uses), so a request costs one index lookup plus one batched model call. Dids without
history are reported as unknown, never as an error for the whole request.

:func:`load_score_table` is the alternative for the lowest latency: it serves the precomputed
current score table (no TensorFlow in the replica), at the price of lagging a newer model.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from app import constants as C
from app.storage import Storage

log = logging.getLogger(__name__)
FEATURES = ("age", "gender", "hist_kwi", "hist_show_counts", "hist_click_counts")


class DidScorer(Protocol):
    version: str
    keywords: list[str]

    def score_dids(self, dids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n_known, K) float32, positions (n_known,) of the known dids in ``dids``)."""


class IndexedScorer:
    """Dids -> rows of an in-memory feature table, scored by ``score_rows(rows) -> (n, K)``."""

    def __init__(self, version: str, keywords: list[str], dids: list[str], score_rows: Any):
        self.version = version
        self.keywords = list(keywords)
        self.index = {d: i for i, d in enumerate(dids)}
        self._score_rows = score_rows

    def score_dids(self, dids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pos, rows = [], []
        for i, did in enumerate(dids):
            row = self.index.get(did)
            if row is not None:
                pos.append(i)
                rows.append(row)
        if not rows:
            return np.zeros((0, len(self.keywords)), np.float32), np.zeros(0, np.int64)
        scores = np.asarray(self._score_rows(np.asarray(rows, np.int64)), dtype=np.float32)
        return scores, np.asarray(pos, np.int64)


def split_batch(requests: list[list[str]], scorer: DidScorer) -> list[dict[str, Any]]:
    """Score the dids of several requests in one call and hand each request its own rows."""
    flat = [d for dids in requests for d in dids]
    scores, pos = scorer.score_dids(flat)
    out, start, cursor = [], 0, 0
    for dids in requests:
        end = start + len(dids)
        stop = cursor + int(np.searchsorted(pos[cursor:], end))
        local = pos[cursor:stop] - start
        known = set(local.tolist())
        out.append(
            {
                "dids": [dids[i] for i in local],
                "scores": scores[cursor:stop],
                "unknown": [d for i, d in enumerate(dids) if i not in known],
            }
        )
        start, cursor = end, stop
    return out


def select_keywords(keywords: list[str], wanted: list[str] | None) -> tuple[list[str], list[int] | None]:
    """Column indices of the wanted keywords (None = all); ValueError names unknown ones."""
    if not wanted:
        return keywords, None
    where = {k: i for i, k in enumerate(keywords)}
    unknown = [k for k in wanted if k not in where]
    if unknown:
        raise ValueError(f"unknown keyword(s) {unknown[:10]}; the model knows {len(keywords)} keywords")
    return list(wanted), [where[k] for k in wanted]


# ---------------------------------------------------------------- default loaders
def history_features(storage: Storage, hist_len: int, samples_run: str = "default") -> dict[str, np.ndarray]:
    """did + DIN inputs of every train-ready user's latest window, exactly as the score generator
    builds them (app.data.samples.latest_history over the samples' history length)."""
    from app.data.samples import latest_history
    from app.extend.scores import history_window

    length = int(history_window(storage, samples_run)["length"])
    table = storage.read_table(C.T_TRAINREADY)
    users = latest_history(table, length, hist_len)
    return {C.DID: np.asarray(users[C.DID]).astype(str), **{k: np.asarray(users[k]) for k in FEATURES}}


def load_din_scorer(storage: Storage, samples_run: str = "default") -> IndexedScorer:
    """Current DIN model + in-memory did -> history index; ModelNotReady if there is no model."""
    from app.train.export import load_current_scorer

    version, batch_scorer = load_current_scorer(storage, name="din")
    users = history_features(storage, batch_scorer.hist_len, samples_run)
    features = {name: users[name] for name in FEATURES}

    def score_rows(rows: np.ndarray) -> np.ndarray:
        return batch_scorer.score_all_keywords({name: arr[rows] for name, arr in features.items()})

    log.info("scorer: DIN %s, %d users, %d keywords", version, len(users[C.DID]), len(batch_scorer.keywords))
    return IndexedScorer(version, batch_scorer.keywords, users[C.DID].tolist(), score_rows)


def load_score_table(storage: Storage, samples_run: str = "default") -> IndexedScorer:
    """The current score table (did -> precomputed scores): no TensorFlow, lags a newer model."""
    from app.extend.scores import resolve_score_table

    version, _ = resolve_score_table(storage)
    table = storage.read_table(f"scores/{version}", columns=[C.DID, "scores"])
    keywords = storage.read_json(f"scores/{version}/keywords.json")
    flat = table.column("scores").combine_chunks()
    matrix = flat.values.to_numpy(zero_copy_only=False).reshape(table.num_rows, -1).astype(np.float32)
    return IndexedScorer(
        f"score-table:{version}", keywords, table.column(C.DID).to_pylist(), lambda rows: matrix[rows]
    )


def synthetic_scorer(storage: Storage, samples_run: str = "default", users: int = 100_000,
                     keywords: int = 32) -> IndexedScorer:
    """Users ``u0..u{n-1}`` x ``kw1..kwK`` with fixed random scores: the service and its load test
    without a trained model (``scorer_loader: app.serve.scoring:synthetic_scorer``)."""
    rng = np.random.default_rng(0)
    table = rng.random((users, keywords), dtype=np.float32)
    return IndexedScorer("synthetic", [f"kw{k + 1}" for k in range(keywords)],
                         [f"u{i}" for i in range(users)], lambda rows: table[rows])
