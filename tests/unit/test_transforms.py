import numpy as np
import pyarrow as pa
import pytest

from app.data.transforms import did_bucket, interval_start, parse_times, stable_hash


def test_interval_starting_time_seed_example():
    # seed 000: interval_time_in_seconds=5 over 100..109
    got = interval_start(np.arange(100, 110), 5)
    assert got.tolist() == [100] * 5 + [105] * 5


def fnv1a(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.mark.parametrize("values", [["", "a", "abc", "héllo"], ["x" * 64, "y" * 64], ["ab", "abcd" * 20]])
def test_stable_hash_is_fnv1a(values):
    assert stable_hash(pa.array(values)).tolist() == [fnv1a(v) for v in values]


def test_did_bucket_stable_and_in_range():
    dids = pa.array([f"{i:064x}" for i in range(1000)])
    b1, b2 = did_bucket(dids, 7), did_bucket(dids, 7)
    assert (b1 == b2).all() and b1.min() >= 0 and b1.max() == 6
    assert len(set(b1.tolist())) == 7


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2020-01-07 16:22:18.129", 1578414138),
        ("2020-01-07 16:22:18", 1578414138),  # no milliseconds: valid
        ("2020-01-07 16:22:18.1", 1578414138),
        ("2020-13-07 16:22:18", None),  # impossible month
        ("2020-01-07T16:22:18", None),
        ("07/01/2020 16:22:18", None),
        ("", None),
        (None, None),
        ("2020-01-07 16:22:18.1234567", None),
    ],
)
def test_parse_times(text, expected):
    assert parse_times(pa.array([text], pa.string())).to_pylist() == [expected]
