"""What ``POST /score`` computes: DIN scores of known dids against every keyword.

The scoring deployment receives a *loader* (``storage -> DidScorer``) so tests pass a fake. The
default loader, :func:`load_din_scorer`, loads the current DIN model (app.train.export) and builds
an in-memory did -> history-features index from the train-ready table (the same latest window the
score generator uses), so a request costs one index lookup plus one batched model call. Dids without
history are reported as unknown, never as an error for the whole request.

:func:`load_score_table` serves the precomputed score table instead (no TensorFlow in the
replica). :class:`CurrentScoreTable` is the ingress's fast path: that table, but only while it was
made by the current model, so its answers are exactly the current DIN's.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from app import constants as C
from app.errors import LookalikeError
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


def load_score_table(storage: Storage, samples_run: str = "default", version: str | None = None) -> IndexedScorer:
    """The current (or given) score table (did -> precomputed scores): no TensorFlow; it lags a
    newer model (see :class:`CurrentScoreTable` for the version check)."""
    from app.extend.scores import resolve_score_table

    version, _ = resolve_score_table(storage, version)
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


class CurrentScoreTable:
    """``POST /score``'s fast path: the current model's score table, held by the ingress replica.

    The score generator (app.extend.scores) materializes DIN's output for every train-ready user
    and every keyword, built from the same latest history window :func:`load_din_scorer` builds.
    While the registry's current score table was made by the registry's current model version,
    a lookup in it *is* that model's answer, with no TensorFlow call and no second Serve hop (both
    measured: the hop alone cost a third of the no-op's requests/s at concurrency 1, one DIN call
    for 1 did x 30 keywords about 4 ms on this 2-core machine). When the table is missing, was made
    by another model, or lacks a requested did, the caller falls back to the live DIN scorer.

    :meth:`refresh` re-reads the registry (cheap) and loads a new table only when the pair
    (table version, model version) changed; the swap is a single attribute assignment.
    """

    def __init__(self, storage: Storage, model_name: str = "din"):
        self.storage = storage
        self.model_name = model_name
        self.key: tuple[str, str] | None = None  # (table version, model version) loaded
        self.scorer: IndexedScorer | None = None
        self.reason = "not loaded"

    def refresh(self) -> bool:
        """Follow the registry; True when the usable table changed."""
        from app.extend.scores import resolve_score_table
        from app.registry import Registry

        try:
            model_version, _ = Registry(self.storage).current_model(self.model_name)
            table_version, info = resolve_score_table(self.storage)
        except (LookalikeError, OSError) as exc:
            return self._disable(f"no current model or score table: {exc}")
        if info.get("model_version") != model_version:
            return self._disable(
                f"score table {table_version} was made by model {info.get('model_version')}, "
                f"the current model is {model_version}"
            )
        key = (table_version, model_version)
        if key == self.key:
            return False
        try:
            loaded = load_score_table(self.storage, version=table_version)
        except (LookalikeError, OSError) as exc:
            return self._disable(f"score table {table_version} unreadable: {exc}")
        loaded.version = model_version
        self.scorer, self.key, self.reason = loaded, key, "ok"
        log.info("score table %s of model %s: %d users", table_version, model_version, len(loaded.index))
        return True

    def _disable(self, reason: str) -> bool:
        changed = self.scorer is not None
        self.scorer, self.key, self.reason = None, None, reason
        return changed

    def score(self, dids: list[str], keywords: list[str] | None) -> dict[str, Any] | None:
        """The /score answer when every did is in the table, else None (ask the live scorer).

        ValueError for unknown keywords (the live path would refuse them the same way).
        """
        scorer = self.scorer
        if scorer is None:
            return None
        names, cols = select_keywords(scorer.keywords, keywords)
        scores, pos = scorer.score_dids(dids)
        if len(pos) != len(dids):
            return None
        if cols is not None:
            scores = scores[:, cols]
        return {"model_version": scorer.version, "keywords": names, "dids": list(dids),
                "scores": scores, "unknown": [], "source": "score_table"}
