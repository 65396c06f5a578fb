"""Stage 6, samples: train-ready users -> TFRecord training samples split by ``cutting_date``.

A sample is (user features, history, target keyword, label). For every interval in which a user was
shown keywords (the *target interval*), each shown keyword is a target; label 1 if the user clicked
it in that interval. The history is what the user did in the ``length`` intervals *before* the
target interval (by time, so gaps count): the distinct keywords, most recent first (ties: more
shows first, then lower index), with their show and click counts over the window, 0-padded to
``hist_len``. Targets in intervals starting on/after ``cutting_date`` are the test split.
Negatives are kept with probability ``neg_sample_rate`` using a seeded hash of (did_index,
interval, keyword), so a re-run gives the same samples.

Everything is vectorized over a whole bucket (numpy): the rows of a user's window are a contiguous
slice of the (user, interval, keyword)-sorted long table, so the (target, history row) pairs are
built with one ``repeat`` and summed per (target, keyword) with ``bincount`` into dense cells
(:func:`window_histories`). A history is computed once per (user, target interval) group and each
group is serialized once; a sample's record is its group's with the target and label patched in
(:func:`app.data.tfrecord.write_records`). The same code gives the score generator the user's
*latest* history (:func:`latest_history`), so scoring sees exactly the training window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app import constants as C
from app.data.config import DataConfig
from app.data.io import StageReport, map_tasks
from app.data.tfrecord import ExampleLayout, column_maxima, encode_groups, write_records
from app.storage import Storage


@dataclass
class LongTable:
    """Train-ready rows exploded to one row per (user, interval, keyword), sorted that way."""

    user: np.ndarray  # row -> user position in the train-ready table
    interval: np.ndarray  # interval number = interval_starting_time // interval_seconds
    kwi: np.ndarray
    shows: np.ndarray
    clicks: np.ndarray


def explode(table: pa.Table, interval_seconds: int) -> LongTable:
    """Flatten the nested train-ready arrays into a long table sorted by (user, interval, keyword).

    Train-ready rows hold intervals newest first and keywords ascending, so reversing the interval
    blocks of each user sorts them; a lexsort is the fallback for tables not in that order.
    """
    ist = table[C.INTERVAL_STARTING_TIME].combine_chunks()
    kwi = table[C.KWI].combine_chunks()
    user_of_interval = pc.list_parent_indices(ist).to_numpy()
    interval_values = pc.list_flatten(ist).to_numpy().astype(np.int64) // interval_seconds
    inner = pc.list_flatten(kwi)
    interval_of_row = pc.list_parent_indices(inner).to_numpy()
    flat = lambda col: pc.list_flatten(pc.list_flatten(table[col].combine_chunks())).to_numpy().astype(np.int64)  # noqa: E731
    user = user_of_interval[interval_of_row].astype(np.int64)
    interval = interval_values[interval_of_row]
    k, s, c = flat(C.KWI), flat(C.KWI_SHOW_COUNTS), flat(C.KWI_CLICK_COUNTS)
    n = len(user)
    order = None
    if n:
        # row blocks: interval block [a, b) inside user block [u0, u1) moves to u0 + (u1 - b)
        sizes = np.bincount(interval_of_row, minlength=len(interval_values))
        block_end = np.cumsum(sizes)
        block_start = block_end - sizes
        user_sizes = np.bincount(user, minlength=table.num_rows)
        user_end = np.cumsum(user_sizes)
        u = user_of_interval
        new_start = (user_end[u] - user_sizes[u]) + (user_end[u] - block_end)
        dest = np.repeat(new_start - block_start, sizes) + np.arange(n)
        order = np.empty(n, dtype=np.int64)
        order[dest] = np.arange(n)
        key_u, key_i, key_k = user[order], interval[order], k[order]
        step = (np.diff(key_u) > 0) | ((np.diff(key_u) == 0) & (
            (np.diff(key_i) > 0) | ((np.diff(key_i) == 0) & (np.diff(key_k) > 0))))
        if not step.all():  # not in train-ready order: sort
            order = np.lexsort((k, interval, user))
    if order is None:
        order = np.zeros(0, np.int64)
    return LongTable(user[order], interval[order], k[order], s[order], c[order])


#: dense (target x keyword) cells per chunk of targets in :func:`window_histories`: arrays of 16 MB
#: are reused by the allocator between chunks instead of being page-faulted in afresh
WINDOW_CELLS = 2_000_000
_SHOWS_CAP = 1 << 40


def window_histories(
    long: LongTable, t_user: np.ndarray, t_interval: np.ndarray, length: int, hist_len: int,
    dtype: type = np.int64,
) -> dict[str, np.ndarray]:
    """History matrices (T, hist_len) for targets (user, interval): intervals [t-length, t-1].

    Each target's window is a contiguous slice of the long table. Its rows are summed per
    (target, keyword) with ``bincount`` into dense (targets x keywords) cells, targets in chunks
    of :data:`WINDOW_CELLS`. The most recent interval of a cell is the highest bit of the sum of
    ``2**(position in window)`` (a cell's rows are distinct intervals, one bit each); shows, clicks
    and those bits are summed by one ``bincount`` of a packed float64 when the sums fit in its 52
    bits. Then only the cells some window touched (a few per target, not every keyword) are
    ranked (most recent first, then more shows, then lower keyword): one value sort of one packed
    int64 per cell (target, inverted rank, clicks), the first ``hist_len`` of each target
    scattered into the output; about 30% faster than sorting every target's row of dense cells.
    Past those limits (long windows, huge counts) the same result comes from separate sums and a
    row-wise stable argsort.
    """
    n_targets = len(t_user)
    out = {
        "hist_kwi": np.zeros((n_targets, hist_len), dtype),
        "hist_show_counts": np.zeros((n_targets, hist_len), dtype),
        "hist_click_counts": np.zeros((n_targets, hist_len), dtype),
    }
    if n_targets == 0 or len(long.user) == 0:
        return out
    big = np.int64(1) << 32
    key = long.user * big + long.interval
    lo = np.searchsorted(key, t_user * big + (t_interval - length), side="left")
    hi = np.searchsorted(key, t_user * big + t_interval, side="left")
    n_kw = int(long.kwi.max()) + 1
    width = min(hist_len, n_kw)
    # sums per cell are bounded by the largest count times the window length
    show_bits = (int(long.shows.max(initial=0)) * length).bit_length()
    click_bits = max(1, (int(long.clicks.max(initial=0)) * length).bit_length())
    packed = length + click_bits + show_bits <= 52 and n_kw <= (1 << 16) and show_bits <= 40
    if packed:  # a power-of-two keyword axis: the packed values split with shifts and masks
        kw_bits = max(1, (n_kw - 1).bit_length())
        n_kw = 1 << kw_bits
        show_field = max(1, show_bits)
    chunk = max(1, WINDOW_CELLS // n_kw)
    for c0 in range(0, n_targets, chunk):
        c1 = min(n_targets, c0 + chunk)
        m = c1 - c0
        sizes = hi[c0:c1] - lo[c0:c1]
        total = int(sizes.sum())
        if total == 0:
            continue
        target = np.repeat(np.arange(m, dtype=np.int64), sizes)
        rows = np.repeat(lo[c0:c1] - np.cumsum(np.r_[0, sizes[:-1]]), sizes) + np.arange(total, dtype=np.int64)
        cells = m * n_kw
        cell = target * n_kw + long.kwi[rows]
        pos = long.interval[rows] - (t_interval[c0:c1][target] - length)  # 0 .. length-1
        if packed:
            # one bincount of (shows, clicks, 2**pos) packed into a float64 that sums them exactly
            weight = np.ldexp(1.0, pos)
            weight += np.ldexp(long.clicks[rows].astype(np.float64), length)
            weight += np.ldexp(long.shows[rows].astype(np.float64), length + click_bits)
            sums = np.bincount(cell, weights=weight, minlength=cells)
            # only the cells in some window (a few per target) are ranked
            present = np.flatnonzero(sums)
            s = sums[present].astype(np.int64)
            bits = (s & ((1 << length) - 1)).astype(np.float64)
            # float exponent of the bit set = its highest bit: recency 1 (oldest) .. length
            rank = ((bits.view(np.int64) >> 52) - 1022) << (show_field + kw_bits)
            rank |= (s >> (length + click_bits)) << kw_bits  # shows
            rank |= (n_kw - 1) - (present & (n_kw - 1))  # lower keyword wins a tie
            clicks = (s >> length) & ((1 << click_bits) - 1)
            row = present >> kw_bits
            # per target, best first: one value sort of (target, inverted rank, clicks) when it fits
            rank_bits = max(1, length.bit_length()) + show_field + kw_bits
            row_bits = max(1, (m - 1).bit_length())
            if row_bits + rank_bits + click_bits <= 63:
                key = row << (rank_bits + click_bits)
                key |= (((1 << rank_bits) - 1) - rank) << click_bits
                key |= clicks
                key.sort()
                row = key >> (rank_bits + click_bits)
                rank = ((1 << rank_bits) - 1) - ((key >> click_bits) & ((1 << rank_bits) - 1))
                clicks = key & ((1 << click_bits) - 1)
            else:
                order = np.lexsort((-rank, row))
                row, rank, clicks = row[order], rank[order], clicks[order]
            first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
            place = np.arange(len(row)) - np.repeat(first, np.diff(np.r_[first, len(row)]))
            keep = place < width
            at = (row[keep] + c0) * hist_len + place[keep]
            rank = rank[keep]
            out["hist_kwi"].reshape(-1)[at] = (n_kw - 1) - (rank & (n_kw - 1))
            out["hist_show_counts"].reshape(-1)[at] = (rank >> kw_bits) & ((1 << show_field) - 1)
            out["hist_click_counts"].reshape(-1)[at] = clicks[keep]
            continue
        shows = np.bincount(cell, weights=long.shows[rows], minlength=cells)
        clicks = np.bincount(cell, weights=long.clicks[rows], minlength=cells)
        recent = np.full(cells, -1, np.int64)
        np.maximum.at(recent, cell, pos)
        present = recent >= 0
        score = np.where(present, (recent << 40) | np.minimum(shows.astype(np.int64), _SHOWS_CAP - 1), -1)
        rank = np.argsort(-score.reshape(m, n_kw), axis=1, kind="stable")[:, :width]
        flat_idx = rank + (np.arange(m, dtype=np.int64) * n_kw)[:, None]
        valid = present[flat_idx]
        out["hist_kwi"][c0:c1, :width] = np.where(valid, rank, 0)
        out["hist_show_counts"][c0:c1, :width] = np.where(valid, shows[flat_idx], 0)
        out["hist_click_counts"][c0:c1, :width] = np.where(valid, clicks[flat_idx], 0)
    return out


def _user_columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {
        "did_index": table[C.DID_INDEX].to_numpy().astype(np.int64),
        "age": table[C.AGE].to_numpy().astype(np.int64),
        "gender": table[C.GENDER].to_numpy().astype(np.int64),
    }


def keep_hash(seed: int, did_index: np.ndarray, interval: np.ndarray, kwi: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from a seeded integer hash (splitmix64), the same in every run and worker."""
    with np.errstate(over="ignore"):
        x = (did_index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            interval.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        ) ^ (kwi.astype(np.uint64) * np.uint64(0x94D049BB133111EB)) ^ np.uint64(seed & 0xFFFFFFFF)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_groups(
    table: pa.Table, interval_seconds: int, length: int, hist_len: int, neg_sample_rate: float, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Pure: train-ready rows -> (group features, samples).

    A group is one (user, target interval): its features (user columns, history, interval) are
    shared by all its samples. Samples hold ``group`` (row in the group features), ``target_kwi``
    and ``label``, in (user, interval, keyword) order.
    """
    long = explode(table, interval_seconds)
    if len(long.user) == 0:
        return {}, {}
    users = _user_columns(table)
    big = np.int64(1) << 32
    key = long.user * big + long.interval
    first = np.r_[True, key[1:] != key[:-1]]
    group_of_row = np.cumsum(first) - 1
    g_user, g_interval = long.user[first], long.interval[first]
    # int32 histories (half the memory of int64) unless a window's sum of shows could overflow them
    fits = int(long.shows.max(initial=0)) * length < 2**31
    hist = window_histories(long, g_user, g_interval, length, hist_len, np.int32 if fits else np.int64)
    label = (long.clicks > 0).astype(np.int64)
    did_index = users["did_index"][long.user]
    keep = (label == 1) | (keep_hash(seed, did_index, long.interval, long.kwi) < neg_sample_rate)
    rows = np.nonzero(keep)[0]
    groups = {
        "did_index": users["did_index"][g_user],
        "age": users["age"][g_user],
        "gender": users["gender"][g_user],
        **hist,
        "interval_starting_time": g_interval * interval_seconds,
    }
    samples = {"group": group_of_row[rows], "target_kwi": long.kwi[rows], "label": label[rows]}
    return groups, samples


def build_samples(
    table: pa.Table, interval_seconds: int, length: int, hist_len: int, neg_sample_rate: float, seed: int
) -> dict[str, np.ndarray]:
    """Pure: train-ready rows -> sample columns (the SAMPLE_FEATURES of app.data.tfrecord)."""
    groups, samples = sample_groups(table, interval_seconds, length, hist_len, neg_sample_rate, seed)
    if not groups:
        return {}
    g = samples["group"]
    return {**{k: v[g].astype(np.int64) for k, v in groups.items()}, "target_kwi": samples["target_kwi"],
            "label": samples["label"]}


def latest_history(table: pa.Table, length: int, hist_len: int, interval_seconds: int = 86400) -> dict[str, np.ndarray]:
    """Each user's history for the interval after their newest one (the score generator's input).

    Returns did, did_index, age, gender and the (N, hist_len) history arrays, one row per user.
    """
    long = explode(table, interval_seconds)
    n = table.num_rows
    newest = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
    if len(long.user):
        np.maximum.at(newest, long.user, long.interval)
    hist = window_histories(long, np.arange(n, dtype=np.int64), newest + 1, length, hist_len)
    return {"did": table[C.DID].to_numpy(zero_copy_only=False), **_user_columns(table), **hist}


def cutting_seconds(cfg_cut: dt.date | None, max_interval_start: int) -> int:
    """Epoch seconds of the cutting date; default: the last 3 days are test."""
    if cfg_cut is not None:
        return int(np.datetime64(cfg_cut, "s").astype(np.int64))
    last_day = max_interval_start - max_interval_start % 86400
    return last_day - 2 * 86400


def stage_bucket(storage: Storage, table: pa.Table, bucket: int, staging: str, cut: int, params: dict) -> dict:
    """One did_bucket's train-ready rows -> shuffled, sharded TFRecord files in ``staging``.

    The clean stage calls it too, on the rows it just built, when it runs this stage fused."""
    out: dict[str, int] = dict.fromkeys(COUNTERS, 0)
    out["users"] = table.num_rows
    groups, samples = sample_groups(table, params["interval"], params["length"], params["hist_len"],
                                    params["neg_sample_rate"], params["seed"])
    if not groups:
        return out
    own = {"target_kwi": samples["target_kwi"], "label": samples["label"]}
    layout = ExampleLayout.fitting(params["hist_len"], column_maxima({**groups, **own}))
    encoded = encode_groups(groups, params["hist_len"], layout)
    is_test = groups["interval_starting_time"][samples["group"]] >= cut
    rng = np.random.default_rng([params["seed"], int(bucket)])
    for split, mask in (("train", ~is_test), ("test", is_test)):
        idx = np.nonzero(mask)[0]
        if len(idx) == 0:
            continue
        idx = idx[rng.permutation(len(idx))]
        for shard, part in enumerate(np.array_split(idx, params["shards"])):
            if len(part) == 0:
                continue
            name = storage.path(staging, split, f"part-b{int(bucket):04d}-{shard:03d}.tfrecord")
            write_records(name, encoded, samples["group"][part],
                          {"target_kwi": samples["target_kwi"][part], "label": samples["label"][part]},
                          filesystem=None if not storage._scheme else storage.fs)
        out[f"{split}_rows"] += len(idx)
        out[f"{split}_pos"] += int(samples["label"][idx].sum())
    return out


#: the per-bucket counters of :func:`stage_bucket`
COUNTERS = ("users", "train_rows", "train_pos", "test_rows", "test_pos")


def samples_bucket(batch: dict, root: str, staging: str, cut: int, params: dict) -> dict:
    """Ray Data task: read one did_bucket's train-ready rows, write its TFRecord shards."""
    import pyarrow.parquet as pq

    storage = Storage(root)
    out = dict.fromkeys(COUNTERS, 0)
    for bucket in batch["bucket"]:
        files = storage.list_files(C.T_TRAINREADY, f"{C.DID_BUCKET}={bucket}", suffix=".parquet")
        if not files:
            continue
        table = pq.read_table(files, filesystem=storage.fs, partitioning=None)
        for k, v in stage_bucket(storage, table, int(bucket), staging, cut, params).items():
            out[k] += v
    return {k: np.array([v]) for k, v in out.items()}


def plan(cfg: DataConfig, storage: Storage) -> tuple[str, dict]:
    """(staging directory, task parameters) of a samples run."""
    sc = cfg.samples
    params = {"interval": cfg.interval_time_in_seconds, "length": sc.length, "hist_len": sc.hist_len,
              "neg_sample_rate": sc.neg_sample_rate, "seed": sc.seed, "shards": sc.shards}
    return storage.new_staging(f"samples-{sc.run}"), params


def commit(cfg: DataConfig, storage: Storage, staging: str, cut: int, totals: dict[str, int],
           report: StageReport) -> dict:
    """Write ``stats.json`` next to the staged shards, swap them in as ``samples/<run>``, report."""
    from app.data.keywords import load_keywords

    sc = cfg.samples
    keywords = load_keywords(storage, kept_only=False)
    names = keywords[C.KEYWORD].to_pylist()
    idx = keywords[C.KEYWORD_INDEX].to_pylist()
    ordered = [""] * max(idx, default=0)
    for name, i in zip(names, idx, strict=True):
        ordered[i - 1] = name
    split_stats = {}
    for split in ("train", "test"):
        files = [f.rsplit("/", 1)[1] for f in storage.list_files(staging, split, suffix=".tfrecord")]
        rows = int(totals[f"{split}_rows"])
        pos = int(totals[f"{split}_pos"])
        split_stats[split] = {"rows": rows, "positives": pos, "ctr": round(pos / rows, 6) if rows else 0.0,
                              "files": files}
    info = {
        "run": sc.run,
        "hist_len": sc.hist_len,
        "length": sc.length,
        "num_keywords": len(ordered) + 1,
        "keywords": ordered,
        "cutting_date": dt.datetime.fromtimestamp(cut, dt.UTC).strftime("%Y-%m-%d"),
        "cutting_seconds": cut,
        "interval_time_in_seconds": cfg.interval_time_in_seconds,
        "neg_sample_rate": sc.neg_sample_rate,
        "seed": sc.seed,
        "format": "tfrecord",
        **split_stats,
    }
    storage.write_json(f"{staging}/stats.json", info)
    storage.commit_replace(staging, f"samples/{sc.run}")
    report.rows_in = int(totals["users"])
    report.rows_out = split_stats["train"]["rows"] + split_stats["test"]["rows"]
    report.extra.update({"train": split_stats["train"]["rows"], "test": split_stats["test"]["rows"],
                         "cutting_date": info["cutting_date"]})
    return report.finish(storage)


def run(cfg: DataConfig, storage: Storage) -> dict:
    report = StageReport("samples")
    tr = storage.read_table(C.T_TRAINREADY, columns=[C.INTERVAL_STARTING_TIME])
    max_start = int(pc.max(pc.list_flatten(tr[C.INTERVAL_STARTING_TIME])).as_py() or 0)
    cut = cutting_seconds(cfg.samples.cutting_date, max_start)
    staging, params = plan(cfg, storage)
    stats = map_tasks([{"bucket": b} for b in range(cfg.did_bucket_num)], samples_bucket,
                      {"root": storage.root, "staging": staging, "cut": cut, "params": params})
    return commit(cfg, storage, staging, cut, {k: int(stats[k].sum()) for k in COUNTERS}, report)
