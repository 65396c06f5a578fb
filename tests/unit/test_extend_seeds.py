"""Seed reader counts, seed-file parsing, k by silhouette on blobs, config rules."""

import numpy as np
import pytest

from app.config import validate
from app.errors import ConfigError, SeedError
from app.extend.clustering import choose_k
from app.extend.config import ExtendConfig
from app.extend.seeds import parse_seed_lines, read_seeds

KNOWN = np.array([f"u{i}" for i in range(10)])


def test_read_seeds_counts_found_unknown_duplicate():
    s = read_seeds(["u3", "u1", "u3", "x", "u1", "u3", "y", "x"], KNOWN)
    assert s.counts() == {"submitted": 8, "found": 2, "unknown": 2, "duplicate": 4}
    assert s.found_dids.tolist() == ["u3", "u1"]  # first-seen order
    assert s.found_index.tolist() == [3, 1]
    assert sorted(s.unknown_examples) == ["x", "y"]


@pytest.mark.parametrize("seeds,match", [([], "empty"), (["x", "y"], "only 0 of 2"), (["u1"] * 5, "limit")])
def test_read_seeds_errors(seeds, match):
    with pytest.raises(SeedError, match=match):
        read_seeds(seeds, KNOWN, min_found=1, max_seeds=4)


def test_parse_seed_lines():
    text = "did\nu1\n\n# comment\nu2,extra\n \"u3\"\n"
    assert parse_seed_lines(text) == ["u1", "u2", "u3"]
    with pytest.raises(SeedError, match="line 2"):
        parse_seed_lines("u1\nbad id\n")


@pytest.mark.parametrize("k_true", [2, 3, 5])
def test_choose_k_on_separated_blobs(k_true):
    rng = np.random.default_rng(k_true)
    centers = rng.normal(scale=20, size=(k_true, 8))
    x = np.concatenate([c + rng.normal(scale=0.5, size=(60, 8)) for c in centers])
    res = choose_k(x, max_clusters=8, seed=0)
    assert res.k == k_true
    assert res.silhouette > 0.8
    assert sorted(res.sizes) == [60] * k_true
    assert res.warnings == []


def test_choose_k_warns_on_incoherent_seeds():
    x = np.random.default_rng(0).uniform(size=(300, 10))
    res = choose_k(x, max_clusters=6, seed=0, min_silhouette=0.3)
    assert any("incoherent" in w for w in res.warnings)


def test_config_rejects_size_and_percentage_together():
    with pytest.raises(ConfigError, match="not both"):
        validate(ExtendConfig, {"size": 10, "percentage": 200})
    with pytest.raises(ConfigError, match="unknown_key|Extra"):
        validate(ExtendConfig, {"unknown_key": 1})
