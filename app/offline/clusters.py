"""User clusters by dimension and tag affinity (spec 003, "User Clustering Models", "Tag Affinity").

Both compare a user's share of something with the average user's share of it:

- ``cluster-by-dimension``: items carry one dimension (an article type: sports, finance...). A
  user's share of dimension ``d`` is the fraction of their actions on items of ``d``; the average
  share is the mean of that fraction over all users. A user joins cluster ``d`` when their share
  exceeds the average by more than ``delta``; clusters with fewer than ``min_cluster_size``
  users are dropped. Tables ``user_clusters`` (userid, cluster, weight = the user's share) and
  ``clusters`` (cluster, users, mean_share).
- ``tag-affinity``: items carry tags (``tag_separator``-joined). A user's share of tag ``t`` is
  their count of ``t`` over all their tag occurrences; the increase is ``(share - mean share) /
  mean share``. A (user, tag) pair is kept when the user met the tag at least ``min_tag_count``
  times and the increase is at least ``min_pc_increase``; ``tag_filter_path`` (one tag a line)
  keeps only the tags it lists in the output (shares are still over every tag). Table ``user_tags`` (userid, tag, count, weight = share,
  pc_increase).

The spec reads item dimensions and tags over JDBC from the Seldon database; here they come from
an item table (``items_path``: Parquet or CSV, read like the pipeline's raw inputs) with
``itemid`` and the attribute column. Actions on items the table does not know are counted in the
report and otherwise ignored. The computation runs in one Ray task (pandas group-bys).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from app.data.config import RawTable
from app.data.raw_input import read_input_rows
from app.errors import SchemaError
from app.offline import common as O
from app.offline.config import ClusterByDimensionConfig, TagAffinityConfig
from app.storage import Storage


def read_items(storage: Storage, path: str, attr: str) -> pd.DataFrame:
    """``itemid`` (int64) and ``attr`` of the item table; rows with a bad id or no value dropped."""
    rows, _bad = read_input_rows(storage, "items", RawTable(path=path), [O.ITEM, attr])
    df = rows.to_pandas()
    df[O.ITEM] = pd.to_numeric(df[O.ITEM], errors="coerce")
    df = df.dropna(subset=[O.ITEM, attr])
    if df.empty:
        raise SchemaError(f"item table {path!r} has no rows with an integer itemid and a {attr!r} value")
    return df.astype({O.ITEM: "int64"}).drop_duplicates(O.ITEM)


def user_shares(pairs: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per (user, key): ``count``, ``share`` of the user's total, and ``mean_share`` of the key over
    every user (a user without the key counts as share 0)."""
    counts = pairs.groupby([O.USER, key], observed=True).size().rename("count").reset_index()
    totals = counts.groupby(O.USER)["count"].transform("sum")
    counts["share"] = counts["count"] / totals
    n_users = counts[O.USER].nunique()
    mean = counts.groupby(key, observed=True)["share"].sum() / max(n_users, 1)
    counts["mean_share"] = counts[key].map(mean).astype(float)
    return counts


