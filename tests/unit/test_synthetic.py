"""Synthetic generator: schemas, determinism, exact dirt counts (checked by an independent pandas
re-implementation of the log-cleaning rules), ground truth, planted click rates, CLI."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from app import constants as C
from app.config import load_config, validate
from app.data import synthetic as S
from app.data.commands import register
from app.errors import ConfigError
from app.storage import Storage

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?$")
DIRTY = S.DirtConfig(
    missing_did=0.01, bad_time=0.01, unknown_slot=0.01, unknown_app=0.01, duplicate=0.02,
    no_millis=0.03, persona_conflict=0.05, persona_duplicate=0.05, clicks_without_show=0.05,
)  # fmt: skip


def small_cfg(**kw) -> S.GenerateConfig:
    base = dict(users=600, days=5, chunk_users=250, seed=7, dirt=DIRTY)
    return S.GenerateConfig(**{**base, **kw})


def read(storage: Storage, table: str) -> pd.DataFrame:
    return pq.read_table(storage.path(table)).to_pandas()


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    storage = Storage(str(tmp_path_factory.mktemp("dirty")))
    summary = S.generate(small_cfg(), storage)
    return storage, summary


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Bigger and without dirt: for the statistical checks."""
    storage = Storage(str(tmp_path_factory.mktemp("clean")))
    S.generate(S.GenerateConfig(users=3000, days=7, seed=3, dirt=S.DirtConfig.clean()), storage)
    return storage


# ---------------------------------------------------------------- the reference cleaning (oracle)
def clean_persona_dids(persona: pd.DataFrame) -> set[str]:
    pairs = persona.drop_duplicates().groupby(C.DID).size()
    return set(pairs[pairs == 1].index)


def reference_clean(storage: Storage, log: str, time_col: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The pipeline's rules, one reason per row, in order; returns the kept rows and the counts."""
    df = read(storage, log)
    slots = set(read(storage, C.RAW_SLOT)[C.SLOT_ID])
    apps = set(read(storage, C.RAW_KEYWORD)[C.SPREAD_APP_ID])
    dids = clean_persona_dids(read(storage, C.RAW_PERSONA))
    valid_time = df[time_col].map(lambda t: isinstance(t, str) and bool(TIME_RE.match(t)))
    rules = [
        ("missing_did", df[C.DID].isna() | (df[C.DID] == "")),
        ("bad_time", ~valid_time),
        ("unknown_slot", ~df[C.SLOT_ID].isin(slots)),
        ("unknown_app", ~df[C.SPREAD_APP_ID].isin(apps)),
        ("unknown_did", ~df[C.DID].isin(dids)),
    ]
    counts, alive = {}, pd.Series(True, index=df.index)
    for reason, bad in rules:
        counts[reason] = int((alive & bad).sum())
        alive &= ~bad
    kept = df[alive]
    dup = kept.duplicated(keep="first")
    counts["duplicate"] = int(dup.sum())
    return kept[~dup], counts


def clicks_without_show(shows: pd.DataFrame, clicks: pd.DataFrame, storage: Storage) -> int:
    kw = read(storage, C.RAW_KEYWORD).set_index(C.SPREAD_APP_ID)[C.KEYWORD]

    def triples(df, col):
        return pd.DataFrame({"did": df[C.DID], "day": df[col].str[:10], "kw": df[C.SPREAD_APP_ID].map(kw)})

    shown = set(map(tuple, triples(shows, C.SHOW_TIME).drop_duplicates().to_numpy()))
    return sum(t not in shown for t in map(tuple, triples(clicks, C.CLICK_TIME).to_numpy()))


# ---------------------------------------------------------------- config
def test_configs_load_and_unknown_keys_are_refused():
    full = load_config(S.GenerateConfig, "configs/generate.yaml")
    smoke = load_config(S.GenerateConfig, "configs/smoke/generate.yaml")
    assert (full.users, full.days, smoke.users, smoke.days) == (20_000, 14, 2000, 14)
    assert full.num_chunks == 2 and smoke.num_chunks == 2
    with pytest.raises(ConfigError, match="bogus"):
        validate(S.GenerateConfig, {"users": 10, "bogus": 1})
    with pytest.raises(ConfigError, match="dirt.typo"):
        validate(S.GenerateConfig, {"dirt": {"typo": 0.1}})
    with pytest.raises(ConfigError, match="interest_keywords"):
        validate(S.GenerateConfig, {"num_keywords": 3, "interest_keywords": 4})


# ---------------------------------------------------------------- pure helpers (table-driven)
@pytest.mark.parametrize(
    "kind, expected",
    [
        (0, "2020-01-02 01:02:03.045"),
        (1, "2020-01-02 01:02:03"),
        (2, "2020-01-02T01:02"),
        (3, "02/01/2020 01:02:03"),
        (4, ""),
        (5, "not a time"),
    ],
)
def test_time_strings_golden(kind, expected):
    parts = S._time_parts(S.dt.date(2020, 1, 1), 3)
    one = np.array([1]), np.array([3723]), np.array([45]), np.array([kind], dtype=np.int8)
    # the row is second in a batch so that a special row among normal ones is checked too
    out = S.time_strings(parts, *[np.concatenate([np.array([0], a.dtype), a]) for a in one])
    assert out.to_pylist() == ["2020-01-01 00:00:00.000", expected]


def test_spaced_seconds_keep_the_gap_and_the_day():
    rng = np.random.default_rng(0)
    counts = np.array([1, 0, 5, 2000, 3])
    group = np.repeat(np.arange(counts.size), counts)
    sec = S.spaced_seconds(rng, group, counts)
    for g in range(counts.size):
        s = sec[group == g]
        assert np.all(np.diff(s) >= S.SHOW_GAP_S)
        assert s.size == 0 or (s.min() >= 0 and s.max() < S.DAY_S - S.SHOW_GAP_S)


def test_sample_rows_follows_each_rows_distribution():
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]])
    row = np.repeat([0, 1], 50_000)
    got = S.sample_rows(np.random.default_rng(0), probs, row)
    np.testing.assert_allclose(np.bincount(got[:50_000], minlength=3) / 50_000, probs[0], atol=0.01)
    assert np.all(got[50_000:] == 2)


