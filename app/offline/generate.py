"""Generated raw action logs with planted item groups, so the offline models can be checked
against a truth no model saw.

The planted world:

- items ``0..n_items-1`` fall into ``n_groups`` groups (item ``i`` is in group ``i % n_groups``);
  the item table (``raw/items``) gives each item its group as ``dimension`` (``dim<g>``) and as a
  tag (``tag<g>``) next to one random ``common<k>`` tag;
- every group holds ``bundles_per_group`` disjoint *bundles* of ``bundle_size`` items that are
  bought together;
- every user has a favourite group; a session stays in one group (the favourite with probability
  ``focus``, else a random one), so sessions are item2vec's sentences and groups its truth;
- a session is a *browse* (``browse_len`` views, type ``view_type``) or, with probability
  ``basket_rate``, a *basket*: the adds (type 1) of one bundle of the session's group plus, with
  probability one half, the add of a random item of the group that is removed again (type 2)
  with probability one half. Sessions of a user are hours apart, actions in a session seconds.

``truth.json`` beside the logs holds the groups, the bundles and each user's favourite group.
Some lines are made malformed on purpose (``malformed_rate``: bad JSON, a missing field, a bad
timestamp, a string user id) to exercise the quarantine.

The logs follow the spec's folder scheme: ``<out>/actions.<YYYY>/<MMDD>/<shard>/part-<k>.json``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from app.config import StrictModel
from app.storage import Storage

BAD_KINDS = ("malformed_json", "missing_userid", "bad_timestamp", "bad_userid")


class GenerateActionsConfig(StrictModel):
    """``offline generate``: sizes and rates of the planted world (module docstring)."""

    out: str = Field("raw/actions", description="root-relative folder of the JSON logs")
    items_out: str = Field("raw/items", description="root-relative folder of the item table")
    clients: list[str] = ["client1"]
    first_day: dt.date = dt.date(2015, 1, 1)
    days: int = Field(1, ge=1)
    n_users: int = Field(2000, ge=1)
    n_items: int = Field(500, ge=2)
    n_groups: int = Field(10, ge=1)
    sessions_per_user_day: float = Field(2.0, gt=0)
    browse_len: int = Field(6, ge=2)
    basket_rate: float = Field(0.3, ge=0, le=1)
    bundles_per_group: int = Field(3, ge=1)
    bundle_size: int = Field(3, ge=2)
    focus: float = Field(0.8, ge=0, le=1)
    view_type: int = 3
    malformed_rate: float = Field(0.001, ge=0, le=1)
    shards: int = Field(2, ge=1, description="folders (and files) per day")
    files_per_shard: int = Field(1, ge=1)
    part_prefix: str = Field("part", pattern=r"^[A-Za-z0-9_-]+$",
                             description="file names <prefix>-<k>.json (several runs can fill one day)")
    seed: int = 0


def planted_bundles(cfg: GenerateActionsConfig) -> np.ndarray:
    """``[n_groups, bundles_per_group, bundle_size]`` item ids: disjoint bundles inside each group."""
    per_group = cfg.n_items // cfg.n_groups
    need = cfg.bundles_per_group * cfg.bundle_size
    if per_group < need:
        raise ValueError(f"{per_group} items per group cannot hold {cfg.bundles_per_group} bundles of "
                         f"{cfg.bundle_size}: raise n_items or lower bundles")
    rng = np.random.default_rng(cfg.seed + 1)
    out = np.empty((cfg.n_groups, cfg.bundles_per_group, cfg.bundle_size), dtype=np.int64)
    for g in range(cfg.n_groups):
        members = rng.permutation(per_group)[:need]
        out[g] = (g + cfg.n_groups * members).reshape(cfg.bundles_per_group, cfg.bundle_size)
    return out


def day_actions(cfg: GenerateActionsConfig, favourite: np.ndarray, bundles: np.ndarray, day: dt.date,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One day's actions as arrays (user, item, type, time in s), vectorized over sessions."""
    n_sess = rng.poisson(cfg.sessions_per_user_day * cfg.n_users)
    user = rng.integers(0, cfg.n_users, n_sess)
    group = np.where(rng.random(n_sess) < cfg.focus, favourite[user], rng.integers(0, cfg.n_groups, n_sess))
    # a user's sessions are spread over the day: the session's slot of the day, then seconds
    day0 = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
    start = day0 + rng.integers(0, 86400 - 3600, n_sess)
    basket = rng.random(n_sess) < cfg.basket_rate
    per_group = cfg.n_items // cfg.n_groups
    parts = []
    # browse sessions: views of random items of the group
    b = np.flatnonzero(~basket)
    L = cfg.browse_len
    sid = np.repeat(b, L)
    items = group[sid] + cfg.n_groups * rng.integers(0, per_group, sid.size)
    parts.append((sid, items, np.full(sid.size, cfg.view_type), np.tile(np.arange(L), b.size)))
    # basket sessions: one bundle added, maybe an extra item added and removed again
    k = np.flatnonzero(basket)
    which = rng.integers(0, cfg.bundles_per_group, k.size)
    bundle_items = bundles[group[k], which]  # [k, bundle_size]
    sid = np.repeat(k, cfg.bundle_size)
    parts.append((sid, bundle_items.ravel(), np.full(sid.size, 1), np.tile(np.arange(cfg.bundle_size), k.size)))
    extra = k[rng.random(k.size) < 0.5]
    extra_item = group[extra] + cfg.n_groups * rng.integers(0, per_group, extra.size)
    parts.append((extra, extra_item, np.full(extra.size, 1), np.full(extra.size, cfg.bundle_size)))
    removed = rng.random(extra.size) < 0.5
    parts.append((extra[removed], extra_item[removed], np.full(int(removed.sum()), 2),
                  np.full(int(removed.sum()), cfg.bundle_size + 1)))
    sid = np.concatenate([p[0] for p in parts])
    step = np.concatenate([p[3] for p in parts])
    t = start[sid] + step * 30 + rng.integers(0, 30, sid.size)
    return {"user": user[sid], "item": np.concatenate([p[1] for p in parts]),
            "type": np.concatenate([p[2] for p in parts]).astype(np.int64), "time": t}


