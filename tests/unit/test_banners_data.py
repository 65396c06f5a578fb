"""Banner generator, row validation/quarantine and the dedupe (its Ray tasks run in-process here)."""

import numpy as np
import pyarrow as pa
import pytest

from app.banners import schema as S
from app.banners.config import BannerGenerateConfig, BannersConfig
from app.banners.dedupe import dedupe, fingerprint, keep_newest, local_tasks, validate_rows
from app.banners.synthetic import generate_banners, hex_ids

SMALL = BannerGenerateConfig(banners=1500, dim=8, clusters=4, advertisers=20, days=5, users=50,
                             conflict_rate=0.05, wrong_dim_rate=0.01, nan_rate=0.01, missing_id_rate=0.01)


def _rows(ids, days, vectors, dim=3):
    emb = pa.array([None if v is None else list(v) for v in vectors], pa.list_(pa.float32()))
    return pa.table({S.BANNER_ID: pa.array(ids, pa.string()), S.DAY: pa.array(days, pa.string()),
                     S.ADVERTISER: pa.array(["a"] * len(ids), pa.string()), S.EMBEDDING: emb})


@pytest.mark.parametrize("banner_id, day, vector, reason", [
    ("b1", "2026-01-01", [1, 2, 3], ""),
    (None, "2026-01-01", [1, 2, 3], S.MISSING_ID),
    ("", "2026-01-01", [1, 2, 3], S.MISSING_ID),
    ("b1", None, [1, 2, 3], S.MISSING_DAY),
    ("b1", "2026-01-01", [1, 2], S.WRONG_DIMENSION),
    ("b1", "2026-01-01", None, S.WRONG_DIMENSION),
    ("b1", "2026-01-01", [1, float("nan"), 3], S.NOT_FINITE),
    ("b1", "2026-01-01", [1, float("inf"), 3], S.NOT_FINITE),
    (None, "2026-01-01", [1, 2], S.MISSING_ID),  # the first failing check names the row
])
def test_validate_rows(banner_id, day, vector, reason):
    mat, reasons = validate_rows(_rows([banner_id], [day], [vector]), dim=3)
    assert reasons.tolist() == [reason]
    assert mat.shape == ((1, 3) if reason == "" else (0, 3))


def test_fingerprint_tells_vectors_apart():
    a = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [1.0, 2.0000002]], dtype=np.float32)
    fp = fingerprint(a)
    assert fp[0] == fp[1] and len(set(fp.tolist())) == 3


def test_keep_newest_keeps_the_newest_day_and_counts_conflicts():
    t = pa.table({S.BANNER_ID: ["x", "x", "x", "y"], S.DAY: ["2026-01-01", "2026-01-03", "2026-01-02", "2026-01-01"],
                  S.ADVERTISER: ["a", "a", "b", "c"], S.FINGERPRINT: pa.array([1, 2, 1, 5], pa.uint64()),
                  S.EMBEDDING: pa.array([[0.0], [3.0], [0.0], [9.0]], pa.list_(pa.float32(), 1))})
    kept, stats = keep_newest(t)
    assert kept.to_pydict()[S.BANNER_ID] == ["x", "y"]
    assert kept.to_pydict()[S.DAY] == ["2026-01-03", "2026-01-01"]
    assert kept[S.EMBEDDING].to_pylist() == [[3.0], [9.0]]
    assert kept.to_pydict()[S.ROWS] == [3, 1] and kept.to_pydict()[S.VECTORS] == [2, 1]
    assert stats == {"banners": 2, "duplicate_rows": 2, "conflicted_banners": 1, "extra_vectors": 1,
                     "advertiser_conflicts": 1}


def test_hex_ids_are_distinct_16_digit_hex():
    ids = hex_ids(np.arange(10_000), salt=3).to_pylist()
    assert len(set(ids)) == 10_000 and all(len(i) == 16 for i in ids)
    int(ids[0], 16)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from app.storage import Storage

    storage = Storage(str(tmp_path_factory.mktemp("banners") / "root"))
    return storage, generate_banners(SMALL, storage)


def test_generator_plants_what_it_reports(generated):
    storage, summary = generated
    raw = storage.read_table(S.RAW_BANNERS)
    assert raw.num_rows == summary["raw_rows"] > SMALL.banners
    truth = storage.read_table(S.RAW_TRUTH)
    assert truth.num_rows == SMALL.banners
    # every advertiser is spread over 1..3 planted clusters
    per_adv = truth.group_by(S.ADVERTISER).aggregate([(S.TRUE_CLUSTER, "count_distinct")])
    assert set(per_adv[f"{S.TRUE_CLUSTER}_count_distinct"].to_pylist()) <= {1, 2, 3}
    events = storage.read_table(S.RAW_EVENTS)
    kinds = events.group_by(S.EVENT).aggregate([([], "count_all")]).to_pydict()
    counts = dict(zip(kinds[S.EVENT], kinds["count_all"], strict=True))
    assert counts["request"] > counts["impression"] > counts["click"] > 0


def test_dedupe_quarantines_dirt_and_keeps_one_row_per_banner(generated):
    storage, summary = generated
    report = dedupe(BannersConfig(dim=SMALL.dim, buckets=3), storage, run_tasks=local_tasks)
    assert report["quarantined"] == {k: v for k, v in summary["dirty_rows"].items() if v}
    assert report["rows_in"] == summary["raw_rows"]
    assert report["rows_valid"] + report["quarantined_total"] == report["rows_in"]
    table = storage.read_table(S.T_BANNERS)
    ids = table[S.BANNER_ID].to_pylist()
    assert len(ids) == len(set(ids)) == report["banners"]
    assert report["banners"] + report["duplicate_rows"] == report["rows_valid"]
    # planted conflicts are found, except those whose other rows were quarantined
    assert 0 < report["conflicted_banners"] <= summary["conflicted_banners"]
    assert report["conflicted_banners"] >= 0.8 * summary["conflicted_banners"]
    assert storage.read_table(S.T_QUARANTINE).num_rows == report["quarantined_total"]
    # a rerun replaces the table: same content, no duplicates
    again = dedupe(BannersConfig(dim=SMALL.dim, buckets=2), storage, run_tasks=local_tasks)
    assert again["banners"] == report["banners"]
    assert storage.read_table(S.T_BANNERS).num_rows == report["banners"]
