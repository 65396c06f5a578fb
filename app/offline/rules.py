"""Association rules (spec 003): basket analysis, then FP-growth frequent item sets and rules.

- ``basket-analysis``: the client's add-to-basket (``add_to_basket_type``) and
  remove-from-basket (``remove_from_basket_type``) events, each user's cut into sessions where
  two events are more than ``max_intra_session_gap_secs`` apart (-1: never). A session's basket
  is every item whose *last* event in the session is an add (add, remove, add again: in the
  basket). Users outside ``[min_actions_per_user, max_actions_per_user]`` basket events are left
  out, and so are empty baskets (one Ray task). Table ``baskets``: ``userid, session_start, items`` (sorted).
- ``fpgrowth``: frequent item sets of the current baskets with FP-growth (Han, Pei and Yin,
  SIGMOD 2000; mlxtend's implementation, the spec uses Spark MLlib's) at ``min_support`` (a
  fraction of the baskets), up to ``max_item_set_size`` items, then the spec's rules
  ``itemset -> item``: one item as the consequent, the rest as the antecedent, kept when
  ``confidence >= min_confidence``, ``lift >= min_lift``, ``interest = confidence - support of
  the consequent >= min_interest`` and the whole item set occurs at least ``min_item_set_freq``
  times. Tables ``item_sets`` (items, support, count) and ``rules`` (antecedent, consequent,
  support, confidence, lift, interest, count).

Items below ``min_support`` on their own cannot be in a frequent set; they are dropped before the
one-hot matrix is built, so its width is the number of frequent items, not the catalogue. The
mining runs in one Ray task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from app.offline import common as O
from app.offline.config import BasketAnalysisConfig, FpGrowthConfig
from app.storage import Storage


def baskets(users: np.ndarray, items: np.ndarray, types: np.ndarray, times: np.ndarray, max_gap: int,
            add_type: int, remove_type: int) -> pa.Table:
    """``userid, session_start, items`` of the basket events (module docstring)."""
    keep = (types == add_type) | (types == remove_type)
    users, items, types, times = users[keep], items[keep], types[keep], times[keep]
    order = np.lexsort((np.arange(len(users)), times, users))  # stable: ties keep log order
    u, it, ty, t = users[order], items[order], types[order], times[order]
    n = len(u)
    new = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
    if max_gap >= 0 and n:
        new[1:] |= (t[1:] - t[:-1]) > max_gap
    sid = np.cumsum(new) - 1
    starts = t[new]
    owners = u[new]
    df = pd.DataFrame({"sid": sid, "item": it, "type": ty, "pos": np.arange(n)})
    last = df.sort_values("pos").groupby(["sid", "item"], sort=True).tail(1)
    inside = last[last["type"] == add_type].sort_values(["sid", "item"])
    if inside.empty:
        return pa.table({O.USER: pa.array([], pa.int64()), "session_start": pa.array([], pa.int64()),
                         "items": pa.array([], pa.list_(pa.int64()))})
    s = inside["sid"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    offsets = np.r_[bounds, len(s)].astype(np.int32)
    sessions = s[bounds]
    return pa.table({O.USER: pa.array(owners[sessions]), "session_start": pa.array(starts[sessions], pa.int64()),
                     "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(inside["item"].to_numpy()))})


def run_basket_analysis(cfg: BasketAnalysisConfig, storage: Storage) -> dict[str, Any]:
    """The client's baskets per session; written and registered."""
    types = pa.array([cfg.add_to_basket_type, cfg.remove_from_basket_type], pa.int32())
    actions, days = O.read_actions(storage, cfg.input_path, cfg.client, cfg.start_day, cfg.days,
                                   columns=[O.USER, O.ITEM, O.TYPE, O.TIMESTAMP],
                                   filter=pc.field(O.TYPE).isin(types))
    actions = O.user_activity_filter(actions, cfg.min_actions_per_user, cfg.max_actions_per_user)
    from app.offline.tasks import run_one

    table = run_one(baskets, actions[O.USER].to_numpy(), actions[O.ITEM].to_numpy(), actions[O.TYPE].to_numpy(),
                    actions[O.TIMESTAMP].cast(pa.int64()).to_numpy(), cfg.max_intra_session_gap_secs,
                    cfg.add_to_basket_type, cfg.remove_from_basket_type)
    writer = O.ModelWriter(storage, cfg, "basket-analysis")
    writer.write("baskets", table)
    sizes = np.diff(table["items"].combine_chunks().offsets.to_numpy()) if table.num_rows else np.zeros(1)
    return writer.commit({"days": [d.isoformat() for d in days], "basket_events": actions.num_rows,
                          "baskets": table.num_rows, "mean_basket_items": round(float(sizes.mean()), 3)})