def format_lines(client: str, a: dict[str, np.ndarray], rng: np.random.Generator, malformed_rate: float) -> list[str]:
    """The JSON lines of actions ``a`` for ``client`` (some malformed on purpose)."""
    ts = np.array(a["time"], dtype="datetime64[s]").astype(str)
    value = 1.0
    lines = [
        f'{{"client":"{client}","client_itemid":"/i/{i}","client_userid":"u{u}","itemid":{i},'
        f'"rectag":"default","timestamp_utc":"{t}Z","type":{k},"userid":{u},"value":{value}}}'
        for u, i, k, t in zip(a["user"].tolist(), a["item"].tolist(), a["type"].tolist(), ts.tolist(), strict=True)
    ]
    n_bad = rng.binomial(len(lines), malformed_rate) if lines else 0
    for idx, kind in zip(rng.choice(len(lines), n_bad, replace=False).tolist(),
                         rng.integers(0, len(BAD_KINDS), n_bad).tolist(), strict=True):
        line = lines[idx]
        if BAD_KINDS[kind] == "malformed_json":
            lines[idx] = line[: len(line) // 2]
        elif BAD_KINDS[kind] == "missing_userid":
            lines[idx] = line.replace(',"userid":', ',"user":')
        elif BAD_KINDS[kind] == "bad_timestamp":
            lines[idx] = line.replace('"timestamp_utc":"', '"timestamp_utc":"yesterday ')
        else:
            lines[idx] = line.replace(',"userid":', ',"userid":"x') .replace(',"value"', '","value"', 1)
    return lines


def item_table(cfg: GenerateActionsConfig) -> pa.Table:
    """itemid, dimension (the planted group) and tags (the group's tag and one common tag)."""
    rng = np.random.default_rng(cfg.seed + 2)
    ids = np.arange(cfg.n_items)
    common = rng.integers(0, 5, cfg.n_items)
    return pa.table({
        "itemid": pa.array(ids, pa.int64()),
        "dimension": [f"dim{g}" for g in (ids % cfg.n_groups).tolist()],
        "tags": [f"tag{g},common{c}" for g, c in zip((ids % cfg.n_groups).tolist(), common.tolist(), strict=True)],
    })


def generate_actions(cfg: GenerateActionsConfig, storage: Storage) -> dict[str, Any]:
    """Write the JSON logs, the item table and ``truth.json``; counts as a dict."""
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    bundles = planted_bundles(cfg)
    favourite = {c: rng.integers(0, cfg.n_groups, cfg.n_users) for c in cfg.clients}
    lines_written, bad = 0, 0
    for d in range(cfg.days):
        day = cfg.first_day + dt.timedelta(days=d)
        folder = f"{cfg.out}/actions.{day.year:04d}/{day.month:02d}{day.day:02d}"
        lines: list[str] = []
        for client in cfg.clients:
            lines += format_lines(client, day_actions(cfg, favourite[client], bundles, day, rng), rng,
                                  cfg.malformed_rate)
        order = rng.permutation(len(lines))  # logs arrive interleaved, not grouped
        files = cfg.shards * cfg.files_per_shard
        for f in range(files):
            chunk = [lines[i] for i in order[f::files].tolist()]
            storage.write_text(f"{folder}/{f // cfg.files_per_shard}/{cfg.part_prefix}-{f % cfg.files_per_shard}.json",
                               "\n".join(chunk) + "\n")
        lines_written += len(lines)
        bad += sum(1 for ln in lines if '"user":' in ln or '"userid":"x' in ln or "yesterday" in ln
                   or not ln.endswith("}"))
    storage.write_table(cfg.items_out, item_table(cfg))
    truth = {"n_groups": cfg.n_groups, "group_of_item": "itemid % n_groups",
             "bundles": bundles.tolist(), "favourite_group": {c: v.tolist() for c, v in favourite.items()}}
    storage.write_json(f"{cfg.out}/truth.json", truth)
    return {"lines": lines_written, "malformed": bad, "days": cfg.days, "clients": cfg.clients,
            "out": cfg.out, "items": cfg.items_out, "seconds": round(time.perf_counter() - started, 3),
            }
