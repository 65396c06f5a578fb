"""Planted TFRecord samples for training tests and benchmarks that do not need the data pipeline.

A tiny generative model with a known answer: users belong to latent segments, each segment has an
interest profile over keywords; a user's history is drawn from that profile, and the click
probability of (user, keyword) is ``sigmoid(base + interest[segment, keyword] + popularity)``. So
a model that reads the history (DIN) can beat keyword popularity, and the true probabilities are
known (returned as the oracle). Writes exactly the layout the data pipeline writes:
``<root>/samples/<run>/{train,test}/part-*.tfrecord`` and ``stats.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.data.tfrecord import write_tfrecord_file
from app.storage import Storage


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def planted_samples(
    n_users: int,
    num_keywords: int = 30,
    hist_len: int = 8,
    samples_per_user: int = 10,
    segments: int = 5,
    seed: int = 0,
    user_offset: int = 0,
    model: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """(sample columns, true click probability per sample, planted model)."""
    rng = np.random.default_rng(seed)
    k = num_keywords - 1  # keyword indices 1..k
    if model is None:
        m_rng = np.random.default_rng(12345)
        model = {
            "interest": m_rng.normal(0, 1.6, (segments, k)),
            "popularity": m_rng.normal(0, 0.7, k),
        }
    interest, pop = model["interest"], model["popularity"]
    seg = rng.integers(0, segments, n_users)
    age = (seg * 3 + rng.integers(0, 3, n_users)) % 20
    gender = rng.integers(0, 2, n_users)
    p_user = _sigmoid(-2.0 + interest[seg] + 0.5 * pop)  # (U, k)

    # history: distinct keywords drawn by interest, most recent first, 0-padded
    n_hist = rng.integers(1, hist_len + 1, n_users)
    gumbel = rng.gumbel(size=(n_users, k)) + interest[seg] + pop
    ranked = np.argsort(-gumbel, axis=1)[:, :hist_len] + 1
    valid = np.arange(hist_len)[None, :] < n_hist[:, None]
    hist_kwi = np.where(valid, ranked, 0)
    shows = np.where(valid, rng.poisson(3, (n_users, hist_len)) + 1, 0)
    p_hist = np.take_along_axis(p_user, np.maximum(hist_kwi - 1, 0), axis=1)
    clicks = np.where(valid, rng.binomial(shows, p_hist), 0)

    # targets by popularity; labels from the true probability
    n = n_users * samples_per_user
    users = np.repeat(np.arange(n_users), samples_per_user)
    pop_p = np.exp(pop) / np.exp(pop).sum()
    target = rng.choice(k, size=n, p=pop_p) + 1
    prob = p_user[users, target - 1]
    label = (rng.random(n) < prob).astype(np.int64)
    cols = {
        "did_index": users + user_offset,
        "age": age[users],
        "gender": gender[users],
        "hist_kwi": hist_kwi[users],
        "hist_show_counts": shows[users],
        "hist_click_counts": clicks[users],
        "target_kwi": target,
        "interval_starting_time": np.full(n, 1_600_000_000, np.int64),
        "label": label,
    }
    return cols, prob, model


def write_planted_run(
    storage: Storage,
    run: str = "default",
    n_users: int = 2000,
    num_keywords: int = 30,
    hist_len: int = 8,
    samples_per_user: int = 10,
    test_fraction: float = 0.3,
    shards: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a planted samples run; returns its stats (plus ``oracle_test_prob`` not in the file)."""
    cols, prob, _ = planted_samples(n_users, num_keywords, hist_len, samples_per_user, seed=seed)
    rng = np.random.default_rng(seed + 1)
    is_test = rng.random(len(prob)) < test_fraction
    stats: dict[str, Any] = {
        "hist_len": hist_len,
        "num_keywords": num_keywords,
        "keywords": [f"kw{i:03d}" for i in range(1, num_keywords)],
        "planted": True,
    }
    for split, mask in (("train", ~is_test), ("test", is_test)):
        idx = np.flatnonzero(mask)
        files = []
        for s, part in enumerate(np.array_split(idx, shards)):
            name = f"part-{s:05d}.tfrecord"
            write_tfrecord_file(
                storage.path(f"samples/{run}/{split}/{name}"), {c: v[part] for c, v in cols.items()}, hist_len
            )
            files.append(name)
        stats[split] = {"rows": int(len(idx)), "positives": int(cols["label"][idx].sum()), "files": files}
    storage.write_json(f"samples/{run}/stats.json", stats)
    return {**stats, "oracle_test_prob": prob[is_test], "test_labels": cols["label"][is_test]}
