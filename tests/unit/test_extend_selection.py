"""The fast seed matching and top-M selection give exactly what the plain sort-based versions give."""

import numpy as np
import pytest

from app.extend.seeds import read_seeds
from app.extend.selection import select_top


def reference_top(dids, scores, m, exclude=None):
    """The definition: drop the excluded ids, sort every row by (score desc, did asc), keep m."""
    dids, scores = np.asarray(dids).astype(str), np.asarray(scores, dtype=np.float32)
    if exclude is not None:
        keep = ~np.isin(dids, np.asarray(exclude).astype(str))
        dids, scores = dids[keep], scores[keep]
    order = np.lexsort((dids, -scores.astype(np.float64)))[:m]
    return dids[order].tolist(), scores[order].tolist()


def reference_seeds(seeds, known):
    """Seed matching by a stable sort of the known ids (first row of each id)."""
    uniq, first = np.unique(np.asarray(seeds, dtype=object), return_index=True)
    uniq = uniq[np.argsort(first, kind="stable")]
    known = np.asarray(known, dtype=object)
    sorter = np.argsort(known, kind="stable")
    pos = np.clip(np.searchsorted(known, uniq, sorter=sorter), 0, known.size - 1)
    rows = sorter[pos]
    hit = known[rows] == uniq
    return uniq[hit].astype(str).tolist(), rows[hit].tolist(), int((~hit).sum())


@pytest.mark.parametrize("seed", range(6))
def test_select_top_equals_a_full_sort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    dids = np.array([f"u{i}" for i in rng.permutation(n)])
    scores = rng.integers(0, 7, n).astype(np.float32) / 7  # many ties
    exclude = rng.choice(dids, int(rng.integers(0, n + 1)), replace=False) if seed % 2 else None
    for m in (1, 5, n // 2 + 1, n, n + 3):
        got = select_top(dids, scores, m, exclude)
        assert (got.column("did").to_pylist(), got.column("score").to_pylist()) == reference_top(dids, scores, m, exclude)
        assert got.column("rank").to_pylist() == list(range(1, got.num_rows + 1))


@pytest.mark.parametrize("seed", range(6))
def test_read_seeds_equals_sort_matching(seed):
    rng = np.random.default_rng(seed)
    known = np.array([f"d{i}" for i in rng.permutation(300)] + ["d5", "d7"])  # a repeated id: first row wins
    seeds = [f"d{i}" for i in rng.integers(0, 400, 120)]
    got = read_seeds(seeds, known)
    found, rows, unknown = reference_seeds(seeds, known)
    assert got.found_dids.tolist() == found
    assert got.found_index.tolist() == rows
    assert got.unknown == unknown and got.duplicates == len(seeds) - len(set(seeds))
