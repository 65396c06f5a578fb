"""Evaluation gate: which scorer, if any, becomes current for lookalike scoring.

A training run produces two scorers with the same inputs and serving signature: DIN and the
logistic-regression baseline (:mod:`app.train.baselines`). On the run's test set:

1. DIN is the candidate only if its AUC beats every baseline (logistic regression and keyword
   popularity) by more than ``min_improvement``. A model that does not beat its own baselines is
   never promoted, whether or not a current model exists; an AUC below 0.5 never beats popularity.
2. Otherwise the regression is the candidate if it beats popularity: the scorer that serves
   extension is then the best of them, and the decision says why. Popularity itself cannot be the
   scorer: it is the same for every user, so it cannot tell users apart.
3. The candidate becomes current only if it also beats the current scorer re-scored on the *same*
   test set (its stored number may come from an older split); with none current it is promoted.

The decision, with every number, is logged, written to ``<model dir>/gate.json`` and stored with
the version in ``registry.json`` (which replaces the spec's Zookeeper entry). The registry entry's
``path`` is the chosen scorer's directory (``models/din/<v>`` for DIN,
``models/din/<v>/logistic_regression`` for the regression) and ``scorer`` says which it is;
refused versions are registered too, just not made current.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from app.errors import LookalikeError, ModelNotReady
from app.registry import Registry
from app.storage import Storage
from app.train.export import BatchScorer, model_dir

log = logging.getLogger(__name__)
GATE_FILE = "gate.json"
DIN = "din"
LR = "logistic_regression"
POPULARITY = "popularity"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    new_version: str
    #: DIN's test AUC
    new_auc: float
    current_version: str | None
    current_auc: float | None
    #: the scorer this run offers ("din", "logistic_regression") or None when neither qualifies
    scorer: str | None = None
    #: the offered scorer's test AUC
    scorer_auc: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ok(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def choose_scorer(din_auc: float, baselines: dict[str, float], margin: float = 0.0) -> tuple[str | None, str]:
    """(the scorer this run offers, why): DIN if it beats every baseline, else the regression if
    it beats popularity, else None."""
    usable = {k: v for k, v in baselines.items() if _ok(v)}
    pop = usable.get(POPULARITY)
    if not _ok(din_auc):
        beaten_by = "no test AUC"
    else:
        losers = {k: v for k, v in usable.items() if not din_auc > v + margin}
        if not losers:
            vs = ", ".join(f"{k} {v:.4f}" for k, v in sorted(usable.items()))
            return DIN, f"DIN test AUC {din_auc:.4f} beats its baselines ({vs})" if vs else "DIN (no baselines)"
        beaten_by = "AUC " + f"{din_auc:.4f} does not beat " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(losers.items()))
    lr = usable.get(LR)
    if lr is not None and (pop is None or lr > pop + margin):
        return LR, f"DIN {beaten_by}; logistic regression ({lr:.4f}) is the best scorer and serves instead"
    return None, f"DIN {beaten_by}; no scorer beats keyword popularity, which cannot tell users apart"


def decide(
    new_version: str,
    new_auc: float,
    current_version: str | None,
    current_auc: float | None,
    min_improvement: float = 0.0,
    baselines: dict[str, float] | None = None,
) -> GateDecision:
    """The pure rule (module docstring). ``current_auc`` is the current scorer's AUC on this test set."""
    baselines = dict(baselines or {})
    scorer, why = choose_scorer(new_auc, baselines, min_improvement)
    scorer_auc = None if scorer is None else (new_auc if scorer == DIN else baselines[LR])
    args = dict(new_version=new_version, new_auc=new_auc, current_version=current_version,
                current_auc=current_auc, scorer=scorer, scorer_auc=scorer_auc, baselines=baselines)
    if scorer is None:
        return GateDecision(promote=False, reason=why, **args)
    if current_version is None:
        return GateDecision(promote=True, reason=f"{why}; no current model", **args)
    if not _ok(current_auc):
        return GateDecision(promote=True, reason=f"{why}; the current model could not be evaluated on this test set",
                            **args)
    if scorer_auc > current_auc + min_improvement:
        return GateDecision(promote=True, reason=f"{why}; {scorer_auc:.4f} beats current {current_auc:.4f}", **args)
    return GateDecision(promote=False, reason=f"{why}; but {scorer_auc:.4f} does not beat current "
                                              f"{current_auc:.4f} (+{min_improvement})", **args)


def scorer_dir(name: str, version: str, scorer: str | None) -> str:
    """Directory of the scorer a version offers: the model dir (DIN) or its regression subdir."""
    base = model_dir(name, version)
    return base if scorer in (None, DIN) else posixpath.join(base, scorer)


def apply_gate(
    storage: Storage,
    name: str,
    version: str,
    new_auc: float,
    score_current: Callable[[BatchScorer], float],
    info: dict[str, Any],
    min_improvement: float = 0.0,
    load_scorer: Callable[[str], Any] = BatchScorer.load,
    baselines: dict[str, float] | None = None,
) -> GateDecision:
    """Decide, store the decision (gate.json + registry entry) and log it.

    ``score_current`` computes a scorer's test AUC on the new version's test set. If the current
    model cannot be loaded, its stored ``test_auc`` is used when its ``test_fingerprint`` matches
    ``info["test_fingerprint"]`` (same test set); otherwise it counts as unusable.
    """
    registry = Registry(storage)
    current_version: str | None = None
    current_auc: float | None = None
    try:
        current_version, current_info = registry.current_model(name)
    except ModelNotReady:
        pass
    if current_version is not None:
        path = current_info.get("path") or model_dir(name, current_version)
        try:
            current_auc = float(score_current(load_scorer(storage.uri(path))))
        except (LookalikeError, OSError, ValueError) as exc:
            log.warning("gate: cannot re-score current %s %s: %s", name, current_version, exc)
            fingerprint = info.get("test_fingerprint")
            same_test = fingerprint is not None and current_info.get("test_fingerprint") == fingerprint
            if same_test and current_info.get("test_auc") is not None:
                current_auc = float(current_info["test_auc"])
    decision = decide(version, new_auc, current_version, current_auc, min_improvement, baselines)
    storage.write_json(posixpath.join(model_dir(name, version), GATE_FILE), decision.to_dict())
    entry = {**info, "gate": decision.to_dict(), "scorer": decision.scorer, "din_auc": new_auc}
    if decision.scorer is not None:
        entry["path"] = scorer_dir(name, version, decision.scorer)
        entry["test_auc"] = decision.scorer_auc
    registry.add_model_version(name, version, entry, make_current=decision.promote)
    verdict = "PROMOTED" if decision.promote else "REFUSED"
    log.info("gate: %s %s %s (scorer %s): %s", name, version, verdict, decision.scorer or "-", decision.reason)
    return decision
