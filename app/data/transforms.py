"""Small pure, vectorized helpers shared by the pipeline stages (pyarrow compute and numpy)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

TIME_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?$"

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def stable_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit FNV-1a of each string, vectorized over rows (one numpy pass per character position).

    Python's ``hash`` is salted per process, so it cannot give a did_bucket that is the same in
    every worker and every run; this one is. Nulls hash as the empty string.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    values = values.cast(pa.large_binary()).fill_null(b"")
    n = len(values)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return h
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset : values.offset + n + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if n and lengths.min() == lengths.max():  # fast path: equal lengths (hex dids) -> a byte matrix
        width = int(lengths[0])
        mat = data[offsets[0] : offsets[0] + n * width].reshape(n, width)
        with np.errstate(over="ignore"):
            for pos in range(width):
                h = (h ^ mat[:, pos].astype(np.uint64)) * _FNV_PRIME
        return h
    with np.errstate(over="ignore"):
        for pos in range(int(lengths.max(initial=0))):
            live = lengths > pos
            idx = np.nonzero(live)[0]
            h[idx] = (h[idx] ^ data[starts[idx] + pos].astype(np.uint64)) * _FNV_PRIME
    return h


class StringIndex:
    """Exact positions of strings in a fixed set: 64-bit :func:`stable_hash` lookup, then one string
    compare per query to rule out a hash collision.

    ``pc.index_in`` builds a hash table of its whole value set on every call; a cleaning task
    looks up a row group's distinct dids (about 100k) in every persona did (165k at 10M rows)
    several times per task, so building the index once per worker instead is the point. With a
    hash shared by two values of the set (never seen; possible in principle) it falls back to
    ``pc.index_in``.
    """

    def __init__(self, values: pa.Array):
        self.values = values
        hashes = stable_hash(values)
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]
        self.exact = len(hashes) < 2 or bool((self.sorted[1:] != self.sorted[:-1]).all())

    def positions(self, queries: pa.Array, hashes: np.ndarray | None = None) -> np.ndarray:
        """Position in the set of each query string (int64), -1 where absent or null.
        ``hashes``: the queries' :func:`stable_hash`, when the caller has it already."""
        import pyarrow.compute as pc

        if not self.exact or len(self.sorted) == 0:
            return pc.fill_null(pc.index_in(queries, value_set=self.values), -1).to_numpy().astype(np.int64)
        if hashes is None:
            hashes = stable_hash(queries)
        at = np.minimum(np.searchsorted(self.sorted, hashes), len(self.sorted) - 1)
        candidate = self.order[at]
        same = pc.equal(queries, self.values.take(pa.array(candidate)))
        hit = (self.sorted[at] == hashes) & pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        return np.where(hit, candidate, -1)


