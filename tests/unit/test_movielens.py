"""MovieLens-100K as raw tables: the mapping, on a tiny stand-in wheel (no network in tests)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from app import constants as C
from app.data.movielens import MEMBER, age_band, fetch_wheel, raw_tables

USERS = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n3\t17\tM\twriter\t32067\n"
ITEMS = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
         "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction Adventure Thriller\n"
         "3\tCaf\xe9\t1995\t\n")
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t881250949\n1\t2\t3\t881250949\n2\t3\t4\t891717742\n3\t2\t1\t878887116\n"


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER.format("user"), USERS.encode("latin-1"))
        z.writestr(MEMBER.format("item"), ITEMS.encode("latin-1"))
        z.writestr(MEMBER.format("inter"), INTER.encode("latin-1"))
    return path


def test_ratings_become_shows_and_good_ratings_clicks(wheel):
    t = raw_tables(wheel, click_rating=4)
    show = t["showlog"].to_pydict()
    assert show[C.DID] == ["ml1", "ml1", "ml2", "ml3"]
    assert show[C.SPREAD_APP_ID] == ["movie1", "movie2", "movie3", "movie2"]
    assert show[C.SHOW_TIME][0] == "1997-12-04 15:55:49"  # 881250949 s, UTC
    click = t["clicklog"].to_pydict()
    assert click[C.DID] == ["ml1", "ml2"] and click[C.CLICK_TIME] == [show[C.SHOW_TIME][0], show[C.SHOW_TIME][2]]
    assert set(t["showlog"].column_names) == set(C.SHOWLOG_COLUMNS)
    assert set(t["clicklog"].column_names) == set(C.CLICKLOG_COLUMNS)
    assert all(f.type == "string" for name in t for f in t[name].schema)


def test_persona_keyword_and_slot(wheel):
    t = raw_tables(wheel)
    p = t["persona"].to_pydict()
    assert p[C.DID] == ["ml1", "ml2", "ml3"]
    assert p[C.GENDER_RAW] == ["1", "0", "1"] and p[C.AGE_RAW] == ["2", "5", "1"]
    k = t["keyword"].to_pydict()
    assert k[C.KEYWORD] == ["animation", "action", "unknown"]  # first genre; none -> unknown
    assert t["slot"].to_pydict() == {C.SLOT_ID: ["ml-web"], C.MEDIA_CATEGORY: ["movies"]}


def test_age_bands():
    np.testing.assert_array_equal(age_band(np.array([7, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 73])),
                                  [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])


def test_cached_wheel_is_reused_without_pip(wheel):
    assert fetch_wheel(wheel.parent) == wheel
