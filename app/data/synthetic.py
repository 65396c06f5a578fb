"""Synthetic raw ad logs from a planted model, with the ground truth saved and the dirt counted.

The planted model (fixed by the seed, saved in ``raw/truth/model.json``):

* every user belongs to one latent *segment* (prior ``segment_prior``) and has an *activity*
  factor (log-normal, mean 1) scaling their mean number of shows per day;
* each segment has a keyword *interest* profile (Dirichlet, concentrated on ``interest_keywords``
  keywords); a show picks its keyword with probability ∝ popularity × interest (``show_prob``);
* each show is clicked with the planted probability ``click_prob[segment, keyword]``: ``base_ctr``
  on keywords the segment does not care about, up to ``ctr_lift`` × ``base_ctr`` on its top one;
* gender and age are drawn from per-segment distributions (``gender_probs``, ``age_probs``).

So the best achievable model and the true lookalike audience are known: see :class:`Truth`.

Dirt. Every dirty log row is a *copy* of a clean row of a clean user with exactly one field broken
(or an exact copy, for ``duplicate``); the source rows of the different kinds are disjoint, and
clean rows are never modified, so every show keeps its clicks. ``raw/truth/dirt.json`` holds the
exact count of each kind, in the pipeline's terms (one reason per rejected row, checked in the
order missing_did, bad_time, unknown_slot, unknown_app, unknown_did, duplicate). Persona conflicts
make *all* log rows of their users ``unknown_did``. Clicks without a show are extra clean-looking
clicks on a (user, day, keyword) with no show; they pass log cleaning and are dropped later.

Uniqueness. Within a user-day, shows are at least ``SHOW_GAP_S`` seconds apart and a click comes
1..``SHOW_GAP_S - 1`` s after its show, so clean rows differ at the second (the only exact
duplicates are the injected ones, even after millisecond removal), and no show is in the last
``SHOW_GAP_S`` s of a day, so a click is always on its show's day.

Determinism and size. Users are generated ``chunk_users`` at a time (all their days), chunk ``c``
from the seed sequence ``(seed, 1, c)``; the model from ``(seed, 0)``. The chunk size is part of the
config, so a config fixes the bytes. Everything is vectorized numpy/Arrow; one chunk is in memory
at a time. The whole set of raw tables is staged and swapped in by one journaled commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from app import constants as C
from app.config import StrictModel, dump_config
from app.storage import Storage

log = logging.getLogger(__name__)

SHOW_GAP_S = 30  # minimum gap between two shows of a user on a day; clicks come 1..29 s after
DAY_S = 86400
MAX_SHOWS_PER_DAY = 2000  # 2000 * 30 s < one day, so the spaced show times always fit
N_UNKNOWN_IDS = 64  # size of the pools of unknown slot ids / app ids used by the dirt

GENDER_VALUES = ["0", "1"]
AGE_VALUES = ["1", "2", "3", "4", "5", "6"]
KEYWORD_VOCAB = [
    "video", "info", "game", "reading", "music", "travel", "shopping", "education", "finance",
    "health", "sports", "news", "social", "weather", "food", "auto", "photo", "tools", "lifestyle",
    "kids", "fitness", "movie", "comic", "lottery", "loan", "insurance", "job", "house", "beauty",
    "pet", "radio", "dating", "map", "taxi", "bank", "office", "browser", "security", "wallpaper",
    "theme",
]  # fmt: skip
MEDIA_CATEGORIES = [
    "Huawei Video", "Huawei Reading", "Huawei Music", "Huawei Browser", "Huawei Magazine",
    "Huawei AppGallery", "Huawei Assistant", "Huawei Themes",
]  # fmt: skip
DEVICES = [
    "MAR-AL00", "LIO-AN00", "ELE-AL00", "VOG-AL10", "TAS-AL00", "ANA-AN00", "JEF-AN00",
    "OXF-AN10", "NOH-AN00", "WLZ-AN00", "JNY-AL10", "CDY-AN90",
]  # fmt: skip
NET_TYPES, NET_P = ["4G", "WIFI", "5G", "3G"], [0.45, 0.40, 0.10, 0.05]
ADV_TYPES, ADV_TYPE_P = ["native", "banner", "splash", "video"], [0.5, 0.2, 0.15, 0.15]
BILL_MODES, BILL_P = ["CPC", "CPM", "CPD"], [0.6, 0.3, 0.1]

# time_kind codes of a log row: 0 normal "...SS.fff"; 1 valid without millis; >= 2 malformed
TIME_NORMAL, TIME_NO_MILLIS = 0, 1
MALFORMED_TIMES = ["iso_minutes", "day_first", "empty", "text"]  # kinds 2, 3, 4, 5
# did_kind codes: 0 normal, 1 empty string, 2 null
DID_EMPTY, DID_NULL = 1, 2

#: quarantine reasons of the log-cleaning stage, in the order the pipeline applies them
LOG_REASONS = ["missing_did", "bad_time", "unknown_slot", "unknown_app", "unknown_did", "duplicate"]
#: dirt kinds made as broken copies of clean rows (unknown_did comes from persona conflicts)
COPY_KINDS = ["missing_did", "bad_time", "unknown_slot", "unknown_app", "duplicate"]
LOG_FIELDS = ["user", "day", "sec", "ms", "app", "ad", "slot", "net", "did_kind", "time_kind"]


# ====================================================================== config
class DirtConfig(StrictModel):
    """Dirt rates. Log kinds are fractions of the generated rows of each log; persona kinds are
    fractions of users; ``clicks_without_show`` is a fraction of the generated clicks.
    ``no_millis`` is not dirt: valid timestamps without milliseconds, which must be accepted."""

    missing_did: float = Field(0.002, ge=0.0, le=0.1)
    bad_time: float = Field(0.002, ge=0.0, le=0.1)
    unknown_slot: float = Field(0.002, ge=0.0, le=0.1)
    unknown_app: float = Field(0.002, ge=0.0, le=0.1)
    duplicate: float = Field(0.005, ge=0.0, le=0.1)
    no_millis: float = Field(0.01, ge=0.0, le=0.5)
    persona_conflict: float = Field(0.01, ge=0.0, le=0.5)
    persona_duplicate: float = Field(0.01, ge=0.0, le=0.5)
    clicks_without_show: float = Field(0.01, ge=0.0, le=0.5)

    @classmethod
    def clean(cls) -> DirtConfig:
        """All rates 0: a dataset without any dirt."""
        return cls(**{name: 0.0 for name in cls.model_fields})


class GenerateConfig(StrictModel):
    """Config of ``python -m app data generate`` (``configs/generate.yaml``)."""

    users: int = Field(20_000, ge=1)
    days: int = Field(14, ge=1, le=3660)
    start_date: dt.date = dt.date(2020, 1, 1)
    num_segments: int = Field(8, ge=1, le=1000)
    num_keywords: int = Field(30, ge=2, le=10_000)
    interest_keywords: int = Field(3, ge=1, description="keywords a segment is interested in")
    apps_per_keyword: int = Field(5, ge=1, le=1000)
    ads_per_app: int = Field(3, ge=1, le=100)
    num_slots: int = Field(12, ge=1, le=10_000)
    mean_shows_per_day: float = Field(4.0, gt=0.0, le=1000.0, description="per user at activity 1")
    activity_sigma: float = Field(0.5, ge=0.0, le=3.0, description="log-normal sigma of activity")
    base_ctr: float = Field(0.01, gt=0.0, lt=1.0, description="CTR on keywords of no interest")
    ctr_lift: float = Field(12.0, ge=1.0, description="CTR multiplier on the top interest keyword")
    seed: int = Field(0, ge=0)
    chunk_users: int = Field(10_000, ge=1, description="users generated and written per chunk")
    dirt: DirtConfig = DirtConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.interest_keywords > self.num_keywords:
            raise ValueError(f"interest_keywords {self.interest_keywords} > num_keywords {self.num_keywords}")
        rows = min(self.chunk_users, self.users) * self.days * self.mean_shows_per_day
        if rows > 20_000_000:  # keeps one chunk's string columns well under 2 GiB
            raise ValueError(f"about {rows:.0f} show rows per chunk; lower chunk_users")
        return self

    @property
    def num_chunks(self) -> int:
        return -(-self.users // self.chunk_users)


# ====================================================================== planted model
@dataclass
class Planted:
    """The planted model and the id dictionaries (index -> string) shared by all chunks."""

    keywords: list[str]
    apps: list[str]  # app i belongs to keyword i // apps_per_keyword; then N_UNKNOWN_IDS unknown
    ads: list[str]  # ad j belongs to app j // ads_per_app
    ad_type: np.ndarray  # (n_ads,) index into ADV_TYPES
    ad_bill: np.ndarray  # (n_ads,) index into BILL_MODES
    slots: list[str]  # num_slots whitelisted, then N_UNKNOWN_IDS unknown
    slot_media: list[str]  # (num_slots,)
    popularity: np.ndarray  # (K,)
    segment_prior: np.ndarray  # (S,)
    interest: np.ndarray  # (S, K) rows sum to 1
    show_prob: np.ndarray  # (S, K) ∝ popularity × interest, rows sum to 1
    click_prob: np.ndarray  # (S, K)
    gender_probs: np.ndarray  # (S, 2) over GENDER_VALUES
    age_probs: np.ndarray  # (S, 6) over AGE_VALUES


def _keyword_names(k: int) -> list[str]:
    return [KEYWORD_VOCAB[i] if i < len(KEYWORD_VOCAB) else f"kw{i}" for i in range(k)]


def _slot_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct slot ids in the spec's style (``l03493p0r3``), none in ``taken``."""
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyz"))
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        for chars in rng.choice(alphabet, size=(n, 9)):
            sid = "l" + "".join(chars)
            if sid not in seen and len(out) < n:
                seen.add(sid)
                out.append(sid)
    return out


