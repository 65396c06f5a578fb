"""Pytest-session fixtures for the extend integration tests (see conftest.py).

``scored_root``: the trained root (current DIN model) with a score table generated and registered.
When the train fixtures are not available, a stand-in scorer (smoothed per-keyword CTR of the
user's own history, no access to the planted truth) keeps the extend tests running.
"""

import numpy as np
import pytest


class HistoryCtrScorer:
    """Stand-in for ``BatchScorer``: score(user, k) = smoothed CTR of k in the user's history."""

    def __init__(self, keywords: list[str], hist_len: int):
        self.keywords = list(keywords)
        self.num_keywords = len(keywords) + 1
        self.hist_len = hist_len

    def score_all_keywords(self, users: dict) -> np.ndarray:
        n, k = len(users["age"]), self.num_keywords - 1
        kwi = np.asarray(users["hist_kwi"], dtype=np.int64)
        shows = np.asarray(users["hist_show_counts"], dtype=np.float64)
        clicks = np.asarray(users["hist_click_counts"], dtype=np.float64)
        s = np.zeros((n, k + 1))
        c = np.zeros((n, k + 1))
        rows = np.repeat(np.arange(n), kwi.shape[1])
        np.add.at(s, (rows, kwi.reshape(-1)), shows.reshape(-1))
        np.add.at(c, (rows, kwi.reshape(-1)), clicks.reshape(-1))
        return ((c[:, 1:] + 0.1) / (s[:, 1:] + 2.0)).astype(np.float32)


def history_scorer_loader(storage, name="din"):
    from app import constants as C

    kw = storage.read_table(C.T_KEYWORDS, columns=[C.KEYWORD, C.KEYWORD_INDEX]).sort_by(C.KEYWORD_INDEX)
    stats = storage.read_json("samples/default/stats.json")
    return "history-ctr", HistoryCtrScorer([str(k) for k in kw.column(C.KEYWORD).to_pylist()], int(stats["hist_len"]))


def _use_fake(root):
    from app.registry import Registry
    from app.storage import Storage

    reg = Registry(Storage(root))
    reg.add_model_version("din", "history-ctr", {"stand_in": True}, make_current=True)


@pytest.fixture(scope="session")
def scored_root(request, ray_local) -> str:
    from app.config import load_config
    from app.extend.config import ExtendConfig
    from app.extend.scores import generate_score_table
    from app.storage import Storage

    try:
        root = request.getfixturevalue("trained_root")
        loader = None
    except pytest.FixtureLookupError:
        root = request.getfixturevalue("generated_root")
        _use_fake(root)
        loader = "tests.integration.fixtures_extend:history_scorer_loader"
    cfg = load_config(ExtendConfig, "configs/smoke/extend.yaml")
    if loader:
        cfg.scores.loader = loader
    generate_score_table(Storage(root), cfg.scores)
    request.config.extend_scores_config = cfg.scores  # the validation test makes as-of tables with it
    return root
