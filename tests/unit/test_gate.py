"""Evaluation gate: the rule, and what it stores in the registry."""

import math

import pytest

from app.errors import SchemaError
from app.registry import Registry
from app.train.gate import apply_gate, decide


@pytest.mark.parametrize(
    "new, cur_version, cur_auc, margin, promote",
    [
        (0.70, None, None, 0.0, True),  # nothing current yet
        (0.71, "v0", 0.70, 0.0, True),
        (0.70, "v0", 0.70, 0.0, False),  # a tie does not beat
        (0.69, "v0", 0.70, 0.0, False),
        (0.705, "v0", 0.70, 0.01, False),  # must beat by the margin
        (0.72, "v0", None, 0.0, True),  # current could not be evaluated
        (math.nan, None, None, 0.0, False),  # no AUC, never promoted
    ],
)
def test_decide(new, cur_version, cur_auc, margin, promote):
    d = decide("v1", new, cur_version, cur_auc, margin)
    assert d.promote is promote
    assert d.new_auc == new or math.isnan(new)
    assert d.current_auc == cur_auc


class FakeScorer:
    def __init__(self, auc):
        self.auc = auc


def _fake_loader(aucs):
    def load(uri):
        version = uri.rstrip("/").rsplit("/", 1)[-1]
        if version not in aucs:
            raise SchemaError(f"{uri} not exported")
        return FakeScorer(aucs[version])

    return load


def test_gate_promotes_better_refuses_worse_and_stores_both_numbers(storage, caplog):
    caplog.set_level("INFO", logger="app.train.gate")
    load = _fake_loader({"v1": 0.70, "v2": 0.75})
    info = {"test_fingerprint": "fp"}
    d1 = apply_gate(storage, "din", "v1", 0.70, lambda s: s.auc, {**info, "test_auc": 0.70}, load_scorer=load)
    assert d1.promote
    # v2 is better than v1 (re-scored on the same test set): promoted
    d2 = apply_gate(storage, "din", "v2", 0.75, lambda s: s.auc, {**info, "test_auc": 0.75}, load_scorer=load)
    assert d2.promote and d2.current_version == "v1" and d2.current_auc == 0.70
    # v3 is worse than v2: refused, v2 stays current, v3 still registered with the decision
    d3 = apply_gate(storage, "din", "v3", 0.72, lambda s: s.auc, {**info, "test_auc": 0.72}, load_scorer=load)
    assert not d3.promote and d3.current_auc == 0.75
    reg = Registry(storage)
    assert reg.current_model("din")[0] == "v2"
    entry = reg.read()["models"]["din"]["versions"]["v3"]
    assert entry["gate"]["promote"] is False and entry["gate"]["current_auc"] == 0.75
    assert storage.read_json("models/din/v3/gate.json")["new_auc"] == 0.72
    out = caplog.text
    assert "v3 REFUSED: new AUC 0.7200 vs current v2 AUC 0.7500" in out


def test_gate_falls_back_to_stored_auc_only_for_the_same_test_set(storage):
    load = _fake_loader({})  # nothing can be re-scored
    apply_gate(
        storage,
        "din",
        "v1",
        0.80,
        lambda s: s.auc,
        {"test_fingerprint": "A", "test_auc": 0.80},
        load_scorer=load,
    )
    same = apply_gate(
        storage, "din", "v2", 0.78, lambda s: s.auc, {"test_fingerprint": "A"}, load_scorer=load
    )
    assert not same.promote and same.current_auc == 0.80
    other = apply_gate(
        storage, "din", "v3", 0.78, lambda s: s.auc, {"test_fingerprint": "B"}, load_scorer=load
    )
    assert other.promote and other.current_auc is None
