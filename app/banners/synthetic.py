"""Synthetic banner embeddings with planted clusters and advertisers, and user events on them.

The planted model: ``clusters`` centres drawn N(0, centre_scale^2) in ``dim`` dimensions; every
advertiser spreads over 1..``max_clusters_per_advertiser`` of them with Dirichlet weights; a banner
takes its advertiser (Zipf-like popularity), a cluster from its advertiser's, and the vector
``centre + N(0, cluster_std^2)``. A banner is seen on a run of consecutive days (geometric length,
mean ``mean_days_per_banner``), each day as one raw row with the same vector, except for the
``conflict_rate`` banners whose later rows carry a slightly different vector (a re-encoded image:
same id, different vector). Rows then get dirt: a missing id, a NaN coordinate, a vector one short.

Events: each user's requests pick a random valid (banner, day) row; a request becomes an
impression with ``impression_rate``, an impression a click with its cluster's planted CTR.

Written under the root: ``raw/banners`` (one Parquet file per day), ``raw/banner_truth``
(banner_id, advertiser, true_cluster), ``raw/banner_events``, ``raw/banner_users`` and
``raw/banner_truth.json`` (planted CTRs, counts).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.banners import schema as S
from app.banners.config import BannerGenerateConfig
from app.storage import Storage

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ID_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication is a bijection on 64-bit ints


def hex_ids(index: np.ndarray, salt: int) -> pa.Array:
    """Distinct 16-hex-digit ids of distinct indices (a bijective 64-bit mix, vectorized)."""
    with np.errstate(over="ignore"):
        x = (index.astype(np.uint64) + np.uint64(salt)) * _ID_MULT
        x ^= x >> np.uint64(31)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    digits = _HEX[((x[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)]
    return pa.array(np.frombuffer(np.ascontiguousarray(digits).tobytes(), dtype="S16")).cast(pa.string())


def user_ids(n: int) -> pa.Array:
    return pa.array([f"u{i:07d}" for i in range(n)], pa.string())


def plant_advertisers(cfg: BannerGenerateConfig, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per advertiser: (its clusters, their weights)."""
    out = []
    for _ in range(cfg.advertisers):
        m = int(rng.integers(1, min(cfg.max_clusters_per_advertiser, cfg.clusters) + 1))
        out.append((rng.choice(cfg.clusters, size=m, replace=False), rng.dirichlet(np.ones(m))))
    return out


def plant_banners(cfg: BannerGenerateConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Advertiser, cluster and vector of every unique banner."""
    centres = rng.normal(0.0, cfg.centre_scale, (cfg.clusters, cfg.dim))
    popularity = 1.0 / np.arange(1, cfg.advertisers + 1) ** 0.8
    adv = rng.choice(cfg.advertisers, size=cfg.banners, p=popularity / popularity.sum())
    cluster = np.empty(cfg.banners, dtype=np.int64)
    for a, (clusters, weights) in enumerate(plant_advertisers(cfg, rng)):
        mine = np.nonzero(adv == a)[0]
        cluster[mine] = rng.choice(clusters, size=len(mine), p=weights)
    vectors = rng.standard_normal((cfg.banners, cfg.dim), dtype=np.float32)
    vectors *= np.float32(cfg.cluster_std)
    vectors += centres[cluster].astype(np.float32)
    return {"advertiser": adv, "cluster": cluster, "vectors": vectors}


def plant_rows(cfg: BannerGenerateConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raw rows: banner index and day offset of each, runs of consecutive days per banner."""
    length = np.minimum(rng.geometric(1.0 / cfg.mean_days_per_banner, cfg.banners), cfg.days)
    first = rng.integers(0, cfg.days - length + 1)  # runs fit in the window: the mean length holds
    idx = np.repeat(np.arange(cfg.banners), length)
    offset = np.arange(len(idx)) - np.repeat(np.cumsum(length) - length, length)
    conflicted = (length >= 2) & (rng.random(cfg.banners) < cfg.conflict_rate)
    return {"banner": idx, "day": first[idx] + offset, "later": offset >= 1, "conflicted": conflicted}


def _embedding_column(emb: np.ndarray, short: np.ndarray) -> pa.Array:
    """list<float32> of the rows, one coordinate fewer where ``short``."""
    keep = np.ones(emb.shape, dtype=bool)
    keep[short, -1] = False
    lengths = np.where(short, emb.shape[1] - 1, emb.shape[1])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(emb[keep], pa.float32()))