def mine_rules(transactions: list[list[int]], cfg: FpGrowthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(item_sets, rules) of ``transactions`` with mlxtend's FP-growth (module docstring)."""
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    n = len(transactions)
    empty_sets = pd.DataFrame({"items": pd.Series([], dtype=object), "support": [], "count": []})
    empty_rules = pd.DataFrame(columns=["antecedent", "consequent", "support", "confidence", "lift", "interest", "count"])
    if n == 0:
        return empty_sets, empty_rules
    lengths = np.array([len(t) for t in transactions])
    flat = np.concatenate([np.asarray(t, np.int64) for t in transactions]) if lengths.sum() else np.zeros(0, np.int64)
    item_ids, col = np.unique(flat, return_inverse=True)
    row = np.repeat(np.arange(n), lengths)
    onehot = sp.csr_matrix((np.ones(len(col), bool), (row, col)), shape=(n, len(item_ids)))
    frequent_cols = np.flatnonzero(np.asarray(onehot.sum(axis=0)).ravel() >= cfg.min_support * n)
    if not len(frequent_cols):
        return empty_sets, empty_rules
    onehot = onehot[:, frequent_cols]
    # string column names: mlxtend refuses sparse frames with integer names not starting at 0
    frame = pd.DataFrame.sparse.from_spmatrix(onehot, columns=[str(i) for i in item_ids[frequent_cols]])
    sets = fpgrowth(frame, min_support=cfg.min_support, use_colnames=True, max_len=cfg.max_item_set_size)
    sets["count"] = np.rint(sets["support"] * n).astype(np.int64)
    if sets.empty:
        return empty_sets, empty_rules
    rules = association_rules(sets.drop(columns="count"), num_itemsets=n, metric="confidence",
                              min_threshold=cfg.min_confidence)
    if not rules.empty:
        rules = rules[rules["consequents"].map(len) == 1].copy()
        rules["interest"] = rules["confidence"] - rules["consequent support"]
        rules["count"] = np.rint(rules["support"] * n).astype(np.int64)
        rules = rules[(rules["lift"] >= cfg.min_lift) & (rules["interest"] >= cfg.min_interest)
                      & (rules["count"] >= cfg.min_item_set_freq)]
    out_rules = pd.DataFrame({
        "antecedent": [sorted(int(i) for i in a) for a in rules["antecedents"]] if not rules.empty else [],
        "consequent": [int(next(iter(c))) for c in rules["consequents"]] if not rules.empty else [],
        "support": rules["support"].to_numpy() if not rules.empty else [],
        "confidence": rules["confidence"].to_numpy() if not rules.empty else [],
        "lift": rules["lift"].to_numpy() if not rules.empty else [],
        "interest": rules["interest"].to_numpy() if not rules.empty else [],
        "count": rules["count"].to_numpy() if not rules.empty else [],
    })
    sets = sets[sets["count"] >= cfg.min_item_set_freq]
    out_sets = pd.DataFrame({"items": [sorted(int(i) for i in s) for s in sets["itemsets"]],
                             "support": sets["support"].to_numpy(), "count": sets["count"].to_numpy()})
    return (out_sets.sort_values(["count"], ascending=False, kind="stable").reset_index(drop=True),
            out_rules.sort_values(["confidence", "lift"], ascending=False, kind="stable").reset_index(drop=True))


def run_fpgrowth(cfg: FpGrowthConfig, storage: Storage) -> dict[str, Any]:
    """Item sets and rules of the client's current baskets, mined in a Ray task; written and registered."""
    from app.offline.tasks import run_one

    path = O.upstream_path(storage, cfg, "basket-analysis")
    table = O.read_model_table(storage, "basket-analysis", cfg.client, "baskets", path=path)
    transactions = table["items"].to_pylist()
    sets, rules = run_one(mine_rules, transactions, cfg)
    writer = O.ModelWriter(storage, cfg, "fpgrowth")
    writer.write("item_sets", pa.table({"items": pa.array(sets["items"].tolist(), pa.list_(pa.int64())),
                                        "support": pa.array(sets["support"], pa.float64()),
                                        "count": pa.array(sets["count"], pa.int64())}))
    writer.write("rules", pa.table({
        "antecedent": pa.array(rules["antecedent"].tolist(), pa.list_(pa.int64())),
        "consequent": pa.array(rules["consequent"].tolist(), pa.int64()),
        **{c: pa.array(rules[c].astype(float), pa.float64()) for c in ("support", "confidence", "lift", "interest")},
        "count": pa.array(rules["count"].astype(np.int64), pa.int64()),
    }))
    return writer.commit({"source": path, "baskets": len(transactions), "item_sets": len(sets), "rules": len(rules)})