def plant(cfg: GenerateConfig) -> Planted:
    """Draw the planted model from the seed sequence ``(seed, 0)``."""
    rng = np.random.default_rng([cfg.seed, 0])
    S, K = cfg.num_segments, cfg.num_keywords
    n_apps = K * cfg.apps_per_keyword
    n_ads = n_apps * cfg.ads_per_app

    apps = [f"C{x}" for x in 10_000_000 + rng.choice(90_000_000, n_apps, replace=False)]
    # unknown app ids have 9 digits, so they can never equal a known (8-digit) one
    apps += [f"C{x}" for x in 100_000_000 + rng.choice(900_000_000, N_UNKNOWN_IDS, replace=False)]
    ads = [str(x) for x in 40_000_000 + rng.choice(10_000_000, n_ads, replace=False)]
    ad_type = rng.choice(len(ADV_TYPES), n_ads, p=ADV_TYPE_P)
    ad_bill = rng.choice(len(BILL_MODES), n_ads, p=BILL_P)
    slots = _slot_ids(rng, cfg.num_slots, set())
    slots += _slot_ids(rng, N_UNKNOWN_IDS, set(slots))
    slot_media = [MEDIA_CATEGORIES[i] for i in rng.integers(0, len(MEDIA_CATEGORIES), cfg.num_slots)]

    popularity = 1.0 / (1.0 + rng.permutation(K)) ** 0.8
    popularity /= popularity.sum()
    segment_prior = rng.dirichlet(np.full(S, 5.0))
    interest = np.empty((S, K))
    for s in range(S):  # S is small: a loop over segments, not rows
        alpha = np.full(K, 0.5)
        alpha[rng.choice(K, cfg.interest_keywords, replace=False)] = 8.0
        interest[s] = rng.dirichlet(alpha)
    show_prob = popularity * interest
    show_prob /= show_prob.sum(axis=1, keepdims=True)
    rel = interest / interest.max(axis=1, keepdims=True)
    noise = np.exp(rng.normal(0.0, 0.15, (S, K)))
    click_prob = np.clip(cfg.base_ctr * (1.0 + (cfg.ctr_lift - 1.0) * rel) * noise, 1e-4, 0.9)
    p_male = rng.uniform(0.15, 0.85, S)
    gender_probs = np.stack([1.0 - p_male, p_male], axis=1)
    age_probs = rng.dirichlet(np.full(len(AGE_VALUES), 0.8), S)
    return Planted(
        keywords=_keyword_names(K), apps=apps, ads=ads, ad_type=ad_type, ad_bill=ad_bill,
        slots=slots, slot_media=slot_media, popularity=popularity, segment_prior=segment_prior,
        interest=interest, show_prob=show_prob, click_prob=click_prob, gender_probs=gender_probs,
        age_probs=age_probs,
    )  # fmt: skip


