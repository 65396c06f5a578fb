"""Samples: vectorized histories vs a brute-force oracle; TFRecord round trip through tf.data."""

import numpy as np
import pyarrow as pa
import pytest

from app import constants as C
from app.data.samples import build_samples, keep_hash, latest_history
from app.data.tfrecord import FEATURE_NAMES, read_samples, write_tfrecord_file

DAY = 86400


def random_trainready(rng, n_users=30, n_days=10, n_kw=6, max_shows=3, max_clicks=3):
    rows = []
    for u in range(n_users):
        days = sorted(rng.choice(n_days, size=rng.integers(1, n_days), replace=False), reverse=True)
        kwi, shows, clicks = [], [], []
        for _ in days:
            ks = sorted(rng.choice(np.arange(1, n_kw + 1), size=rng.integers(1, 4), replace=False))
            s = rng.integers(1, max_shows + 1, size=len(ks))
            kwi.append([int(k) for k in ks])
            shows.append([int(x) for x in s])
            clicks.append([int(rng.integers(0, min(x, max_clicks) + 1)) for x in s])
        rows.append({C.AGE: int(rng.integers(1, 7)), C.GENDER: int(rng.integers(0, 2)), C.DID: f"u{u}",
                     C.DID_INDEX: u, C.INTERVAL_STARTING_TIME: [int(d) * DAY for d in days],
                     C.KWI: kwi, C.KWI_SHOW_COUNTS: shows, C.KWI_CLICK_COUNTS: clicks})
    return pa.Table.from_pylist(rows)


def oracle_history(row, target_day, length, hist_len):
    agg = {}
    for ist, ks, ss, cs in zip(row[C.INTERVAL_STARTING_TIME], row[C.KWI], row[C.KWI_SHOW_COUNTS],
                               row[C.KWI_CLICK_COUNTS], strict=True):
        d = ist // DAY
        if target_day - length <= d < target_day:
            for k, s, c in zip(ks, ss, cs, strict=True):
                recent, s0, c0 = agg.get(k, (-1, 0, 0))
                agg[k] = (max(recent, d), s0 + s, c0 + c)
    ranked = sorted(agg.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:hist_len]
    pad = hist_len - len(ranked)
    return ([k for k, _ in ranked] + [0] * pad, [v[1] for _, v in ranked] + [0] * pad,
            [v[2] for _, v in ranked] + [0] * pad)


# 2**34 shows of 5,000 keywords: ranking keys too wide for one int64 (the lexsort); 60: the
# unpacked ranking
@pytest.mark.parametrize("length,hist_len,max_shows,n_kw", [
    (1, 2, 3, 6), (3, 4, 3, 6), (7, 16, 3, 6), (7, 16, 2**24, 6), (7, 16, 2**34, 5000), (60, 16, 3, 6)])
def test_samples_match_bruteforce(length, hist_len, max_shows, n_kw):
    table = random_trainready(np.random.default_rng(length), max_shows=max_shows, n_kw=n_kw)
    cols = build_samples(table, DAY, length, hist_len, neg_sample_rate=1.0, seed=0)
    rows = table.to_pylist()
    expected_n = sum(len(k) for r in rows for k in r[C.KWI])
    assert len(cols["label"]) == expected_n
    for i in range(expected_n):
        row = rows[cols["did_index"][i]]
        day = cols["interval_starting_time"][i] // DAY
        kws, shows, clicks = oracle_history(row, day, length, hist_len)
        assert cols["hist_kwi"][i].tolist() == kws
        assert cols["hist_show_counts"][i].tolist() == shows
        assert cols["hist_click_counts"][i].tolist() == clicks
        j = row[C.INTERVAL_STARTING_TIME].index(day * DAY)
        k = row[C.KWI][j].index(cols["target_kwi"][i])
        assert cols["label"][i] == int(row[C.KWI_CLICK_COUNTS][j][k] > 0)
        assert cols["age"][i] == row[C.AGE] and cols["gender"][i] == row[C.GENDER]


