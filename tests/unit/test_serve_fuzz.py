"""Property-based tests (Hypothesis) of what strangers send the service: seed files and /score
bodies. Whatever the bytes, the answer is a result or the project's own 4xx error, never a crash.

The seed-file parser streams a line at a time; :func:`reference_parse` is the parser it replaced
(whole file in memory), kept here as the oracle: both accept exactly the same files and return
the same dids.
"""

import csv
import io
import json
import re
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.errors import SeedError
from app.serve.errors import InvalidRequestBody
from app.serve.schemas import ScoreRequest, parse_score_body
from app.serve.uploads import DID_RE, parse_seed_file, read_seed_files

# no example database: nothing is written into the work tree
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DID_CHARS = string.ascii_letters + string.digits + "_.:@-"
dids = st.text(DID_CHARS, min_size=1, max_size=20)


def reference_parse(data: bytes) -> list[str] | None:
    """The in-memory parser before streaming (None where it refused the file)."""
    control = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    if not data.strip() or b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if control.search(text):
        return None
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), None)
    if first is None:
        return None
    if any(d in first for d in ",;\t|"):
        try:
            delimiter = csv.Sniffer().sniff(first, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        rows = csv.reader(io.StringIO(text[text.index(first):]), delimiter=delimiter)
        try:
            header = [h.strip().lower() for h in next(rows)]
            if "did" not in header:
                return None
            out = []
            for row in rows:
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(header) or not DID_RE.match(row[header.index("did")].strip()):
                    return None
                out.append(row[header.index("did")].strip())
        except csv.Error:
            return None
        return out
    values = [v.strip() for v in lines if v.strip()]
    if values and values[0].lower() == "did":
        values = values[1:]
    if not values or not all(DID_RE.match(v) for v in values):
        return None
    return values


def parse_or_none(data: bytes) -> list[str] | None:
    try:
        return parse_seed_file("f.txt", data)
    except SeedError:
        return None


# bytes that look like seed files often enough to get past the first checks
seedish = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(dids, st.sampled_from(["did", "DID", "", " ", "a,b", "did,age", "x;did", '"q', "\t"]),
                       st.text(max_size=8)), max_size=12)
    .flatmap(lambda parts: st.sampled_from(["\n", "\r\n", "\r", "\u2028"]).map(lambda sep: sep.join(parts)))
    .map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@FUZZ
@given(seedish)
def test_seed_parser_never_crashes_and_agrees_with_the_reference(data):
    try:
        got = parse_seed_file("f.txt", data)
    except SeedError as exc:
        assert "'f.txt'" in str(exc)
        got = None
    except UnicodeEncodeError:  # a lone surrogate from the generator, not a file anyone can send
        assume(False)
    if got is not None:
        assert all(DID_RE.match(d) for d in got)
    assert got == reference_parse(data)


@FUZZ
@given(st.lists(dids, min_size=1, max_size=50), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.booleans())
def test_seed_lists_round_trip(values, sep, header, bom):
    assume(values[0].lower() != "did" or header)
    text = ("did" + sep if header else "") + sep.join(f"  {v} " for v in values) + sep * 2
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    assert parse_seed_file("f.txt", data) == values


@FUZZ
@given(st.lists(dids, min_size=1, max_size=30), st.sampled_from([",", ";", "\t", "|"]), st.integers(0, 2))
def test_csv_seed_files_round_trip(values, delimiter, position):
    columns = ["age", "note"]
    columns.insert(position, "did")
    lines = [delimiter.join(columns)]
    for i, v in enumerate(values):
        row = [str(i), "x"]
        row.insert(position, v)
        lines.append(delimiter.join(row))
    assert parse_seed_file("f.csv", ("\n".join(lines) + "\n").encode()) == values


@FUZZ
@given(st.lists(st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=40), min_size=1, max_size=4))
def test_distinct_seeds_keep_their_first_occurrence(files):
    data = [(f"f{i}.txt", "\n".join(f).encode()) for i, f in enumerate(files)]
    every = [d for f in files for d in f]
    seeds, upload = read_seed_files(data, min_seeds=1, max_seeds=10_000)
    assert seeds == list(dict.fromkeys(every))
    assert (upload.lines, upload.duplicates) == (len(every), len(every) - len(seeds))


# ------------------------------------------------------------------ POST /score bodies
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=15,
)
score_like = st.fixed_dictionaries(
    {"dids": st.one_of(st.lists(st.one_of(dids, json_values), max_size=5), json_values)},
    optional={"keywords": st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=5), json_values), max_size=3)),
              "extra": json_values},
)


def check_score_body(body: bytes):
    try:
        req = parse_score_body(body)
    except InvalidRequestBody as exc:
        json.dumps({"detail": str(exc)}, allow_nan=False)  # the 422 answer itself can be sent
        return None
    assert isinstance(req, ScoreRequest) and req.dids and all(DID_RE.match(d) for d in req.dids)
    return req


@FUZZ
@given(st.one_of(st.binary(max_size=200), score_like.map(lambda v: json.dumps(v).encode())))
def test_score_body_is_a_request_or_a_422(body):
    check_score_body(body)


@FUZZ
@given(score_like)
def test_nan_and_infinity_anywhere_are_a_422(value):
    text = json.dumps(value)
    if "NaN" in text or "Infinity" in text:
        assert check_score_body(text.encode()) is None


def test_score_body_edge_cases():
    assert check_score_body(b'{"dids": ["u1"], "keywords": ["k"]}').keywords == ["k"]
    for body in (b'{"dids": [NaN]}', b'{"dids": ["u1"], "keywords": Infinity}', b"[" * 100_000, b"\xff",
                 b"[]", b'"x"', b"", b'{"dids": []}', b'{"dids": ["u1"], "other": 1}'):
        assert check_score_body(body) is None, body[:40]
