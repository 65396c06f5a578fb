"""Seed upload parsing: plain lines, CSV with a did column, binary and malformed input, limits."""

import pytest

from app.errors import SeedError
from app.serve.uploads import parse_seed_file, read_seed_files


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
    ],
)
def test_parse_seed_file_refuses(data, words):
    with pytest.raises(SeedError, match=words):
        parse_seed_file("seeds.txt", data)


def test_refusal_names_the_file():
    with pytest.raises(SeedError, match="'mine.csv'"):
        parse_seed_file("mine.csv", b"")


def test_read_seed_files_merges_and_counts_duplicates():
    up = read_seed_files([("a.txt", b"u1\nu2\nu2\n"), ("b.csv", b"did\nu2\nu3\n")], min_seeds=3, max_seeds=10)
    assert up.seeds == ["u1", "u2", "u3"]
    assert (up.lines, up.duplicates, up.files) == (5, 2, ["a.txt", "b.csv"])


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