# ---------------------------------------------------------------- written tables
def test_layout_schemas_and_values(dirty):
    storage, summary = dirty
    assert summary["chunks"] == 3
    for table in (C.RAW_PERSONA, C.RAW_SHOWLOG, C.RAW_CLICKLOG):
        names = [f.rsplit("/", 1)[1] for f in storage.list_files(table)]
        assert names == [f"part-{c:05d}.parquet" for c in range(3)]
    expected = {
        C.RAW_PERSONA: C.PERSONA_COLUMNS, C.RAW_SHOWLOG: C.SHOWLOG_COLUMNS,
        C.RAW_CLICKLOG: C.CLICKLOG_COLUMNS, C.RAW_KEYWORD: C.KEYWORD_TABLE_COLUMNS,
        C.RAW_SLOT: C.SLOT_TABLE_COLUMNS,
    }  # fmt: skip
    for table, columns in expected.items():
        schema = pq.read_table(storage.path(table)).schema
        assert schema.names == columns
        assert all(str(t) == "string" for t in schema.types), (table, schema)
    persona = read(storage, C.RAW_PERSONA)
    assert persona[C.DID].str.fullmatch(r"[0-9a-f]{64}").all()
    assert set(persona[C.GENDER_RAW]) == {"0", "1"}
    assert set(persona[C.AGE_RAW]) <= set("123456")
    keywords = read(storage, C.RAW_KEYWORD)
    assert len(keywords) == 30 * 5 and keywords[C.SPREAD_APP_ID].is_unique
    assert read(storage, C.RAW_SLOT)[C.SLOT_ID].is_unique


def test_chunks_cover_each_user_once(dirty):
    storage, _ = dirty
    users = pq.read_table(storage.path(C.RAW_TRUTH, "users.parquet")).to_pandas()
    assert len(users) == 600 and users["did"].is_unique
    assert set(read(storage, C.RAW_PERSONA)[C.DID]) == set(users["did"])
    assert users["did"][0] == S.user_dids(7, 0, 1)[0]


