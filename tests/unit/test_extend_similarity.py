"""Top-N mean similarity against a brute-force NumPy oracle; selection and audience size."""

import numpy as np
import pyarrow as pa
import pytest

from app.extend.kernel import l2_normalize, top_n_mean_numpy, top_n_mean_tf
from app.extend.selection import audience_size, block_candidates, select_top
from app.extend.similarity import score_batch, vectors


def oracle(users, seeds, n):
    sims = users.astype(np.float64) @ seeds.astype(np.float64).T
    n = min(n, seeds.shape[0])
    return np.sort(sims, axis=1)[:, -n:].mean(axis=1)


@pytest.mark.parametrize(
    "n_users,n_seeds,top_n,user_block,seed_block",
    [
        (300, 1000, 10, 64, 128),  # many seed blocks: the threshold path
        (257, 50, 10, 100, 7),  # ragged blocks
        (40, 5, 10, 16, 2),  # fewer seeds than N: mean over all seeds
        (10, 1, 3, 4, 4),
        (100, 300, 1, 33, 64),
    ],
)
def test_top_n_mean_matches_oracle(n_users, n_seeds, top_n, user_block, seed_block):
    rng = np.random.default_rng(n_users + n_seeds)
    users = l2_normalize(rng.normal(size=(n_users, 12)))
    seeds = l2_normalize(rng.normal(size=(n_seeds, 12)))
    got = top_n_mean_numpy(users, seeds, top_n, user_block=user_block, seed_block=seed_block)
    np.testing.assert_allclose(got, oracle(users, seeds, top_n), atol=1e-5)


def test_top_n_mean_with_ties():
    # integer-valued vectors: many exactly equal similarities, ties across block boundaries
    rng = np.random.default_rng(3)
    users = rng.integers(0, 2, size=(200, 6)).astype(np.float32)
    seeds = rng.integers(0, 2, size=(500, 6)).astype(np.float32)
    seeds[100:300] = seeds[0]  # 200 identical seeds spread over several blocks
    got = top_n_mean_numpy(users, seeds, 10, user_block=32, seed_block=64)
    np.testing.assert_allclose(got, oracle(users, seeds, 10), atol=1e-5)
    # normalized: a user equal to the repeated seed has its 10 best similarities all equal to 1
    seeds_n = l2_normalize(seeds)
    assert top_n_mean_numpy(seeds_n[:1], seeds_n, 10, 1, 64)[0] == pytest.approx(1.0, abs=1e-6)


def test_tf_backend_matches_oracle():
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    users = l2_normalize(rng.normal(size=(70, 8)))
    seeds = l2_normalize(rng.normal(size=(90, 8)))
    got = top_n_mean_tf(users, seeds, 10, user_block=32, seed_block=40)
    np.testing.assert_allclose(got, oracle(users, seeds, 10), atol=1e-5)


def test_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize(
    "found,size,pct,expected",
    [(100, None, 500.0, 500), (100, 42, None, 42), (3, None, 150.0, 5), (1000, None, None, 5000), (7, None, 100.0, 7)],
)
def test_audience_size(found, size, pct, expected):
    assert audience_size(found, size, pct, default_percentage=500.0) == expected


def test_block_candidates_keeps_ties_with_mth():
    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.5, 0.2], dtype=np.float32)
    assert sorted(block_candidates(scores, 2).tolist()) == [1, 2, 3, 4]
    assert sorted(block_candidates(scores, 10).tolist()) == list(range(6))


def test_select_top_excludes_seeds_and_breaks_ties_by_did():
    dids = np.array(["d", "a", "c", "b", "s1"])
    scores = np.array([0.5, 0.5, 0.7, 0.5, 0.99], dtype=np.float32)
    out = select_top(dids, scores, 3, exclude=np.array(["s1"]))
    assert out.column("did").to_pylist() == ["c", "a", "b"]
    assert out.column("rank").to_pylist() == [1, 2, 3]


def _table(dids, vecs):
    flat = pa.array(vecs.astype(np.float32).reshape(-1))
    return pa.table({"did": dids, "scores": pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])})


def test_score_batch_excludes_seeds_and_keeps_top_m():
    rng = np.random.default_rng(5)
    vecs = l2_normalize(rng.normal(size=(50, 6)))
    dids = [f"u{i}" for i in range(50)]
    seeds = vecs[:5]
    out = score_batch(_table(dids, vecs), seeds, np.array(dids[:5]), top_n=3, m=10, sample=0)
    assert not set(out.column("did").to_pylist()) & set(dids[:5])
    expected = oracle(vecs[5:], seeds, 3)
    top10 = set(np.array(dids[5:])[np.argsort(-expected)[:10]])
    assert set(out.column("did").to_pylist()) == top10
    np.testing.assert_allclose(vectors(_table(dids, vecs)), vecs, atol=1e-7)


def test_score_batch_sample_is_uniform_and_can_overlap_candidates():
    """The report's population distribution must not skip the top users: a row is flagged
    ``candidate`` (for the selector) and/or ``sampled`` (uniform, for the distribution)."""
    rng = np.random.default_rng(7)
    vecs = l2_normalize(rng.normal(size=(200, 6)))
    dids = [f"u{i}" for i in range(200)]
    out = score_batch(_table(dids, vecs), vecs[:5], np.array(dids[:5]), top_n=3, m=195, sample=195,
                      rng=np.random.default_rng(0))
    cand, samp = out.column("candidate").to_numpy(zero_copy_only=False), out.column("sampled").to_numpy(zero_copy_only=False)
    assert cand.all() and samp.all() and out.num_rows == 195  # everything is both, nothing twice
    small = score_batch(_table(dids, vecs), vecs[:5], np.array(dids[:5]), top_n=3, m=10, sample=50,
                        rng=np.random.default_rng(0))
    flags = small.to_pydict()
    assert sum(flags["candidate"]) == 10 and sum(flags["sampled"]) == 50
    assert len(set(flags["did"])) == small.num_rows
