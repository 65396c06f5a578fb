"""Scoring models against the planted truth: hand-made tables with known answers."""

from __future__ import annotations

import pyarrow as pa
import pytest

from app.offline import truth


def test_rule_quality_precision_and_recall():
    bundles = [[[0, 2, 4]], [[1, 3, 5]]]  # group 0: one bundle, group 1: one bundle
    rules = pa.table({"antecedent": [[0, 2], [1], [0, 1]], "consequent": [4, 3, 2]})
    q = truth.rule_quality(rules, bundles)
    assert q["rules"] == 3 and q["precision"] == pytest.approx(2 / 3)
    assert q["bundle_rule_recall"] == pytest.approx(1 / 6)  # only {0,2} -> 4 of the 6 full-bundle rules


def test_neighbour_precision_and_cluster_accuracy():
    near = pa.table({"itemid": [0, 0, 1], "similar_itemid": [2, 3, 3]})
    assert truth.neighbour_precision(near, 2) == pytest.approx(2 / 3)
    members = pa.table({"userid": [0, 0, 1, 2], "cluster": ["dim1", "dim0", "dim0", "dim0"]})
    acc = truth.cluster_accuracy(members, favourite=[1, 1, 0])
    assert acc == {"rows_in_favourite": 0.5, "favourite_found": pytest.approx(2 / 3)}
