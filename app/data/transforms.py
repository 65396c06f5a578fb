"""Small pure, vectorized helpers shared by the pipeline stages (pyarrow compute and numpy)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def did_bucket(dids: pa.Array | pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """Stable user partition: ``stable_hash(did) mod num_buckets`` as int32."""
    return (stable_hash(dids) % np.uint64(num_buckets)).astype(np.int32)


def parse_times(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` (UTC) strings -> int64 epoch seconds; null where malformed.

    Fractions are optional (millisecond-less timestamps are valid) and truncated: seconds are the
    resolution the intervals need. Impossible dates (month 13) are null too.
    """
    ok = pc.fill_null(pc.match_substring_regex(col, TIME_PATTERN), False)
    head = pc.utf8_slice_codeunits(col, 0, 19)
    ts = pc.strptime(head, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    secs = pc.cast(ts, pa.int64())
    return pc.if_else(ok, secs, pa.scalar(None, pa.int64()))


def interval_start(seconds: np.ndarray | pa.Array, interval: int) -> np.ndarray:
    """Seed 000: ``t - t mod interval`` (interval 5 over 100..109 gives 100 x5, 105 x5)."""
    t = np.asarray(seconds, dtype=np.int64)
    return t - np.mod(t, interval)
