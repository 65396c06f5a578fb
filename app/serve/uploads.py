"""Reading uploaded seed files: one did per line, or a CSV with a ``did`` column.

Files are read as streams, a line at a time, so an upload is never held in memory: the ingress
spools the multipart body to disk, and :func:`stream_seed_files` writes the distinct dids to a
local file while it keeps only a 16-byte digest per seed line (duplicates are found by sorting the
digests: about 42 bytes of memory per seed line at the peak, 42 MB for a million seeds).

Pure functions (no FastAPI, no Ray) so every rule has a table-driven unit test. Every refusal is a
:class:`SeedError` whose message names the file, the line and the offending value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from app import constants as C
from app.errors import SeedError
from app.serve.errors import UploadTooLarge

__all__ = ["UploadTooLarge", "parse_seed_file", "read_seed_files", "stream_seed_files", "SeedUpload"]

#: what a did may look like: the spec's dids are 64 hex characters; synthetic ones are shorter
DID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
#: longest line of a seed file (a CSV row with a did and other columns)
MAX_LINE_BYTES = 64 * 1024
_CSV_DELIMITERS = ",;\t|"
#: control characters other than tab / CR / LF mark a binary file
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGEST = np.dtype([("hi", "<u8"), ("lo", "<u8")])


@dataclass
class SeedUpload:
    """Counts of the seeds read from all files of one request (the distinct ones are in a file)."""

    distinct: int = 0
    lines: int = 0  # seed values read, duplicates included
    files: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.lines - self.distinct


def _text_chunks(name: str, f: BinaryIO) -> Iterator[str]:
    """The file's text, one ``\\n``-terminated line at a time, checked as it is read: SeedError
    for NUL bytes or control characters (binary), bytes that are not UTF-8, overlong lines."""
    if f.seekable():  # like git and grep: a NUL in the first 8 KiB marks a binary file
        head = f.read(8192)
        f.seek(-len(head), io.SEEK_CUR)
        if b"\x00" in head:
            raise SeedError(f"seed file {name!r} is binary (NUL bytes); send text: one did per line or CSV")
    lineno = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise SeedError(f"seed file {name!r} line {lineno} is longer than {MAX_LINE_BYTES} bytes")
        if b"\x00" in raw:
            raise SeedError(f"seed file {name!r} is binary (NUL bytes); send text: one did per line or CSV")
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            raise SeedError(
                f"seed file {name!r} is not UTF-8 text (line {lineno}); send one did per line or CSV"
            ) from None
        bad = _CONTROL.search(text)
        if bad:
            raise SeedError(f"seed file {name!r} is binary (control character {bad.group()!r}); send text")
        yield text


def _check_did(name: str, lineno: int, value: str) -> str:
    if not DID_RE.match(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise SeedError(
            f"seed file {name!r} line {lineno}: {shown!r} is not a did "
            "(1-128 letters, digits or _.:@-)"
        )
    return value


def _is_csv(first_line: str) -> bool:
    return any(d in first_line for d in _CSV_DELIMITERS)


def _iter_csv(name: str, first: str, lines: Iterator[str]) -> Iterator[str]:
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=_CSV_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    rows = csv.reader(lines, delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(rows, [])]
        if C.DID not in header:
            raise SeedError(f"seed file {name!r}: CSV header {header[:10]} has no {C.DID!r} column")
        col = header.index(C.DID)
        for row in rows:
            lineno = rows.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SeedError(
                    f"seed file {name!r} line {lineno}: {len(row)} fields, the header has {len(header)}"
                )
            yield _check_did(name, lineno, row[col].strip())
    except csv.Error as exc:
        raise SeedError(f"seed file {name!r} line {rows.line_num}: malformed CSV ({exc})") from exc


def iter_seed_file(name: str, f: BinaryIO) -> Iterator[str]:
    """The dids of one uploaded file, read from the binary stream ``f`` a line at a time
    (duplicates kept; :func:`stream_seed_files` counts them)."""
    chunks = _text_chunks(name, f)
    seen: list[str] = []  # the chunks up to the first non-blank one
    first = ""
    for chunk in chunks:
        seen.append(chunk)
        first = next((piece.strip() for piece in chunk.splitlines() if piece.strip()), "")
        if first:
            break
    if not first:
        raise SeedError(f"seed file {name!r} is empty")
    if _is_csv(first):
        head = seen[-1]
        yield from _iter_csv(name, first, _chain([head[head.index(first):]], chunks))
        return
    lineno, header_done, count = 0, False, 0
    for chunk in _chain(seen, chunks):
        for raw in chunk.splitlines():
            lineno += 1
            value = raw.strip()
            if not value:
                continue
            if not header_done:
                header_done = True
                if value.lower() == C.DID:  # a one-column CSV: its header
                    continue
            count += 1
            yield _check_did(name, lineno, value)
    if not count:
        raise SeedError(f"seed file {name!r} holds a header but no dids")


def _chain(first: Iterable[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


def parse_seed_file(name: str, data: bytes) -> list[str]:
    """The dids of one file given as bytes (duplicates kept)."""
    return list(iter_seed_file(name, io.BytesIO(data)))


def _digest(did: str) -> bytes:
    return hashlib.blake2b(did.encode(), digest_size=16).digest()


def first_occurrences(digests: bytes | bytearray) -> np.ndarray:
    """Boolean mask of the entries (16 bytes each) that are the first of their value."""
    keys = np.frombuffer(digests, dtype=_DIGEST)
    if not keys.size:
        return np.zeros(0, bool)
    order = np.lexsort((keys["lo"], keys["hi"]))  # stable: equal keys keep upload order
    ordered = keys[order]
    new = np.ones(keys.size, bool)
    new[1:] = (ordered["hi"][1:] != ordered["hi"][:-1]) | (ordered["lo"][1:] != ordered["lo"][:-1])
    mask = np.zeros(keys.size, bool)
    mask[order[new]] = True
    return mask


def stream_seed_files(files: Iterable[tuple[str, BinaryIO]], out: BinaryIO, min_seeds: int,
                      max_seeds: int) -> SeedUpload:
    """Parse every file, check the seed-count bounds (distinct seeds >= min, values <= max) and
    write the distinct dids to ``out`` (one per line, upload order, first occurrence kept)."""
    upload = SeedUpload()
    digests = bytearray()
    with tempfile.TemporaryFile() as every:
        for name, f in files:
            upload.files.append(name)
            for did in iter_seed_file(name, f):
                upload.lines += 1
                if upload.lines > max_seeds:
                    raise SeedError(f"too many seeds: more than {max_seeds} (the limit) in the upload")
                every.write(did.encode() + b"\n")
                digests += _digest(did)
        if not upload.files:
            raise SeedError("no seed file: send one or more files in the multipart field 'seeds'")
        keep = first_occurrences(digests)
        del digests
        upload.distinct = int(keep.sum())
        if upload.distinct < min_seeds:
            raise SeedError(f"too few seeds: {upload.distinct} distinct dids, at least {min_seeds} are needed")
        every.seek(0)
        for i, line in enumerate(every):
            if keep[i]:
                out.write(line)
    return upload


def read_seed_files(files: list[tuple[str, bytes]], min_seeds: int, max_seeds: int) -> tuple[list[str], SeedUpload]:
    """The distinct seeds (in memory) and the counts of files given as bytes."""
    out = io.BytesIO()
    upload = stream_seed_files(((name, io.BytesIO(data)) for name, data in files), out, min_seeds, max_seeds)
    return out.getvalue().decode().splitlines(), upload
