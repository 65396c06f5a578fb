"""Reading uploaded seed files: one did per line, or a CSV with a ``did`` column.

Pure functions (no FastAPI, no Ray) so every rule has a table-driven unit test. Every refusal is a
:class:`SeedError` whose message names the file, the line and the offending value.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from app import constants as C
from app.errors import SeedError

#: what a did may look like: the spec's dids are 64 hex characters; synthetic ones are shorter
DID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_CSV_DELIMITERS = ",;\t|"
#: control characters other than tab / CR / LF mark a binary file
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class UploadTooLarge(SeedError):
    """The request body is over the configured byte limit (HTTP 413)."""


@dataclass
class SeedUpload:
    """Seeds read from all files of one request, in upload order, duplicates removed."""

    seeds: list[str] = field(default_factory=list)
    lines: int = 0  # seed values read, duplicates included
    duplicates: int = 0
    files: list[str] = field(default_factory=list)

    def add(self, name: str, dids: list[str]) -> None:
        seen = set(self.seeds)
        self.files.append(name)
        for did in dids:
            self.lines += 1
            if did in seen:
                self.duplicates += 1
                continue
            seen.add(did)
            self.seeds.append(did)


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 text of an upload; SeedError for empty or binary content."""
    if not data.strip():
        raise SeedError(f"seed file {name!r} is empty")
    if b"\x00" in data:
        raise SeedError(f"seed file {name!r} is binary (NUL bytes); send text: one did per line or CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SeedError(
            f"seed file {name!r} is not UTF-8 text (byte {exc.start}); send one did per line or CSV"
        ) from exc
    bad = _CONTROL.search(text)
    if bad:
        raise SeedError(
            f"seed file {name!r} is binary (control character {bad.group()!r}); send text"
        )
    return text


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


def _parse_csv(name: str, text: str) -> list[str]:
    first = text.splitlines()[0]
    try:
        dialect = csv.Sniffer().sniff(first, delimiters=_CSV_DELIMITERS)
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(rows)]
    if C.DID not in header:
        raise SeedError(f"seed file {name!r}: CSV header {header[:10]} has no {C.DID!r} column")
    col = header.index(C.DID)
    out = []
    try:
        for row in rows:
            lineno = rows.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SeedError(
                    f"seed file {name!r} line {lineno}: {len(row)} fields, the header has {len(header)}"
                )
            out.append(_check_did(name, lineno, row[col].strip()))
    except csv.Error as exc:
        raise SeedError(f"seed file {name!r} line {rows.line_num}: malformed CSV ({exc})") from exc
    return out


def parse_seed_file(name: str, data: bytes) -> list[str]:
    """The dids of one uploaded file (duplicates kept; :class:`SeedUpload` counts them)."""
    text = decode_text(name, data)
    lines = text.splitlines()
    first = next(line.strip() for line in lines if line.strip())
    if _is_csv(first):
        return _parse_csv(name, text[text.index(first) :])
    out = []
    header_done = False
    for lineno, raw in enumerate(lines, start=1):
        value = raw.strip()
        if not value:
            continue
        if not header_done:
            header_done = True
            if value.lower() == C.DID:  # a one-column CSV: its header
                continue
        out.append(_check_did(name, lineno, value))
    if not out:
        raise SeedError(f"seed file {name!r} holds a header but no dids")
    return out


def read_seed_files(files: list[tuple[str, bytes]], min_seeds: int, max_seeds: int) -> SeedUpload:
    """Parse every file and check the seed-count bounds (distinct seeds >= min, values <= max)."""
    if not files:
        raise SeedError("no seed file: send one or more files in the multipart field 'seeds'")
    upload = SeedUpload()
    for name, data in files:
        upload.add(name, parse_seed_file(name, data))
        if upload.lines > max_seeds:
            raise SeedError(f"too many seeds: more than {max_seeds} (the limit) in the upload")
    if len(upload.seeds) < min_seeds:
        raise SeedError(
            f"too few seeds: {len(upload.seeds)} distinct dids, at least {min_seeds} are needed"
        )
    return upload
