"""Seed reader (spec 000 step 1): which seed ids are known, unknown, duplicated."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.errors import SeedError

#: header names a seed file may start with (spec 001 used ``member_srl``)
SEED_HEADERS = {"did", "member_srl", "user_id", "uid"}


def parse_seed_lines(text: str) -> list[str]:
    """Ids from a seed file: one per line, optional header, blank lines and ``#`` comments skipped.

    A CSV line keeps its first field. Malformed lines (whitespace inside an id) are a SeedError
    naming the line.
    """
    ids: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(",", 1)[0].strip().strip('"')
        if not ids and first.lower() in SEED_HEADERS:
            continue
        if not first or any(c.isspace() for c in first):
            raise SeedError(f"seed line {lineno} is malformed: {raw!r}")
        ids.append(first)
    return ids


@dataclass
class SeedSet:
    """The result of reading seeds against the score table."""

    found_dids: np.ndarray  # unique known dids, in first-seen order
    found_index: np.ndarray  # row of each found did in the user table given to read_seeds
    submitted: int
    unknown: int
    duplicates: int
    unknown_examples: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        return int(self.found_dids.size)

    def counts(self) -> dict[str, int]:
        return {
            "submitted": self.submitted,
            "found": self.found,
            "unknown": self.unknown,
            "duplicate": self.duplicates,
        }


def read_seeds(seeds: list[str], known_dids: np.ndarray, min_found: int = 1, max_seeds: int = 10**6) -> SeedSet:
    """Match seed ids against ``known_dids`` (the score table's did column).

    ``duplicate`` counts repeated lines beyond the first; ``unknown`` counts distinct ids not in the
    table. Raises SeedError when the list is empty, too long or fewer than ``min_found`` are known.
    """
    if not seeds:
        raise SeedError("the seed list is empty")
    if len(seeds) > max_seeds:
        raise SeedError(f"{len(seeds)} seeds submitted; the limit is {max_seeds}")
    arr = np.asarray([str(s) for s in seeds], dtype=object)
    uniq, first_pos = np.unique(arr, return_index=True)
    order = np.argsort(first_pos, kind="stable")
    uniq = uniq[order]
    duplicates = int(arr.size - uniq.size)
    # a hash lookup (the first row of each id), not a sort of the whole population's ids
    where = pc.index_in(pa.array(uniq.astype(str), type=pa.string()),
                        value_set=pa.array(np.asarray(known_dids).astype(str), type=pa.string()))
    is_found = where.is_valid().to_numpy(zero_copy_only=False)
    rows = where.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    found = SeedSet(
        found_dids=uniq[is_found].astype(str),
        found_index=rows[is_found].astype(np.int64),
        submitted=int(arr.size),
        unknown=int((~is_found).sum()),
        duplicates=duplicates,
        unknown_examples=[str(x) for x in uniq[~is_found][:5]],
    )
    if found.found < min_found:
        raise SeedError(
            f"only {found.found} of {uniq.size} distinct seeds are known users (need {min_found}); "
            f"unknown examples: {found.unknown_examples}"
        )
    return found