def test_dirt_counts_equal_the_reference_cleaning(dirty):
    storage, _ = dirty
    dirt = storage.read_json(f"{C.RAW_TRUTH}/dirt.json")
    shows, show_counts = reference_clean(storage, C.RAW_SHOWLOG, C.SHOW_TIME)
    clicks, click_counts = reference_clean(storage, C.RAW_CLICKLOG, C.CLICK_TIME)
    assert dirt["showlog"] == show_counts and dirt["clicklog"] == click_counts
    assert min(show_counts.values()) > 0 and min(click_counts.values()) > 0  # every kind exercised
    assert dirt["clean_rows"] == {"showlog": len(shows), "clicklog": len(clicks)}
    assert dirt["unknown_did_show_rows"] == show_counts["unknown_did"]
    assert dirt["unknown_did_click_rows"] == click_counts["unknown_did"]
    assert dirt["clicks_without_show"] == clicks_without_show(shows, clicks, storage) > 0
    no_millis = {
        "showlog": int(shows[C.SHOW_TIME].str.len().eq(19).sum()),
        "clicklog": int(clicks[C.CLICK_TIME].str.len().eq(19).sum()),
    }
    assert dirt["no_millis_rows"] == no_millis and no_millis["showlog"] > 0


def test_persona_counts(dirty):
    storage, _ = dirty
    dirt = storage.read_json(f"{C.RAW_TRUTH}/dirt.json")
    persona = read(storage, C.RAW_PERSONA)
    pairs = persona.drop_duplicates().groupby(C.DID).size()
    conflict_dids = set(pairs[pairs > 1].index)
    assert dirt["persona_conflict_dids"] == len(conflict_dids) > 0
    assert dirt["persona_conflict_rows"] == persona[C.DID].isin(conflict_dids).sum()
    assert dirt["persona_duplicate_rows"] == persona.duplicated().sum() > 0
    assert dirt["persona_clean_dids"] == len(clean_persona_dids(persona)) == 600 - len(conflict_dids)
    assert dirt["rows"]["persona"] == len(persona)


def test_zero_dirt_gives_zero_counts(storage):
    S.generate(small_cfg(users=300, dirt=S.DirtConfig.clean()), storage)
    dirt = storage.read_json(f"{C.RAW_TRUTH}/dirt.json")
    shows, show_counts = reference_clean(storage, C.RAW_SHOWLOG, C.SHOW_TIME)
    clicks, click_counts = reference_clean(storage, C.RAW_CLICKLOG, C.CLICK_TIME)
    zero = dict.fromkeys(S.LOG_REASONS, 0)
    assert dirt["showlog"] == show_counts == zero and dirt["clicklog"] == click_counts == zero
    assert clicks_without_show(shows, clicks, storage) == dirt["clicks_without_show"] == 0
    for key in ("persona_conflict_dids", "persona_duplicate_rows"):
        assert dirt[key] == 0
    assert dirt["no_millis_rows"] == {"showlog": 0, "clicklog": 0}
    assert dirt["clean_rows"] == {k: dirt["rows"][k] for k in ("showlog", "clicklog")}


# ---------------------------------------------------------------- determinism
def _files(storage: Storage) -> dict[str, bytes]:
    base = storage.path("raw")
    return {f[len(base) :]: open(f, "rb").read() for f in storage.list_files("raw")}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    cfg = small_cfg(users=300, days=3)
    roots = [Storage(str(tmp_path / name)) for name in ("a", "b", "c")]
    S.generate(cfg, roots[0])
    S.generate(cfg, roots[1])
    S.generate(cfg.model_copy(update={"seed": 8}), roots[2])
    a, b, c = (_files(r) for r in roots)
    assert a == b
    assert a.keys() == c.keys()
    assert a["/showlog/part-00000.parquet"] != c["/showlog/part-00000.parquet"]


def test_rerun_replaces_every_table(storage):
    S.generate(small_cfg(users=600), storage)  # 3 chunks
    S.generate(small_cfg(users=200), storage)  # 1 chunk: no stale parts may stay
    assert len(storage.list_files(C.RAW_SHOWLOG)) == 1
    assert len(read(storage, C.RAW_PERSONA)[C.DID].unique()) == 200
    assert not storage.list_files("_staging")