def write_day(storage: Storage, cfg: BannerGenerateConfig, planted: dict, rows: dict, ids: pa.Array,
              day: int, rng: np.random.Generator, delta: np.ndarray) -> dict[str, int]:
    sel = np.nonzero(rows["day"] == day)[0]
    banner = rows["banner"][sel]
    emb = planted["vectors"][banner]
    redo = rows["later"][sel] & rows["conflicted"][banner]
    emb[redo] += delta[banner[redo]]
    n = len(sel)
    missing = rng.random(n) < cfg.missing_id_rate  # one kind of dirt per row: the counts are exact
    nan = (rng.random(n) < cfg.nan_rate) & ~missing
    short = (rng.random(n) < cfg.wrong_dim_rate) & ~nan & ~missing
    emb[nan, 0] = np.nan
    day_str = (cfg.start_day + dt.timedelta(days=int(day))).isoformat()
    advertisers = pa.array([f"adv{a:04d}" for a in range(cfg.advertisers)], pa.string())
    table = pa.table({
        S.BANNER_ID: pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), ids.take(pa.array(banner))),
        S.DAY: pa.array(np.full(n, day_str, dtype=object), pa.string()),
        S.ADVERTISER: advertisers.take(pa.array(planted["advertiser"][banner])),
        S.EMBEDDING: _embedding_column(emb, short),
    })
    storage.makedirs(S.RAW_BANNERS)
    pq.write_table(table, storage.path(S.RAW_BANNERS, f"part-{day:03d}.parquet"), filesystem=storage.fs,
                   row_group_size=cfg.row_group_rows, compression="none")
    return {"rows": n, S.MISSING_ID: int(missing.sum()), S.NOT_FINITE: int(nan.sum()),
            S.WRONG_DIMENSION: int(short.sum())}


def make_events(cfg: BannerGenerateConfig, planted: dict, rows: dict, ids: pa.Array,
                rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """Requests, impressions and clicks of ``cfg.users`` users, and the planted CTR per cluster."""
    ctr = rng.uniform(cfg.ctr_min, cfg.ctr_max, cfg.clusters)
    per_user = rng.poisson(cfg.requests_per_user, cfg.users)
    user = np.repeat(np.arange(cfg.users), per_user)
    pick = rng.integers(0, len(rows["banner"]), len(user))
    banner, day = rows["banner"][pick], rows["day"][pick]
    shown = rng.random(len(user)) < cfg.impression_rate
    clicked = shown & (rng.random(len(user)) < ctr[planted["cluster"][banner]])
    parts = [(np.ones_like(shown), "request"), (shown, "impression"), (clicked, "click")]
    u = np.concatenate([user[m] for m, _ in parts])
    b = np.concatenate([banner[m] for m, _ in parts])
    d = np.concatenate([day[m] for m, _ in parts])
    days = np.array([(cfg.start_day + dt.timedelta(days=i)).isoformat() for i in range(cfg.days)])
    dids = user_ids(cfg.users)
    events = pa.table({
        S.DID: dids.take(pa.array(u)),
        S.BANNER_ID: ids.take(pa.array(b)),
        S.EVENT: pa.array(np.repeat(np.array([name for _, name in parts], dtype=object),
                                    [int(m.sum()) for m, _ in parts]), pa.string()),
        S.DAY: pa.array(days[d], pa.string()),
    })
    return events, ctr


def generate_banners(cfg: BannerGenerateConfig, storage: Storage) -> dict[str, Any]:
    """Write the raw banner tables, events and truth; return the planted counts."""
    rng = np.random.default_rng(cfg.seed)
    planted = plant_banners(cfg, rng)
    rows = plant_rows(cfg, rng)
    ids = hex_ids(np.arange(cfg.banners), cfg.seed)
    delta = rng.normal(0.0, 0.05 * cfg.cluster_std, (cfg.banners, cfg.dim)).astype(np.float32)
    for rel in (S.RAW_BANNERS, S.RAW_EVENTS, S.RAW_TRUTH, S.RAW_USERS):
        storage.delete(rel)
    dirt: dict[str, int] = {}
    for day in range(cfg.days):
        for key, value in write_day(storage, cfg, planted, rows, ids, day, rng, delta).items():
            dirt[key] = dirt.get(key, 0) + value
    names = pa.array([f"adv{a:04d}" for a in range(cfg.advertisers)], pa.string())
    truth = pa.table({S.BANNER_ID: ids, S.ADVERTISER: names.take(pa.array(planted["advertiser"])),
                      S.TRUE_CLUSTER: pa.array(planted["cluster"], pa.int32())})
    storage.write_table(S.RAW_TRUTH, truth)
    summary: dict[str, Any] = {
        "raw_rows": dirt.pop("rows"), "unique_banners": cfg.banners,
        "conflicted_banners": int(rows["conflicted"].sum()), "dirty_rows": dirt,
        "planted_clusters": cfg.clusters, "dim": cfg.dim,
    }
    if cfg.users:
        events, ctr = make_events(cfg, planted, rows, ids, rng)
        storage.write_table(S.RAW_EVENTS, events)
        storage.write_table(S.RAW_USERS, pa.table({S.DID: user_ids(cfg.users)}))
        summary["events"] = events.num_rows
        summary["planted_ctr"] = [round(float(c), 4) for c in ctr]
    storage.write_json("raw/banner_truth.json", summary)
    return summary
