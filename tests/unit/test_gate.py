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


@pytest.mark.parametrize(
    "din, lr, pop, current, scorer, promote",
    [
        (0.70, 0.69, 0.60, None, "din", True),  # DIN beats both baselines
        (0.645, 0.643, 0.62, None, "din", True),
        (0.643, 0.643, 0.62, None, "logistic_regression", True),  # a tie does not beat LR
        (0.424, 0.660, 0.547, None, "logistic_regression", True),  # the real-data failure: LR serves
        (0.424, 0.500, 0.547, None, None, False),  # nothing beats popularity: nothing published
        (0.60, None, 0.65, None, None, False),  # no regression and DIN below popularity
        (0.70, 0.69, 0.60, 0.72, "din", False),  # beats its baselines, not the current model
        (0.60, 0.66, 0.55, 0.65, "logistic_regression", True),  # LR beats the current model
    ],
)
def test_gate_never_promotes_a_model_its_baselines_beat(din, lr, pop, current, scorer, promote):
    baselines = {"popularity": pop, **({} if lr is None else {"logistic_regression": lr})}
    d = decide("v1", din, None if current is None else "v0", current, 0.0, baselines)
    assert (d.scorer, d.promote) == (scorer, promote), d.reason
    if scorer == "logistic_regression":
        assert "does not beat" in d.reason and "serves instead" in d.reason
        assert d.scorer_auc == lr
    if scorer is None:
        assert "cannot tell users apart" in d.reason


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
    assert "din v3 REFUSED (scorer din)" in out and "0.7200 does not beat current 0.7500" in out


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


def test_gate_registers_the_regression_path_when_it_serves(storage):
    d = apply_gate(storage, "din", "v1", 0.42, lambda s: s.auc, {"test_fingerprint": "A"},
                   load_scorer=_fake_loader({}), baselines={"logistic_regression": 0.66, "popularity": 0.55})
    assert d.promote and d.scorer == "logistic_regression"
    version, info = Registry(storage).current_model("din")
    assert version == "v1" and info["path"] == "models/din/v1/logistic_regression"
    assert info["scorer"] == "logistic_regression" and info["test_auc"] == 0.66 and info["din_auc"] == 0.42
    assert storage.read_json("models/din/v1/gate.json")["baselines"]["popularity"] == 0.55
