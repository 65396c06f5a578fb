"""Seed upload parsing: plain lines, CSV with a did column, binary and malformed input, limits,
streaming from files with duplicates found by digest."""

import io

import numpy as np
import pytest

from app.errors import SeedError
from app.serve.uploads import (
    MAX_LINE_BYTES,
    first_occurrences,
    parse_seed_file,
    read_seed_files,
    stream_seed_files,
)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"u1\nu2\nu3\n", ["u1", "u2", "u3"]),
        (b"u1\r\nu2\r\n\r\n  u3  \n", ["u1", "u2", "u3"]),  # CRLF, blank lines, spaces
        (b"did\nu1\nu2\n", ["u1", "u2"]),  # one-column CSV header
        (b"\xef\xbb\xbfu1\nu2", ["u1", "u2"]),  # UTF-8 BOM, no final newline
        (b"did,age\nu1,20\nu2,30\n", ["u1", "u2"]),
        (b"age,DID\n20,u1\n30,u2\n", ["u1", "u2"]),  # column anywhere, header case-insensitive
        (b"name;did\nx;u1\ny;u2\n", ["u1", "u2"]),  # semicolon CSV
        (b'did,note\nu1,"a, b"\nu2,c\n', ["u1", "u2"]),  # quoted comma
        (b"u1\nu1\nu2\n", ["u1", "u1", "u2"]),  # duplicates kept per file (counted later)
        (b"7eb9401a7ba0e377ad2fd81315b39da088b2943d69ff89c3ba56149d0a166d11\n",  # a seed-000 did
         ["7eb9401a7ba0e377ad2fd81315b39da088b2943d69ff89c3ba56149d0a166d11"]),
    ],
)
def test_parse_seed_file_accepts(data, expected):
    assert parse_seed_file("seeds.txt", data) == expected


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (b"  \n\n ", "empty"),
        (b"u1\x00u2\n", "binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
        (b"\xff\xfe\xfd", "not UTF-8"),
        (b"u1\x07\nu2\n", "binary"),
        (b"u1\nnot a did\n", "line 2"),
        (b"u1\n" + b"x" * 200 + b"\n", "line 2"),
        (b"name,age\nx,1\n", "no 'did' column"),
        (b"did,age\nu1,1\nu2\n", "line 3: 1 fields"),
        (b"did,age\n,1\n", "line 2"),
        (b"did\n", "no dids"),
        (b"u1\n../etc/passwd\n", "line 2"),
        (b"u1\n" + b"u" * (MAX_LINE_BYTES + 5) + b"\n", "line 2 is longer than"),
        (b"u1\nu2\n\xff\n", "not UTF-8 text \\(line 3\\)"),
        (b"\xe2\x80\xa8\n  \n", "empty"),  # only a Unicode line separator: empty, not a crash
        (b'did,x\n"u1,2\n', "line"),  # unterminated quote
    ],
)
def test_parse_seed_file_refuses(data, words):
    with pytest.raises(SeedError, match=words):
        parse_seed_file("seeds.txt", data)


def test_refusal_names_the_file():
    with pytest.raises(SeedError, match="'mine.csv'"):
        parse_seed_file("mine.csv", b"")


def test_read_seed_files_merges_and_counts_duplicates():
    seeds, up = read_seed_files([("a.txt", b"u1\nu2\nu2\n"), ("b.csv", b"did\nu2\nu3\n")], min_seeds=3, max_seeds=10)
    assert seeds == ["u1", "u2", "u3"]
    assert (up.distinct, up.lines, up.duplicates, up.files) == (3, 5, 2, ["a.txt", "b.csv"])


def test_stream_seed_files_reads_file_objects_and_writes_distinct_seeds_in_order(tmp_path):
    dids = [f"u{i % 700}" for i in range(5000)]  # 700 distinct, first seen in order u0..u699
    path = tmp_path / "seeds.txt"
    path.write_text("did,age\n" + "".join(f"{d},3\n" for d in dids))
    out = io.BytesIO()
    with path.open("rb") as f:
        up = stream_seed_files([("s.csv", f)], out, min_seeds=700, max_seeds=5000)
    assert out.getvalue().decode().splitlines() == [f"u{i}" for i in range(700)]
    assert (up.distinct, up.lines, up.duplicates) == (700, 5000, 4300)


def test_first_occurrences_matches_a_python_oracle():
    import hashlib

    rng = np.random.default_rng(0)
    values = [f"d{v}" for v in rng.integers(0, 300, 2000)]
    digests = b"".join(hashlib.blake2b(v.encode(), digest_size=16).digest() for v in values)
    seen, expected = set(), []
    for v in values:
        expected.append(v not in seen)
        seen.add(v)
    assert first_occurrences(digests).tolist() == expected
    assert first_occurrences(b"").tolist() == []


@pytest.mark.parametrize(
    "files, lo, hi, words",
    [
        ([], 1, 10, "no seed file"),
        ([("a", b"u1\nu2\nu2\n")], 3, 10, "too few seeds: 2 distinct"),
        ([("a", b"\n".join(f"u{i}".encode() for i in range(11)))], 1, 10, "too many seeds"),
        ([("a", b"u1\n"), ("b", b"\x00")], 1, 10, "'b' is binary"),
    ],
)
def test_read_seed_files_bounds(files, lo, hi, words):
    with pytest.raises(SeedError, match=words):
        read_seed_files(files, min_seeds=lo, max_seeds=hi)