# ---------------------------------------------------------------- ground truth
def test_truth_lookups_match_model_json(dirty):
    storage, _ = dirty
    truth = S.Truth.load(storage)
    model = storage.read_json(f"{C.RAW_TRUTH}/model.json")
    users = pq.read_table(storage.path(C.RAW_TRUTH, "users.parquet")).to_pandas()
    dids = users["did"].to_numpy()[:50]
    keywords = np.array(model["keywords"])[np.arange(50) % len(model["keywords"])]
    seg = users["segment"].to_numpy()[:50]
    np.testing.assert_array_equal(truth.segment(dids), seg)
    expected = np.asarray(model["click_prob"])[seg, np.arange(50) % len(model["keywords"])]
    np.testing.assert_array_equal(truth.click_prob(dids, keywords), expected)
    matrix = truth.click_prob_matrix(dids)
    assert matrix.shape == (50, 30)
    np.testing.assert_array_equal(matrix[7], np.asarray(model["click_prob"])[seg[7]])
    assert truth.segment(["f" * 64, dids[0]]).tolist() == [-1, seg[0]]
    got = truth.click_prob(["f" * 64, dids[0]], [model["keywords"][0], "no-such-keyword"])
    assert np.isnan(got).all()
    np.testing.assert_allclose(truth.segment_prior.sum(), 1.0)
    np.testing.assert_allclose(truth.show_matrix.sum(axis=1), 1.0)
    assert truth.gender_probs.shape == (8, 2) and truth.age_probs.shape == (8, 6)
    assert truth.dirt["persona_conflict_dids"] > 0
    assert set(truth.app_keyword.values()) == set(truth.keywords)


def test_interest_keywords_have_markedly_higher_ctr():
    m = S.plant(S.GenerateConfig())
    top = m.click_prob[np.arange(8), m.interest.argmax(axis=1)]
    assert np.all(top > 0.05) and np.median(m.click_prob) < 0.03


def test_shows_and_clicks_follow_the_planted_model(clean):
    truth = S.Truth.load(clean)
    shows = read(clean, C.RAW_SHOWLOG)
    clicks = read(clean, C.RAW_CLICKLOG)
    app_kw = truth.app_keyword
    seg = truth.segment(shows[C.DID].to_numpy())
    kw = truth.keyword_index(shows[C.SPREAD_APP_ID].map(app_kw).to_numpy())
    assert (seg >= 0).all() and (kw >= 0).all()
    # shows: keyword distribution per segment is the planted show_prob
    for s in range(truth.num_segments):
        freq = np.bincount(kw[seg == s], minlength=30) / max((seg == s).sum(), 1)
        if (seg == s).sum() > 2000:
            assert 0.5 * np.abs(freq - truth.show_matrix[s]).sum() < 0.05
    # clicks: per segment, observed clicks vs the sum of planted probabilities of its shows
    p = truth.click_matrix[seg, kw]
    click_seg = truth.segment(clicks[C.DID].to_numpy())
    for s in range(truth.num_segments):
        expected, var = p[seg == s].sum(), (p * (1 - p))[seg == s].sum()
        observed = (click_seg == s).sum()
        assert abs(observed - expected) < 5 * np.sqrt(var) + 1, (s, observed, expected)
    # and a click is always 1..29 s after a show of the same user and app
    both = clicks.merge(shows, on=[C.DID, C.SPREAD_APP_ID, C.ADV_ID, C.SLOT_ID, C.NET_TYPE])
    delay = (pd.to_datetime(both[C.CLICK_TIME]) - pd.to_datetime(both[C.SHOW_TIME])).dt.total_seconds()
    matched = both[(delay > 0) & (delay < S.SHOW_GAP_S)]
    assert len(matched[[C.DID, C.CLICK_TIME]].drop_duplicates()) == len(clicks)


# ---------------------------------------------------------------- CLI
def test_cli_generate_smoke(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="stage", required=True))
    root = str(tmp_path / "root")
    args = parser.parse_args(
        ["data", "generate", "--smoke", "--root", root, "--set", "users=150", "--set", "days=2"]
    )
    summary = args.func(args)
    assert summary["users"] == 150 and summary["days"] == 2
    assert summary["config"] == "configs/smoke/generate.yaml"
    assert Storage(root).exists(C.RAW_TRUTH, "dirt.json")
    assert summary["rows"]["showlog"] == len(read(Storage(root), C.RAW_SHOWLOG))