def test_negative_sampling_is_seeded_and_keeps_positives():
    table = random_trainready(np.random.default_rng(5), n_users=200)
    full = build_samples(table, DAY, 3, 8, 1.0, seed=1)
    a = build_samples(table, DAY, 3, 8, 0.3, seed=1)
    b = build_samples(table, DAY, 3, 8, 0.3, seed=1)
    c = build_samples(table, DAY, 3, 8, 0.3, seed=2)
    assert a["label"].sum() == full["label"].sum()  # every positive kept
    neg_full, neg_a = (full["label"] == 0).sum(), (a["label"] == 0).sum()
    assert 0.2 * neg_full < neg_a < 0.4 * neg_full
    assert np.array_equal(a["target_kwi"], b["target_kwi"]) and not np.array_equal(a["did_index"], c["did_index"])
    u = keep_hash(3, np.arange(100000), np.zeros(100000), np.ones(100000))
    assert abs(u.mean() - 0.5) < 0.01 and u.min() >= 0 and u.max() < 1


def test_latest_history_uses_window_before_next_interval():
    table = random_trainready(np.random.default_rng(9))
    out = latest_history(table, length=3, hist_len=5, interval_seconds=DAY)
    for i, row in enumerate(table.to_pylist()):
        newest = max(row[C.INTERVAL_STARTING_TIME]) // DAY
        kws, shows, clicks = oracle_history(row, newest + 1, 3, 5)
        assert out["hist_kwi"][i].tolist() == kws and out["hist_click_counts"][i].tolist() == clicks
        assert out["did"][i] == row[C.DID] and out["did_index"][i] == row[C.DID_INDEX]


def test_tfrecord_round_trip(tmp_path):
    table = random_trainready(np.random.default_rng(1))
    cols = build_samples(table, DAY, 3, 8, 1.0, seed=0)
    cols["did_index"] = cols["did_index"] + (1 << 33)  # large values survive too
    path = str(tmp_path / "s.tfrecord")
    assert write_tfrecord_file(path, cols, 8) == len(cols["label"])
    batches = list(read_samples([path], hist_len=8, batch_size=64))
    for name in FEATURE_NAMES:
        got = np.concatenate([b[name].numpy() for b in batches])
        assert np.array_equal(got, cols[name]), name


def test_grouped_records_have_valid_crcs(tmp_path):
    import struct

    import crc32c

    from app.data.samples import sample_groups
    from app.data.tfrecord import ExampleLayout, column_maxima, encode_groups, write_records

    groups, samples = sample_groups(random_trainready(np.random.default_rng(2)), DAY, 3, 8, 1.0, seed=0)
    own = {"target_kwi": samples["target_kwi"] * 37, "label": samples["label"]}  # 2-byte targets too
    layout = ExampleLayout.fitting(8, column_maxima({**groups, **own}))
    path = str(tmp_path / "g.tfrecord")
    order = np.random.default_rng(0).permutation(len(samples["group"]))
    write_records(path, encode_groups(groups, 8, layout), samples["group"][order], {k: v[order] for k, v in own.items()})
    data = open(path, "rb").read()
    step = 12 + layout.size + 4
    assert len(data) == step * len(order)
    mask = lambda c: (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # noqa: E731
    for i in range(len(order)):
        rec = data[i * step : (i + 1) * step]
        assert struct.unpack("<Q", rec[:8])[0] == layout.size
        assert struct.unpack("<I", rec[-4:])[0] == mask(crc32c.crc32c(rec[12:-4]))
    got = np.concatenate([b["target_kwi"].numpy() for b in read_samples([path], hist_len=8, batch_size=64)])
    assert np.array_equal(got, own["target_kwi"][order])


def test_tfrecord_refuses_out_of_range(tmp_path):
    cols = {n: np.zeros((2, 4) if n.startswith("hist") else 2, np.int64) for n in FEATURE_NAMES}
    cols["label"] = np.array([0, -1])
    with pytest.raises(ValueError, match="label"):
        write_tfrecord_file(str(tmp_path / "x.tfrecord"), cols, 4)
