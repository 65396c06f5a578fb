"""Evaluation gate: a new model version becomes current only if it beats the current one.

"Beats" means a higher test AUC on the *same* test set: the current model is re-scored on the new
version's test samples (its stored number may come from an older split). With no current version
the new one is promoted. The decision, with both numbers, is printed, written to
``<model dir>/gate.json`` and stored with the version in ``registry.json`` (which replaces the
seed's Zookeeper entry); refused versions are registered too, just not made current.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from app.errors import LookalikeError, ModelNotReady
from app.registry import Registry
from app.storage import Storage
from app.train.export import BatchScorer, model_dir

log = logging.getLogger(__name__)
GATE_FILE = "gate.json"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    new_version: str
    new_auc: float
    current_version: str | None
    current_auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    new_version: str,
    new_auc: float,
    current_version: str | None,
    current_auc: float | None,
    min_improvement: float = 0.0,
) -> GateDecision:
    """The pure rule: promote iff there is no usable current AUC or ``new > current + margin``."""
    args = dict(
        new_version=new_version, new_auc=new_auc, current_version=current_version, current_auc=current_auc
    )
    if new_auc is None or math.isnan(new_auc):
        return GateDecision(promote=False, reason="new model has no test AUC", **args)
    if current_version is None:
        return GateDecision(promote=True, reason="no current model", **args)
    if current_auc is None or math.isnan(current_auc):
        return GateDecision(
            promote=True, reason="current model could not be evaluated on this test set", **args
        )
    if new_auc > current_auc + min_improvement:
        return GateDecision(
            promote=True, reason=f"test AUC {new_auc:.4f} beats current {current_auc:.4f}", **args
        )
    return GateDecision(
        promote=False,
        reason=f"test AUC {new_auc:.4f} does not beat current {current_auc:.4f} (+{min_improvement})",
        **args,
    )


def apply_gate(
    storage: Storage,
    name: str,
    version: str,
    new_auc: float,
    score_current: Callable[[BatchScorer], float],
    info: dict[str, Any],
    min_improvement: float = 0.0,
    load_scorer: Callable[[str], Any] = BatchScorer.load,
) -> GateDecision:
    """Decide, store the decision (gate.json + registry entry) and print it.

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
    decision = decide(version, new_auc, current_version, current_auc, min_improvement)
    storage.write_json(posixpath.join(model_dir(name, version), GATE_FILE), decision.to_dict())
    registry.add_model_version(
        name, version, {**info, "gate": decision.to_dict()}, make_current=decision.promote
    )
    verdict = "PROMOTED" if decision.promote else "REFUSED"
    log.info(
        "gate: %s %s %s: new AUC %.4f vs current %s AUC %s (%s)", name, version, verdict, new_auc,
        current_version or "-", "-" if current_auc is None else f"{current_auc:.4f}", decision.reason,
    )
    return decision