def cluster_by_dimension(actions: pd.DataFrame, items: pd.DataFrame, attr: str, delta: float,
                         min_cluster_size: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(user_clusters, clusters, actions on unknown items) of ``actions`` (userid, itemid)."""
    joined = actions.merge(items[[O.ITEM, attr]], on=O.ITEM, how="left")
    unknown = int(joined[attr].isna().sum())
    shares = user_shares(joined.dropna(subset=[attr]).rename(columns={attr: "cluster"}), "cluster")
    members = shares[shares["share"] - shares["mean_share"] > delta]
    size = members.groupby("cluster").size()
    big = size[size >= min_cluster_size].index
    members = members[members["cluster"].isin(big)]
    clusters = (members.groupby("cluster").agg(users=(O.USER, "size")).join(
        shares.groupby("cluster")["mean_share"].first()).reset_index())
    out = members[[O.USER, "cluster", "share"]].rename(columns={"share": "weight"})
    return out.sort_values([O.USER, "weight"], ascending=[True, False]).reset_index(drop=True), clusters, unknown


def tag_affinity(actions: pd.DataFrame, items: pd.DataFrame, attr: str, separator: str, min_tag_count: int,
                 min_pc_increase: float, keep_tags: set[str] | None) -> tuple[pd.DataFrame, int]:
    """(user_tags, actions on unknown items) of ``actions`` (userid, itemid)."""
    tags = items[[O.ITEM, attr]].copy()
    tags["tag"] = tags[attr].str.split(separator)
    tags = tags.explode("tag")
    tags["tag"] = tags["tag"].str.strip()
    tags = tags[tags["tag"].ne("") & tags["tag"].notna()]
    known = actions[O.ITEM].isin(items[O.ITEM])
    joined = actions[known].merge(tags[[O.ITEM, "tag"]], on=O.ITEM)
    shares = user_shares(joined, "tag")
    shares["pc_increase"] = (shares["share"] - shares["mean_share"]) / shares["mean_share"]
    keep = (shares["count"] >= min_tag_count) & (shares["pc_increase"] >= min_pc_increase)
    if keep_tags is not None:  # shares stay over every tag; the filter only picks what is written
        keep &= shares["tag"].isin(keep_tags)
    out = shares[keep][[O.USER, "tag", "count", "share", "pc_increase"]].rename(columns={"share": "weight"})
    return out.sort_values([O.USER, "pc_increase"], ascending=[True, False]).reset_index(drop=True), int((~known).sum())


def _actions_frame(storage: Storage, cfg: Any) -> tuple[pd.DataFrame, list]:
    actions, days = O.read_actions(storage, cfg.input_path, cfg.client, cfg.start_day, cfg.days,
                                   columns=[O.USER, O.ITEM])
    actions = O.user_activity_filter(actions, cfg.min_actions_per_user, None)
    return actions.to_pandas(), days


def run_cluster_by_dimension(cfg: ClusterByDimensionConfig, storage: Storage) -> dict[str, Any]:
    """Cluster the client's users by item dimension; write and register."""
    from app.offline.tasks import run_one

    actions, days = _actions_frame(storage, cfg)
    items = read_items(storage, cfg.items_path, cfg.dimension_attr)
    members, clusters, unknown = run_one(cluster_by_dimension, actions, items, cfg.dimension_attr, cfg.delta,
                                         cfg.min_cluster_size)
    writer = O.ModelWriter(storage, cfg, "cluster-by-dimension")
    writer.write("user_clusters", pa.Table.from_pandas(members, preserve_index=False))
    writer.write("clusters", pa.Table.from_pandas(clusters, preserve_index=False))
    return writer.commit({"days": [d.isoformat() for d in days], "actions": len(actions),
                          "unknown_item_actions": unknown, "users": int(actions[O.USER].nunique()),
                          "clustered_users": int(members[O.USER].nunique()), "clusters": len(clusters)})


def read_tag_filter(storage: Storage, path: str | None) -> set[str] | None:
    """The tags listed one a line in ``path`` (root-relative, absolute or URI), or None."""
    if not path:
        return None
    from app.offline.actions import _locate

    fs, where, _ = _locate(storage, path)
    try:
        with fs.open_input_stream(where) as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError) as exc:
        raise SchemaError(f"tag filter file {path!r} cannot be read ({exc})") from exc
    return {t.strip() for t in text.splitlines() if t.strip()}


def run_tag_affinity(cfg: TagAffinityConfig, storage: Storage) -> dict[str, Any]:
    """The client's users and the tags they use more than average; write and register."""
    from app.offline.tasks import run_one

    actions, days = _actions_frame(storage, cfg)
    items = read_items(storage, cfg.items_path, cfg.tag_attr)
    keep = read_tag_filter(storage, cfg.tag_filter_path)
    user_tags, unknown = run_one(tag_affinity, actions, items, cfg.tag_attr, cfg.tag_separator,
                                 cfg.min_tag_count, cfg.min_pc_increase, keep)
    writer = O.ModelWriter(storage, cfg, "tag-affinity")
    writer.write("user_tags", pa.Table.from_pandas(user_tags, preserve_index=False))
    return writer.commit({"days": [d.isoformat() for d in days], "actions": len(actions),
                          "unknown_item_actions": unknown, "users": int(actions[O.USER].nunique()),
                          "users_with_tags": int(user_tags[O.USER].nunique()),
                          "tags": int(user_tags["tag"].nunique()) if len(user_tags) else 0,
                          "mean_tags_per_user": float(np.round(user_tags.groupby(O.USER).size().mean(), 3))
                          if len(user_tags) else 0.0})
