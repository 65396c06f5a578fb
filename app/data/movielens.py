"""MovieLens-100K as the five raw ad-log tables: real users with real timing, to judge quality on
data this project did not generate.

Source: the MovieLens-100K files that ship inside the PyPI wheel ``recbole==1.2.1``
(``recbole/dataset_example/ml-100k/``), fetched at run time with ``pip download --no-deps`` into a
cache folder and read straight from the zip. The MovieLens terms forbid redistribution: the data
is never committed, and nothing else is downloaded.

Mapping (one rating is one impression of the movie; a good rating is a click):

- persona: ``did = "ml<user_id>"``, ``gender_new_dev`` 1 for M / 0 for F, ``forecast_age_dev`` the
  age band 1..6 (under 18, 18-24, 25-34, 35-44, 45-54, 55 and over);
- keyword table: ``spread_app_id = "movie<item_id>"``, ``keyword`` the movie's first listed genre
  (lower case; a movie without a genre gets ``unknown``);
- slot table: one slot, ``ml-web``, media category ``movies``;
- show log: every rating, ``show_time`` its timestamp (UTC, whole seconds);
- click log: every rating of at least ``click_rating`` (4 by default), ``click_time`` the same
  timestamp.

Users come and go: 943 users rated between 1997-09-20 and 1998-04-22, but of the 647 who rated
before 1998-02-01 only 128 rated again after it. That is what makes it a good test of time-honest
evaluation (everything as of the cut).
"""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field

from app import constants as C
from app.config import StrictModel
from app.errors import SchemaError
from app.storage import Storage

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
SLOT = "ml-web"
#: upper bounds of the age bands 1..5 (band 6 is 55 and over)
AGE_BANDS = (18, 25, 35, 45, 55)


class MovieLensConfig(StrictModel):
    """``python -m app data movielens``: where the wheel is cached and how ratings become clicks."""

    cache_dir: str = Field(".cache/movielens", description="folder for the downloaded wheel")
    click_rating: int = Field(4, ge=1, le=5, description="a rating at least this high is a click")


def fetch_wheel(cache_dir: str | Path) -> Path:
    """The cached recbole wheel, downloaded with ``pip download --no-deps`` when absent."""
    cache = Path(cache_dir)
    found = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if proc.returncode != 0 or not found:
        raise SchemaError(f"could not download {WHEEL} from the package index: {proc.stderr.strip()[-400:]}")
    return found[0]


def read_member(wheel: Path, name: str) -> pa.Table:
    """One of the tab-separated ``ml-100k.<name>`` files, every column a string."""
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER.format(name))
    text = raw.decode("latin-1").encode("utf-8")
    header = text.split(b"\n", 1)[0].decode().split("\t")
    names = [h.split(":", 1)[0] for h in header]
    return pacsv.read_csv(
        io.BytesIO(text),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )


def age_band(age: np.ndarray) -> np.ndarray:
    return (np.searchsorted(np.asarray(AGE_BANDS), age, side="right") + 1).astype(np.int64)


def raw_tables(wheel: Path, click_rating: int = 4) -> dict[str, pa.Table]:
    """The five raw tables (every value a string, as the pipeline's contract says)."""
    users = read_member(wheel, "user")
    items = read_member(wheel, "item")
    inter = read_member(wheel, "inter")
    age = pc.cast(users["age"], pa.int64()).to_numpy()
    persona = pa.table({
        C.DID: pc.binary_join_element_wise("ml", users["user_id"], ""),
        C.GENDER_RAW: pc.if_else(pc.equal(users["gender"], "M"), "1", "0"),
        C.AGE_RAW: pa.array(age_band(age).astype(str)),
    })
    genre = pc.utf8_lower(pc.fill_null(pc.list_element(pc.split_pattern(items["class"], " "), 0), "unknown"))
    genre = pc.if_else(pc.equal(genre, ""), "unknown", genre)
    keyword = pa.table({C.SPREAD_APP_ID: pc.binary_join_element_wise("movie", items["item_id"], ""),
                        C.KEYWORD: genre})
    slot = pa.table({C.SLOT_ID: [SLOT], C.MEDIA_CATEGORY: ["movies"]})
    seconds = pc.cast(pc.cast(inter["timestamp"], pa.float64()), pa.int64()).to_numpy()
    when = pa.array(
        [dt.datetime.fromtimestamp(int(s), dt.UTC).strftime(C.TIME_FORMAT) for s in seconds], pa.string()
    )
    n = inter.num_rows
    common = {
        C.DID: pc.binary_join_element_wise("ml", inter["user_id"], ""),
        C.ADV_ID: inter["item_id"],
        C.ADV_TYPE: pa.array(["movie"] * n),
        C.SLOT_ID: pa.array([SLOT] * n),
        C.SPREAD_APP_ID: pc.binary_join_element_wise("movie", inter["item_id"], ""),
        C.DEVICE_NAME: pa.array(["web"] * n),
        C.NET_TYPE: pa.array(["wifi"] * n),
        C.ADV_BILL_MODE_CD: pa.array(["CPC"] * n),
    }
    showlog = pa.table({**common, C.SHOW_TIME: when})
    clicked = pc.greater_equal(pc.cast(pc.cast(inter["rating"], pa.float64()), pa.int64()), click_rating)
    clicklog = pa.table({**common, C.CLICK_TIME: when}).filter(clicked)
    return {"persona": persona, "showlog": showlog, "clicklog": clicklog, "keyword": keyword, "slot": slot}


def write_movielens(cfg: MovieLensConfig, storage: Storage) -> dict:
    """Fetch (or reuse) the wheel and write ``<root>/raw/<table>``; returns row counts."""
    wheel = fetch_wheel(cfg.cache_dir)
    tables = raw_tables(wheel, cfg.click_rating)
    targets = {"persona": C.RAW_PERSONA, "showlog": C.RAW_SHOWLOG, "clicklog": C.RAW_CLICKLOG,
               "keyword": C.RAW_KEYWORD, "slot": C.RAW_SLOT}
    for name, table in tables.items():
        storage.write_table(targets[name], table)
    if storage.exists(C.RAW_TRUTH):  # no planted truth for real data: a stale one would mislead
        storage.delete(C.RAW_TRUTH)
    return {"source": WHEEL, "rows": {k: v.num_rows for k, v in tables.items()}, "root": storage.root}
