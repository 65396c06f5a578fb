"""Offline models against the planted truth of generated logs (app/offline/generate.py).

- item2vec / similar items: the share of each item's neighbours in its own planted group
  (chance: about 1 / n_groups);
- association rules: the share of rules whose items all lie in one planted bundle (precision)
  and the share of bundle rules ``(bundle minus one item) -> item`` that were found (recall);
- user clusters: how many users' clusters are their favourite group (:func:`cluster_accuracy`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def neighbour_precision(nearest: pa.Table, n_groups: int, column: str = "similar_itemid") -> float:
    """Share of (item, neighbour) rows whose two items share a planted group."""
    a = nearest["itemid"].to_numpy()
    b = nearest[column].to_numpy()
    return float(np.mean(a % n_groups == b % n_groups)) if len(a) else float("nan")


def rule_quality(rules: pa.Table, bundles: list[list[list[int]]]) -> dict[str, Any]:
    """Precision of the rules against the planted bundles, and recall of the full-bundle rules."""
    bundle_of = {i: (g, k) for g, group in enumerate(bundles) for k, b in enumerate(group) for i in b}
    found = set()
    inside = 0
    for ante, cons in zip(rules["antecedent"].to_pylist(), rules["consequent"].to_pylist(), strict=True):
        owners = {bundle_of.get(x) for x in [*ante, cons]}
        if len(owners) == 1 and None not in owners:
            inside += 1
            found.add((tuple(sorted(ante)), cons))
    wanted = {(tuple(sorted(set(b) - {i})), i) for group in bundles for b in group for i in b}
    n = rules.num_rows
    return {"rules": n, "precision": inside / n if n else float("nan"),
            "bundle_rule_recall": len(found & wanted) / len(wanted) if wanted else float("nan")}


def cluster_accuracy(user_clusters: pa.Table, favourite: list[int]) -> dict[str, float]:
    """``rows_in_favourite``: share of (user, cluster) rows whose cluster ``dim<g>`` is the user's
    favourite group; ``favourite_found``: share of clustered users with their favourite among their
    clusters (a user can be in several: a few sessions outside the favourite group can put a
    user above the average share of another group too)."""
    users = user_clusters["userid"].to_numpy()
    groups = np.array([int(str(c).removeprefix("dim")) for c in user_clusters["cluster"].to_pylist()])
    hit = np.asarray(favourite)[users] == groups
    if not len(users):
        return {"rows_in_favourite": float("nan"), "favourite_found": float("nan")}
    found = np.unique(users[hit])
    return {"rows_in_favourite": float(hit.mean()), "favourite_found": float(len(found) / len(np.unique(users)))}
