import numpy as np
import pyarrow as pa
import pytest

from app.data.transforms import (
    StringIndex,
    did_bucket,
    interval_start,
    parse_times,
    stable_hash,
    unify_chunk_dictionaries,
)


def test_interval_starting_time_seed_example():
    # spec 000: interval_time_in_seconds=5 over 100..109
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


def _reference_parse(col):
    """The definition parse_times implements: the strict pattern, then Arrow's strptime."""
    import pyarrow.compute as pc

    from app.data.transforms import TIME_PATTERN

    ok = pc.fill_null(pc.match_substring_regex(col, TIME_PATTERN), False)
    ts = pc.strptime(pc.utf8_slice_codeunits(col, 0, 19), format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    return pc.if_else(ok, pc.cast(ts, pa.int64()), pa.scalar(None, pa.int64()))


def test_parse_times_matches_regex_and_strptime_on_fuzzed_strings():
    rng = np.random.default_rng(0)
    years, months = ["2020", "0000", "1969", "9999", "1900", "2000"], ["01", "02", "03", "12", "13", "00", "1 "]
    days, hours, mins, secs = ["01", "28", "29", "30", "31", "32", "00"], ["00", "23", "24"], ["00", "59", "60"], [
        "00", "59", "60", "61", "62"]
    values = []
    for _ in range(20000):
        s = f"{rng.choice(years)}-{rng.choice(months)}-{rng.choice(days)} {rng.choice(hours)}:{rng.choice(mins)}:{rng.choice(secs)}"
        r = rng.random()
        if r < 0.3:
            s += "." + "".join(rng.choice(list("0123456789"), size=rng.integers(0, 8)))
        elif r < 0.45:
            k = int(rng.integers(len(s)))
            s = s[:k] + str(rng.choice(list("0123456789-: .T/x"))) + s[k + 1 :]
        elif r < 0.5:
            s = s[: int(rng.integers(len(s) + 1))]
        values.append(None if r > 0.99 else s)
    col = pa.array(values, pa.string())
    assert parse_times(col).to_pylist() == _reference_parse(col).to_pylist()
    sliced = pa.chunked_array([col.slice(3, 50), col.slice(100, 70)])
    assert parse_times(sliced).to_pylist() == _reference_parse(sliced).to_pylist()


def test_string_index_positions_match_index_in():
    values = pa.array([f"{i:032x}" for i in range(0, 3000, 3)] + ["", "short"])
    queries = pa.array([f"{i:032x}" for i in range(0, 1000)] + ["short", None, "", "nope"])
    index = StringIndex(values)
    assert index.exact
    expected = [values.to_pylist().index(q) if q in values.to_pylist() else -1 for q in queries.to_pylist()]
    expected[-3] = -1  # null: absent
    assert index.positions(queries).tolist() == expected
    assert index.positions(queries, stable_hash(queries)).tolist() == expected


def test_string_index_rejects_a_hash_match_with_other_text():
    values = pa.array(["a", "b", "c"])
    index = StringIndex(values)
    fake = stable_hash(pa.array(["b", "x"]))  # "x" claims "b"'s hash: the string compare catches it
    fake[1] = fake[0]
    assert index.positions(pa.array(["b", "x"]), fake).tolist() == [1, -1]


def test_string_index_falls_back_when_the_set_has_a_hash_collision():
    index = StringIndex(pa.array(["a", "b", "c"]))
    index.sorted[1] = index.sorted[0]  # as if two values of the set shared a hash
    index.exact = len(index.sorted) < 2 or bool((index.sorted[1:] != index.sorted[:-1]).all())
    assert not index.exact
    assert index.positions(pa.array(["c", "zz", None])).tolist() == [2, -1, -1]


def test_unify_chunk_dictionaries_keeps_shared_dictionaries_and_unifies_the_rest():
    shared = pa.array(["x", "y", "z"])
    d1 = pa.DictionaryArray.from_arrays(pa.array([0, 2], pa.int32()), shared)
    d2 = pa.DictionaryArray.from_arrays(pa.array([1], pa.int32()), pa.array(["x", "y", "z"]))  # equal copy
    o1 = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(["p", "q"]))
    o2 = pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), pa.array(["r"]))
    table = pa.Table.from_batches([
        pa.record_batch({"s": d1, "o": o1, "n": pa.array([1, 2])}),
        pa.record_batch({"s": d2, "o": o2, "n": pa.array([3])}),
    ])
    out = unify_chunk_dictionaries(table)
    assert out.to_pydict() == table.to_pydict() == {"s": ["x", "z", "y"], "o": ["p", "q", "r"], "n": [1, 2, 3]}
    assert out["o"].chunk(0).dictionary.equals(out["o"].chunk(1).dictionary)  # unified
    assert out["s"].chunk(1).dictionary.equals(shared)
    assert out.combine_chunks()["s"].to_pylist() == ["x", "z", "y"]
