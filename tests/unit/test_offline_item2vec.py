"""Sessions and item2vec: session cutting rules, and vectors that recover planted item groups."""

from __future__ import annotations

import numpy as np

from app.offline import item2vec as W
from app.offline.config import Word2VecConfig


def test_sessions_cut_on_gap_and_collapse_repeats():
    users = np.array([1, 1, 1, 1, 1, 2, 2, 1])
    items = np.array([10, 10, 11, 12, 13, 20, 21, 14])
    times = np.array([0, 5, 10, 5000, 5010, 0, 99999, 5020])
    t = W.sessions(users, items, times, max_gap=1800).to_pydict()
    assert t["userid"] == [1, 1, 2, 2]
    assert t["items"] == [[10, 11], [12, 13, 14], [20], [21]]
    assert t["session_start"] == [0, 5000, 0, 99999]
    t = W.sessions(users, items, times, max_gap=-1, min_session_items=2).to_pydict()
    assert t["items"] == [[10, 11, 12, 13, 14], [20, 21]]


def test_item2vec_neighbours_share_the_planted_group():
    rng = np.random.default_rng(0)
    groups, per_group = 4, 10
    sentences = []
    for _ in range(1500):
        g = rng.integers(groups)
        sentences.append([str(g + groups * i) for i in rng.integers(0, per_group, 6)])
    cfg = Word2VecConfig(min_word_count=1, vector_size=16, window=5, epochs=5, seed=1, top_n=5)
    ids, vectors = W.fit_word2vec(sentences, cfg, threads=1)
    assert sorted(ids.tolist()) == list(range(groups * per_group)) and vectors.shape == (40, 16)
    near = W.nearest_items(ids, vectors, 5).to_pydict()
    same = np.array(near["itemid"]) % groups == np.array(near["similar_itemid"]) % groups
    assert same.mean() > 0.9  # chance: 9/39
    assert all(a != b for a, b in zip(near["itemid"], near["similar_itemid"], strict=True))