def model_json(cfg: GenerateConfig, m: Planted) -> dict[str, Any]:
    """The planted model as saved in ``raw/truth/model.json``."""
    apk, n_apps = cfg.apps_per_keyword, cfg.num_keywords * cfg.apps_per_keyword
    return {
        "seed": cfg.seed,
        "users": cfg.users,
        "days": cfg.days,
        "start_date": cfg.start_date.isoformat(),
        "num_segments": cfg.num_segments,
        "keywords": m.keywords,
        "spread_app_ids": {kw: m.apps[i * apk : (i + 1) * apk] for i, kw in enumerate(m.keywords)},
        "unknown_spread_app_ids": m.apps[n_apps:],
        "slots": dict(zip(m.slots[: cfg.num_slots], m.slot_media, strict=True)),
        "unknown_slot_ids": m.slots[cfg.num_slots :],
        "keyword_popularity": m.popularity.tolist(),
        "segment_prior": m.segment_prior.tolist(),
        "interest": m.interest.tolist(),
        "show_prob": m.show_prob.tolist(),
        "click_prob": m.click_prob.tolist(),
        "gender_values": GENDER_VALUES,
        "gender_probs": m.gender_probs.tolist(),
        "age_values": AGE_VALUES,
        "age_probs": m.age_probs.tolist(),
        "show_gap_seconds": SHOW_GAP_S,
        "config": cfg.model_dump(mode="json"),
    }


# ====================================================================== vectorized helpers
def sample_rows(rng: np.random.Generator, probs: np.ndarray, row: np.ndarray) -> np.ndarray:
    """One categorical draw per element of ``row`` from ``probs[row]`` (vectorized inverse CDF).

    Block ``r`` of the flattened CDF holds ``r + cdf[r]`` in ``(r, r + 1]``, so one searchsorted
    of ``row + u`` finds the category inside the right block.
    """
    n_rows, k = probs.shape
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    u = rng.random(row.shape[0])
    return np.searchsorted(flat, row + u, side="right") - row * k