def did_bucket(dids: pa.Array | pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """Stable user partition: ``stable_hash(did) mod num_buckets`` as int32."""
    return (stable_hash(dids) % np.uint64(num_buckets)).astype(np.int32)


def _string_parts(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 offsets (n+1), uint8 data, bool valid) of a string column, without copying the data."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    n = len(col)
    bufs = col.buffers()
    width = np.int64 if pa.types.is_large_string(col.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width)[col.offset : col.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and n else np.zeros(0, np.uint8)
    valid = col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else np.ones(n, dtype=bool)
    return offsets, data, valid


_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_SEPS = np.array([4, 7, 10, 13, 16])
_SEP_BYTES = np.frombuffer(b"-- ::", dtype=np.uint8)
_FRACTION = 7  # "." and up to 6 digits


def parse_time_fields(col: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorized ``YYYY-MM-DD HH:MM:SS[.ffffff]`` parser: (epoch seconds, valid, fraction).

    Numpy over a byte matrix of the first 19 characters (one gather), instead of a regex match plus
    ``strptime`` (about 3x the CPU). It accepts exactly what :data:`TIME_PATTERN` plus Arrow's
    ``strptime`` accepted: month 1-12, day 1-31, hour 0-23, minute 0-59, second 0-61, with
    day overflow carried into the next month (Feb 30 is Mar 1) as ``strptime`` does. The fraction
    (the bytes after the seconds as a uint64, 0 if none) with the seconds tells nearly all distinct
    timestamps apart (only strptime's normalization maps two strings to one second): hash input
    for callers that compare the strings themselves when hashes are equal.
    """
    offsets, data, valid = _string_parts(col)
    n = len(offsets) - 1
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.uint64)
    starts, lengths = offsets[:-1], np.diff(offsets)
    ok = valid & ((lengths == 19) | ((lengths >= 21) & (lengths <= 26)))
    padded = np.zeros(max(len(data), int(offsets[-1])) + 19 + _FRACTION, dtype=np.uint8)
    padded[: len(data)] = data
    at = np.where(ok, starts, 0)
    # one row per character position (contiguous), so every check below is a 1-D numpy op
    chars = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(padded, 19)[at].T)
    digits = chars[_DIGITS] - np.uint8(48)  # wraps below '0', so one <= 9 test per byte
    ok &= (digits <= 9).all(axis=0) & (chars[_SEPS] == _SEP_BYTES[:, None]).all(axis=0)
    d = digits.astype(np.int32)
    pair = d[0::2] * 10 + d[1::2]  # YY YY MM DD hh mm ss
    year = pair[0].astype(np.int64) * 100 + pair[1]
    month, day, hour, minute, second = pair[2], pair[3], pair[4], pair[5], pair[6]
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hour <= 23) & (minute <= 59)
    ok &= second <= 61
    # the fraction ("." + 1..6 digits) as the 8 bytes from position 19, masked to the string's end
    frac_key = np.zeros(n, dtype=np.uint64)
    long = np.flatnonzero(ok & (lengths > 19))
    if long.size:
        words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))  # unaligned loads
        keep = lengths[long] - 19  # 2..7 bytes
        tail = words[starts[long] + 19] & ((np.uint64(1) << (keep * 8).astype(np.uint64)) - np.uint64(1))
        tb = np.ascontiguousarray(tail.view(np.uint8).reshape(-1, 8).T)
        good = tb[0] == ord(".")
        for i in range(1, _FRACTION):
            good &= ((tb[i] - np.uint8(48)) <= 9) | (keep <= i)
        ok[long[~good]] = False
        frac_key[long] = tail
    # days from the civil date (proleptic Gregorian), the algorithm behind std::chrono
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    secs = days * 86400 + (hour * 3600 + minute * 60 + second)
    secs[~ok] = 0
    return secs, ok, frac_key


def parse_times(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` (UTC) strings -> int64 epoch seconds; null where malformed.

    Fractions are optional (millisecond-less timestamps are valid) and truncated: seconds are the
    resolution the intervals need. Impossible dates (month 13) are null too. See
    :func:`parse_time_fields` for the exact rules.
    """
    secs, ok, _ = parse_time_fields(col)
    return pa.array(secs, pa.int64(), mask=~ok)


def days_to_strings(days: np.ndarray) -> list[str]:
    """Epoch day numbers -> ``YYYY-MM-DD`` strings (the ``day`` partition values)."""
    return [str(d) for d in np.asarray(days, dtype=np.int64).astype("datetime64[D]")]


def as_dictionary(col: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """One dictionary<int32, string> array (dictionary-encodes plain columns; unifies chunks)."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            col = col.chunk(0)
        elif pa.types.is_dictionary(col.type):
            # chunks sharing one dictionary concatenate their indices (no hashing)
            col = unify_chunk_dictionaries(pa.table({"c": col}))["c"].combine_chunks()
        else:
            col = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
    if pa.types.is_dictionary(col.type):
        if not pa.types.is_string(col.type.value_type):
            col = pa.DictionaryArray.from_arrays(col.indices, col.dictionary.cast(pa.string()))
        return col
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string())
    return col.dictionary_encode()


def unify_chunk_dictionaries(table: pa.Table) -> pa.Table:
    """``table.unify_dictionaries()``, skipping columns whose chunks share one dictionary already.

    Arrow's unification inserts every value of every chunk's dictionary into a hash table, even
    when all chunks carry the same dictionary (a bucket's 165k-entry did dictionary, 40 times);
    comparing the dictionaries first is one memcmp each.
    """
    columns = []
    for name in table.column_names:
        col = table[name]
        if pa.types.is_dictionary(col.type) and col.num_chunks > 1:
            first = col.chunk(0).dictionary
            if not all(chunk.dictionary.equals(first) for chunk in col.chunks[1:]):
                col = pa.table({name: col}).unify_dictionaries()[name]
        columns.append(col)
    return pa.table(columns, names=table.column_names) if table.num_columns else table


def mix_hash(acc: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fold 64-bit values into a running row hash (xor-multiply, order-sensitive)."""
    with np.errstate(over="ignore"):
        h = acc ^ values.astype(np.uint64, copy=False)
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(29)
        return h


def interval_start(seconds: np.ndarray | pa.Array, interval: int) -> np.ndarray:
    """Seed 000: ``t - t mod interval`` (interval 5 over 100..109 gives 100 x5, 105 x5)."""
    t = np.asarray(seconds, dtype=np.int64)
    return t - np.mod(t, interval)
