"""Basket analysis and FP-growth rules: hand-counted supports, planted bundles recovered."""

from __future__ import annotations

import numpy as np
import pytest

from app.offline import rules as R
from app.offline.config import FpGrowthConfig


def test_baskets_keep_items_whose_last_event_is_an_add():
    #            user item type time
    events = [(1, 10, 1, 0), (1, 11, 1, 5), (1, 11, 2, 6), (1, 12, 1, 7), (1, 12, 2, 8), (1, 12, 1, 9),
              (1, 13, 3, 10),                 # a view: not a basket event
              (1, 20, 1, 9000),               # a new session after the gap
              (2, 30, 2, 0)]                  # only a remove: empty basket, dropped
    u, i, t, s = (np.array(c) for c in zip(*events, strict=True))
    out = R.baskets(u, i, t, s, max_gap=3600, add_type=1, remove_type=2).to_pydict()
    assert out == {"userid": [1, 1], "session_start": [0, 9000], "items": [[10, 12], [20]]}


def test_rules_golden_counts():
    tx = [[1, 2], [1, 2], [1, 2, 3], [1], [3]]
    cfg = FpGrowthConfig(min_support=0.4, min_confidence=0.5, min_interest=-1, max_item_set_size=3)
    sets, rules = R.mine_rules(tx, cfg)
    got = {tuple(s): c for s, c in zip(sets["items"], sets["count"], strict=True)}
    assert got == {(1,): 4, (2,): 3, (3,): 2, (1, 2): 3}
    r = {(tuple(a), c): (conf, lift) for a, c, conf, lift in
         zip(rules["antecedent"], rules["consequent"], rules["confidence"], rules["lift"], strict=True)}
    assert r[((2,), 1)] == pytest.approx((1.0, 1.0 / 0.8))
    assert r[((1,), 2)] == pytest.approx((0.75, 0.75 / 0.6))
    # interest = confidence - consequent support: 1 -> 2 has 0.75 - 0.6 = 0.15
    _, strict = R.mine_rules(tx, FpGrowthConfig(min_support=0.4, min_confidence=0.5, min_interest=0.16))
    assert [(a, c) for a, c in zip(strict["antecedent"], strict["consequent"], strict=True)] == [([2], 1)]


def test_planted_bundles_are_the_rules():
    rng = np.random.default_rng(0)
    bundles = [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
    tx = []
    for _ in range(600):
        b = list(bundles[rng.integers(3)])
        if rng.random() < 0.5:
            b.append(int(rng.integers(30, 200)))  # a random extra item
        tx.append(b)
    sets, rules = R.mine_rules(tx, FpGrowthConfig(min_support=0.05, min_confidence=0.5, min_interest=0.1))
    bundle_of = {i: k for k, b in enumerate(bundles) for i in b}
    assert len(rules) == 3 * (6 + 3)  # per bundle: 6 item -> item and 3 pair -> item rules
    for a, c in zip(rules["antecedent"], rules["consequent"], strict=True):
        assert {bundle_of.get(x) for x in [*a, c]} == {bundle_of[c]}
    assert max(len(s) for s in sets["items"]) == 3