def spaced_seconds(rng: np.random.Generator, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Second of day of each row of ``group`` (rows of a group contiguous, ``counts`` per group):
    uniform random, at least ``SHOW_GAP_S`` apart within a group and below ``DAY_S - SHOW_GAP_S``.

    Draw ``v`` in ``[0, W - (n-1)G)``, sort within the group, add ``rank * G``.
    """
    window = DAY_S - SHOW_GAP_S
    n_in_group = counts[group]
    span = window - (n_in_group - 1) * SHOW_GAP_S
    v = (rng.random(group.shape[0]) * span).astype(np.int64)
    key = group.astype(np.int64) * DAY_S + v
    key.sort()  # groups occupy disjoint key ranges, so rows stay in their group
    starts = np.cumsum(counts) - counts
    rank = np.arange(group.shape[0]) - starts[group]
    return (key - group.astype(np.int64) * DAY_S + rank * SHOW_GAP_S).astype(np.int32)


def _digits2(v: np.ndarray) -> np.ndarray:
    """``(n, 2)`` uint8 ASCII digits of ``v`` in 0..99."""
    return np.stack([48 + v // 10, 48 + v % 10], axis=1).astype(np.uint8)


def _time_parts(start: dt.date, days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables: ``"YYYY-MM-DD "`` per day (S11), ``"HH:MM:SS"`` per second of day and
    ``".fff"`` per millisecond as raw 8- and 4-byte integers, so a timestamp is three integer
    gathers into one 23-byte record."""
    dates = np.array([(start + dt.timedelta(days=d)).isoformat() + " " for d in range(days)], dtype="S11")
    sec = np.arange(DAY_S)
    colon = np.full((DAY_S, 1), ord(":"), dtype=np.uint8)
    tod = np.hstack([_digits2(sec // 3600), colon, _digits2(sec // 60 % 60), colon, _digits2(sec % 60)])
    ms = np.arange(1000)
    millis = np.hstack([np.full((1000, 1), ord("."), dtype=np.uint8), 48 + (ms // 100)[:, None].astype(np.uint8),
                        _digits2(ms % 100)])  # fmt: skip
    return (
        dates,
        np.ascontiguousarray(tod).view(np.uint64)[:, 0],
        np.ascontiguousarray(millis).view(np.uint32)[:, 0],
    )


_TIME_RECORD = np.dtype({"names": ["date", "tod", "ms"], "formats": ["S11", "u8", "u4"],
                         "offsets": [0, 11, 19], "itemsize": 23})  # fmt: skip


def time_strings(parts, day: np.ndarray, sec: np.ndarray, ms: np.ndarray, kind: np.ndarray) -> pa.Array:
    """Timestamp strings: ``YYYY-MM-DD HH:MM:SS.fff`` (kind 0) written as fixed 23-byte records
    that become an Arrow string array without a copy; the few other kinds are built apart and put
    in place with one ``take``: 1 no millis; 2 ``YYYY-MM-DDTHH:MM``; 3 ``DD/MM/YYYY HH:MM:SS``;
    4 empty; 5 ``not a time``.
    """
    dates, tod, millis = parts
    n = day.shape[0]
    rec = np.empty(n, dtype=_TIME_RECORD)
    rec["date"], rec["tod"], rec["ms"] = dates[day], tod[sec], millis[ms]
    offsets = np.arange(0, 23 * (n + 1), 23, dtype=np.int32)
    normal = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(rec.view(np.uint8)))
    special = np.flatnonzero(kind)
    if not special.size:
        return normal
    k = kind[special]
    mat = rec[special].view(np.uint8).reshape(-1, 23).copy()
    length = np.full(special.size, 23, dtype=np.int64)
    length[k == TIME_NO_MILLIS] = 19
    rows = k == 2
    mat[rows, 10] = ord("T")
    length[rows] = 16
    rows = np.flatnonzero(k == 3)
    mat[rows, :19] = mat[rows][:, [8, 9, 4, 5, 6, 4, 0, 1, 2, 3, 10, *range(11, 19)]]
    mat[rows, 2] = mat[rows, 5] = ord("/")
    length[rows] = 19
    length[k == 4] = 0
    rows = k == 5
    mat[rows, :10] = np.frombuffer(b"not a time", dtype=np.uint8)
    length[rows] = 10
    sp_offsets = np.zeros(special.size + 1, dtype=np.int32)
    np.cumsum(length, out=sp_offsets[1:])
    data = mat[np.arange(23)[None, :] < length[:, None]]  # row-major: each row's prefix, in order
    fixed = pa.StringArray.from_buffers(special.size, pa.py_buffer(sp_offsets), pa.py_buffer(data))
    idx = np.arange(n)
    idx[special] = n + np.arange(special.size)
    return pa.concat_arrays([normal, fixed]).take(idx)


def user_dids(seed: int, start: int, stop: int) -> list[str]:
    """64-hex-char dids: sha256 of ``"<seed>:<user number>"`` (a loop per user, not per row)."""
    return [hashlib.sha256(f"{seed}:{u}".encode()).hexdigest() for u in range(start, stop)]


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(pool, n, replace=False) if n else pool[:0]


# ====================================================================== one chunk
@dataclass
class Chunk:
    """One chunk of users with their persona rows and both logs, as integer codes."""

    dids: list[str]
    segment: np.ndarray
    activity: np.ndarray
    gender: np.ndarray  # index into GENDER_VALUES
    age: np.ndarray  # index into AGE_VALUES
    device: np.ndarray
    conflict: np.ndarray  # bool per user
    persona_rows: dict[str, np.ndarray]  # user, gender, age
    shows: dict[str, np.ndarray]  # LOG_FIELDS
    clicks: dict[str, np.ndarray]
    counts: dict[str, Any]


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}


def _take(rows: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {f: v[idx] for f, v in rows.items()}


def _make_persona(rng, cfg: GenerateConfig, gender, age, conflict) -> tuple[dict, dict]:
    """All users once, plus a conflicting second row per conflict user, plus exact duplicates."""
    users = np.arange(gender.shape[0])
    conf = users[conflict]
    flip = rng.random(conf.size) < 0.5  # change the gender, else the age
    g2 = np.where(flip, 1 - gender[conf], gender[conf])
    a2 = np.where(flip, age[conf], (age[conf] + rng.integers(1, len(AGE_VALUES), conf.size)) % 6)
    clean = users[~conflict]
    dup = np.sort(_pick(rng, clean, int(rng.binomial(clean.size, cfg.dirt.persona_duplicate))))
    rows = {
        "user": np.concatenate([users, conf, dup]),
        "gender": np.concatenate([gender, g2, gender[dup]]),
        "age": np.concatenate([age, a2, age[dup]]),
    }
    counts = {
        "persona_rows": int(rows["user"].size),
        "persona_conflict_dids": int(conf.size),
        "persona_conflict_rows": int(2 * conf.size),
        "persona_duplicate_rows": int(dup.size),
        "persona_clean_dids": int(clean.size),
    }
    return rows, counts


def _log_rows(rng, cfg: GenerateConfig, user, day, sec, kw) -> dict[str, np.ndarray]:
    """Log rows (code columns) for given users, days, seconds and keywords: a random app of the
    keyword, ad of the app, whitelisted slot, network type and milliseconds."""
    n = user.shape[0]
    app = kw * cfg.apps_per_keyword + rng.integers(0, cfg.apps_per_keyword, n)
    return {
        "user": user.astype(np.int32),
        "day": day.astype(np.int32),
        "sec": sec.astype(np.int32),
        "ms": rng.integers(0, 1000, n, dtype=np.int32),
        "app": app.astype(np.int32),
        "ad": (app * cfg.ads_per_app + rng.integers(0, cfg.ads_per_app, n)).astype(np.int32),
        "slot": rng.integers(0, cfg.num_slots, n, dtype=np.int32),
        "net": rng.choice(len(NET_TYPES), n, p=NET_P).astype(np.int8),
        "did_kind": np.zeros(n, dtype=np.int8),
        "time_kind": np.zeros(n, dtype=np.int8),
    }


def _make_shows(rng, cfg: GenerateConfig, m: Planted, segment, activity) -> dict[str, np.ndarray]:
    """Poisson(mean_shows_per_day × activity) shows per user-day, keyword ~ show_prob[segment]."""
    n_users, days = segment.shape[0], cfg.days
    lam = np.repeat(cfg.mean_shows_per_day * activity, days)
    counts = np.minimum(rng.poisson(lam), MAX_SHOWS_PER_DAY)
    group = np.repeat(np.arange(n_users * days), counts)  # user-major, then day
    user = group // days
    kw = sample_rows(rng, m.show_prob, segment[user])
    return _log_rows(rng, cfg, user, group % days, spaced_seconds(rng, group, counts), kw)


def _make_clicks(rng, cfg: GenerateConfig, m: Planted, shows, segment) -> dict[str, np.ndarray]:
    """Each show is clicked with the planted probability; the click copies the show's fields."""
    kw = shows["app"] // cfg.apps_per_keyword
    p = m.click_prob[segment[shows["user"]], kw]
    clicks = _take(shows, np.flatnonzero(rng.random(p.shape[0]) < p))
    n = clicks["sec"].shape[0]
    clicks["sec"] = clicks["sec"] + rng.integers(1, SHOW_GAP_S, n, dtype=np.int32)
    clicks["ms"] = rng.integers(0, 1000, n, dtype=np.int32)
    return clicks


def _clicks_without_show(rng, cfg: GenerateConfig, shows, clean_users, n_clicks) -> dict:
    """Clean-looking clicks on distinct (user, day, keyword) where that user had no such show."""
    want = int(rng.binomial(n_clicks, cfg.dirt.clicks_without_show)) if clean_users.size else 0
    if want == 0:
        return _take(shows, np.arange(0))
    K, days = cfg.num_keywords, cfg.days
    shown = np.sort((shows["user"].astype(np.int64) * days + shows["day"]) * K
                    + shows["app"] // cfg.apps_per_keyword)  # fmt: skip
    m = 4 * want + 16
    cand = (clean_users[rng.integers(0, clean_users.size, m)].astype(np.int64) * days
            + rng.integers(0, days, m)) * K + rng.integers(0, K, m)  # fmt: skip
    pos = np.minimum(np.searchsorted(shown, cand), max(shown.size - 1, 0))
    cand = cand[shown[pos] != cand] if shown.size else cand  # (np.isin hashes: 10x slower here)
    _, first = np.unique(cand, return_index=True)
    code = cand[np.sort(first)[:want]]
    user_day = code // K
    sec = rng.integers(0, DAY_S, code.shape[0])
    return _log_rows(rng, cfg, user_day // days, user_day % days, sec, code % K)


def _inject_log_dirt(rng, cfg: GenerateConfig, rows, conflict) -> tuple[dict, dict[str, int]]:
    """Append one broken copy per picked clean row (kinds on disjoint source rows) and mark
    the ``no_millis`` rows in place; return the rows and the counts (before clicks w/o show)."""
    d = cfg.dirt
    n_apps, n_slots = cfg.num_keywords * cfg.apps_per_keyword, cfg.num_slots
    eligible = np.flatnonzero(~conflict[rows["user"]])
    rates = [getattr(d, k) for k in COPY_KINDS] + [d.no_millis]
    want = [int(rng.binomial(eligible.size, r)) for r in rates]
    if sum(want) > eligible.size:  # only for tiny chunks: shrink proportionally
        want = [w * eligible.size // sum(want) for w in want]
    picks = _pick(rng, eligible, sum(want))
    bounds = np.cumsum([0, *want])
    src = {k: np.sort(picks[bounds[i] : bounds[i + 1]]) for i, k in enumerate([*COPY_KINDS, "nm"])}

    rows["time_kind"][src["nm"]] = TIME_NO_MILLIS
    copies = []
    for kind in COPY_KINDS:
        c = _take(rows, src[kind])
        n = src[kind].size
        if kind == "missing_did":
            c["did_kind"] = rng.integers(DID_EMPTY, DID_NULL + 1, n, dtype=np.int8)
        elif kind == "bad_time":
            c["time_kind"] = rng.integers(2, 2 + len(MALFORMED_TIMES), n, dtype=np.int8)
        elif kind == "unknown_slot":
            c["slot"] = (n_slots + rng.integers(0, N_UNKNOWN_IDS, n)).astype(np.int32)
        elif kind == "unknown_app":
            c["app"] = (n_apps + rng.integers(0, N_UNKNOWN_IDS, n)).astype(np.int32)
        copies.append(c)
    counts = {k: int(src[k].size) for k in COPY_KINDS}
    counts["unknown_did"] = int(conflict[rows["user"]].sum())
    counts["no_millis_rows"] = int(src["nm"].size)
    return _concat([rows, *copies]), counts


def make_chunk(cfg: GenerateConfig, m: Planted, index: int) -> Chunk:
    """Users ``[index * chunk_users, ...)`` with all their days, from seed sequence (seed, 1, index)."""
    rng = np.random.default_rng([cfg.seed, 1, index])
    start = index * cfg.chunk_users
    stop = min(cfg.users, start + cfg.chunk_users)
    n = stop - start
    segment = sample_rows(rng, m.segment_prior[None, :], np.zeros(n, dtype=np.int64))
    sigma = cfg.activity_sigma
    activity = rng.lognormal(-0.5 * sigma**2, sigma, n)
    gender = sample_rows(rng, m.gender_probs, segment)
    age = sample_rows(rng, m.age_probs, segment)
    device = rng.integers(0, len(DEVICES), n)
    conflict = np.zeros(n, dtype=bool)
    conflict[_pick(rng, np.arange(n), int(rng.binomial(n, cfg.dirt.persona_conflict)))] = True
    persona_rows, counts = _make_persona(rng, cfg, gender, age, conflict)

    shows = _make_shows(rng, cfg, m, segment, activity)
    clicks = _make_clicks(rng, cfg, m, shows, segment)
    n_clean_clicks = int((~conflict[clicks["user"]]).sum())
    cws = _clicks_without_show(rng, cfg, shows, np.flatnonzero(~conflict), n_clean_clicks)
    shows, show_counts = _inject_log_dirt(rng, cfg, shows, conflict)
    clicks, click_counts = _inject_log_dirt(rng, cfg, clicks, conflict)
    clicks = _concat([clicks, cws])
    counts.update(
        showlog={r: show_counts[r] for r in LOG_REASONS},
        clicklog={r: click_counts[r] for r in LOG_REASONS},
        no_millis_rows={"showlog": show_counts["no_millis_rows"], "clicklog": click_counts["no_millis_rows"]},
        clicks_without_show=int(cws["user"].size),
        rows={"showlog": int(shows["user"].size), "clicklog": int(clicks["user"].size)},
    )
    return Chunk(
        dids=user_dids(cfg.seed, start, stop), segment=segment, activity=activity, gender=gender,
        age=age, device=device, conflict=conflict, persona_rows=persona_rows, shows=shows,
        clicks=clicks, counts=counts,
    )  # fmt: skip


# ====================================================================== Arrow tables
def _strings(values: list[str]) -> pa.Array:
    return pa.array(values, type=pa.string())


def _coded(codes: np.ndarray, dictionary: pa.Array, mask: np.ndarray | None = None) -> pa.Array:
    """A dictionary-typed column: written to Parquet as a dictionary-encoded *string* column
    without re-hashing the values (about twice as fast as plain strings)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=mask), dictionary)


class _Dictionaries:
    """Arrow string arrays that code columns index into (built once per run)."""

    def __init__(self, cfg: GenerateConfig, m: Planted):
        self.apps, self.ads, self.slots = _strings(m.apps), _strings(m.ads), _strings(m.slots)
        self.ad_type, self.ad_bill = m.ad_type, m.ad_bill
        self.adv_types, self.bill_modes = _strings(ADV_TYPES), _strings(BILL_MODES)
        self.devices, self.nets = _strings(DEVICES), _strings(NET_TYPES)
        self.genders, self.ages = _strings(GENDER_VALUES), _strings(AGE_VALUES)
        self.time_parts = _time_parts(cfg.start_date, cfg.days)


def log_table(rows: dict[str, np.ndarray], dids: pa.Array, device: np.ndarray,
              dicts: _Dictionaries, time_column: str) -> pa.Table:  # fmt: skip
    """Columns of a log (``SHOWLOG_COLUMNS`` / ``CLICKLOG_COLUMNS``) from code columns; ``dids``
    ends with ``""`` (the empty-did dirt)."""
    did_idx = np.where(rows["did_kind"] == DID_EMPTY, len(dids) - 1, rows["user"])
    ad = rows["ad"]
    columns = {
        C.DID: _coded(did_idx, dids, mask=rows["did_kind"] == DID_NULL),
        C.ADV_ID: _coded(ad, dicts.ads),
        C.ADV_TYPE: _coded(dicts.ad_type[ad], dicts.adv_types),
        C.SLOT_ID: _coded(rows["slot"], dicts.slots),
        C.SPREAD_APP_ID: _coded(rows["app"], dicts.apps),
        C.DEVICE_NAME: _coded(device[rows["user"]], dicts.devices),
        C.NET_TYPE: _coded(rows["net"], dicts.nets),
        C.ADV_BILL_MODE_CD: _coded(dicts.ad_bill[ad], dicts.bill_modes),
        time_column: time_strings(dicts.time_parts, rows["day"], rows["sec"], rows["ms"], rows["time_kind"]),
    }
    return pa.table(columns)


def persona_table(rows: dict[str, np.ndarray], dids: pa.Array, dicts: _Dictionaries) -> pa.Table:
    return pa.table({
        C.DID: _coded(rows["user"], dids),
        C.GENDER_RAW: _coded(rows["gender"], dicts.genders),
        C.AGE_RAW: _coded(rows["age"], dicts.ages),
    })  # fmt: skip


def write_parquet(storage: Storage, path: str, table: pa.Table) -> None:
    """Write ``table`` with string columns only: the Arrow schema is not stored, so dictionary
    columns read back as plain strings. Timestamps (unique) are not dictionary-encoded and are the
    only columns with statistics (the rest would cost time for no reader's benefit)."""
    storage.makedirs(posixpath.dirname(path))
    times = [c for c in table.column_names if c in (C.SHOW_TIME, C.CLICK_TIME)]
    pq.write_table(
        table,
        storage.path(path),
        filesystem=storage.fs,
        store_schema=False,
        use_dictionary=[c for c in table.column_names if c not in times],
        write_statistics=times or False,
    )


def users_table(chunk: Chunk) -> pa.Table:
    """Ground truth per user (``raw/truth/users.parquet``)."""
    return pa.table({
        "did": _strings(chunk.dids),
        "segment": pa.array(chunk.segment, pa.int32()),
        "activity": pa.array(chunk.activity, pa.float64()),
        "gender": pa.array(chunk.gender, pa.int8()),
        "age": pa.array(chunk.age + 1, pa.int8()),
        "persona_conflict": pa.array(chunk.conflict),
    })  # fmt: skip


def keyword_table(cfg: GenerateConfig, m: Planted) -> pa.Table:
    n_apps = cfg.num_keywords * cfg.apps_per_keyword
    return pa.table({
        C.SPREAD_APP_ID: _strings(m.apps[:n_apps]),
        C.KEYWORD: _strings([m.keywords[i // cfg.apps_per_keyword] for i in range(n_apps)]),
    })  # fmt: skip


def slot_table(cfg: GenerateConfig, m: Planted) -> pa.Table:
    return pa.table({C.SLOT_ID: _strings(m.slots[: cfg.num_slots]), C.MEDIA_CATEGORY: _strings(m.slot_media)})


# ====================================================================== generate
def _add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for k, v in part.items():
        if isinstance(v, dict):
            _add_counts(total.setdefault(k, {}), v)
        else:
            total[k] = total.get(k, 0) + v


def _finish_counts(total: dict[str, Any]) -> dict[str, Any]:
    """dirt.json: per log only reason -> count (comparable to quarantine counts), the rest flat."""
    out = dict(total)
    out["rows"] = {"persona": out.pop("persona_rows"), **total["rows"]}
    out["clean_rows"] = {
        log_name: total["rows"][log_name] - sum(total[log_name].values())
        for log_name in ("showlog", "clicklog")
    }
    out["unknown_did_show_rows"] = total["showlog"]["unknown_did"]
    out["unknown_did_click_rows"] = total["clicklog"]["unknown_did"]
    return out


def generate(cfg: GenerateConfig, storage: Storage) -> dict[str, Any]:
    """Write the raw tables and the ground truth under ``storage``'s ``raw/``; return a summary.

    Every table is written into one staging directory and swapped in by a single journaled commit
    (:meth:`Storage.commit_partitions`), so a re-run replaces all raw tables (no stale chunks of a
    bigger earlier run) and a crash leaves the old ones.
    """
    t0 = time.perf_counter()
    m = plant(cfg)
    dicts = _Dictionaries(cfg, m)
    staging = storage.new_staging("generate")

    def rel(table: str, name: str) -> str:
        return f"{staging}/{posixpath.relpath(table, 'raw')}/{name}"

    def write(table: pa.Table, path: str) -> None:
        write_parquet(storage, path, table)

    write(keyword_table(cfg, m), rel(C.RAW_KEYWORD, "part-0.parquet"))
    write(slot_table(cfg, m), rel(C.RAW_SLOT, "part-0.parquet"))
    users_path = rel(C.RAW_TRUTH, "users.parquet")
    storage.makedirs(posixpath.dirname(users_path))
    total: dict[str, Any] = {}
    with pq.ParquetWriter(storage.path(users_path), users_table_schema(), filesystem=storage.fs) as users_out:
        for c in range(cfg.num_chunks):
            chunk = make_chunk(cfg, m, c)
            dids = _strings([*chunk.dids, ""])  # the last entry serves the empty-did dirt
            name = f"part-{c:05d}.parquet"
            write(persona_table(chunk.persona_rows, dids, dicts), rel(C.RAW_PERSONA, name))
            write(log_table(chunk.shows, dids, chunk.device, dicts, C.SHOW_TIME), rel(C.RAW_SHOWLOG, name))
            write(log_table(chunk.clicks, dids, chunk.device, dicts, C.CLICK_TIME), rel(C.RAW_CLICKLOG, name))
            users_out.write_table(users_table(chunk))
            _add_counts(total, chunk.counts)
            log.info("generate: chunk %d/%d, %d show rows, %.1f s",
                     c + 1, cfg.num_chunks, chunk.counts["rows"]["showlog"], time.perf_counter() - t0)  # fmt: skip
    dirt = _finish_counts(total)
    storage.write_json(rel(C.RAW_TRUTH, "model.json"), model_json(cfg, m))
    storage.write_json(rel(C.RAW_TRUTH, "dirt.json"), dirt)
    storage.write_text(rel(C.RAW_TRUTH, "config.yaml"), dump_config(cfg))
    storage.commit_partitions(staging, "raw")
    seconds = time.perf_counter() - t0
    log_rows = dirt["rows"]["showlog"] + dirt["rows"]["clicklog"]
    return {
        "root": storage.root,
        "users": cfg.users,
        "days": cfg.days,
        "chunks": cfg.num_chunks,
        "rows": dirt["rows"],
        "dirt": dirt,
        "seconds": round(seconds, 3),
        "log_rows_per_s": round(log_rows / seconds) if seconds > 0 else None,
    }


def users_table_schema() -> pa.Schema:
    return pa.schema([
        ("did", pa.string()), ("segment", pa.int32()), ("activity", pa.float64()),
        ("gender", pa.int8()), ("age", pa.int8()), ("persona_conflict", pa.bool_()),
    ])  # fmt: skip


# ====================================================================== ground truth
class Truth:
    """The planted model and each user's segment, read back from ``raw/truth/``.

    ``click_prob(did, keyword)`` is the true click probability of a user on a keyword
    (``click_matrix[segment, keyword]``), i.e. what a perfect model would predict; unknown dids or
    keywords give NaN (and segment -1). The accessors give what a segment posterior needs:
    ``segment_prior``, ``show_matrix`` (keyword distribution of shows), ``click_matrix``,
    ``gender_probs`` (over "0", "1") and ``age_probs`` (over "1".."6").
    """

    def __init__(self, model: dict[str, Any], users: pa.Table, dirt: dict[str, Any] | None = None):
        self.model = model
        self.users = users
        self.dirt = dirt or {}
        self._dids = users.column("did").combine_chunks()
        self._segments = users.column("segment").to_numpy()
        self._keywords = _strings(model["keywords"])

    @classmethod
    def load(cls, storage: Storage) -> Truth:
        base = C.RAW_TRUTH
        users = pq.read_table(
            storage.path(f"{base}/users.parquet"),
            columns=["did", "segment", "activity"],
            filesystem=storage.fs,
        )
        dirt = storage.read_json(f"{base}/dirt.json") if storage.exists(f"{base}/dirt.json") else {}
        return cls(storage.read_json(f"{base}/model.json"), users, dirt)

    # ------------------------------------------------------------------ model parameters
    @property
    def keywords(self) -> list[str]:
        return list(self.model["keywords"])

    @property
    def num_segments(self) -> int:
        return len(self.model["segment_prior"])

    @property
    def segment_prior(self) -> np.ndarray:
        return np.asarray(self.model["segment_prior"])

    @property
    def interest_matrix(self) -> np.ndarray:
        return np.asarray(self.model["interest"])

    @property
    def show_matrix(self) -> np.ndarray:
        """``(S, K)``: probability that a show of a user of segment s is of keyword k."""
        return np.asarray(self.model["show_prob"])

    @property
    def click_matrix(self) -> np.ndarray:
        """``(S, K)``: planted click probability per show."""
        return np.asarray(self.model["click_prob"])

    @property
    def gender_probs(self) -> np.ndarray:
        return np.asarray(self.model["gender_probs"])

    @property
    def age_probs(self) -> np.ndarray:
        return np.asarray(self.model["age_probs"])

    @property
    def app_keyword(self) -> dict[str, str]:
        return {app: kw for kw, apps in self.model["spread_app_ids"].items() for app in apps}

    # ------------------------------------------------------------------ lookups
    def keyword_index(self, keywords) -> np.ndarray:
        """Column of each keyword in the matrices; -1 for an unknown keyword."""
        idx = pc.index_in(pa.array(keywords, type=pa.string()), value_set=self._keywords)
        return pc.fill_null(idx, -1).to_numpy().astype(np.int64)

    def segment(self, dids) -> np.ndarray:
        """Segment of each did; -1 for a did not generated."""
        idx = pc.index_in(pa.array(dids, type=pa.string()), value_set=self._dids)
        idx = pc.fill_null(idx, -1).to_numpy().astype(np.int64)
        return np.where(idx >= 0, self._segments[np.maximum(idx, 0)], -1)

    def click_prob(self, dids, keywords) -> np.ndarray:
        """True click probability of ``dids[i]`` on ``keywords[i]`` (paired arrays); NaN if unknown."""
        seg, kw = self.segment(dids), self.keyword_index(keywords)
        if seg.shape != kw.shape:
            raise ValueError(f"dids and keywords differ in length: {seg.shape[0]} vs {kw.shape[0]}")
        ok = (seg >= 0) & (kw >= 0)
        out = np.full(seg.shape[0], np.nan)
        out[ok] = self.click_matrix[seg[ok], kw[ok]]
        return out

    def click_prob_matrix(self, dids, keywords=None) -> np.ndarray:
        """``(len(dids), len(keywords))`` true click probabilities (all keywords by default)."""
        seg = self.segment(dids)
        kw = self.keyword_index(self.keywords if keywords is None else keywords)
        out = np.full((seg.shape[0], kw.shape[0]), np.nan)
        rows, cols = seg >= 0, kw >= 0
        out[np.ix_(rows, cols)] = self.click_matrix[np.ix_(seg[rows], kw[cols])]
        return out
