"""Raw input forms (Parquet or CSV, file or directory, root-relative, absolute or URI), the CSV
rules, and the one-schema quarantine rows (no Ray)."""

import gzip

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from app import constants as C
from app.config import load_config
from app.data import raw_input
from app.data.config import DataConfig, RawTable
from app.data.io import quarantine_schema
from app.data.raw_input import (
    MALFORMED,
    convert_csv_file,
    file_format,
    read_input,
    read_input_rows,
    resolve,
)
from app.errors import ConfigError, SchemaError

COLS = C.PERSONA_COLUMNS  # did, gender_new_dev, forecast_age_dev
ROWS = {C.DID: ["u1", "u2", "u3", "007"], C.GENDER_RAW: ["0", "1", "1", "0"], C.AGE_RAW: ["3", "4", "5", "NA"]}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("part-0.parquet", "parquet"), ("x.PQ", "parquet"), ("a.csv", "csv"), ("a.CSV.GZ", "csv"),
        ("a.csv.bz2", "csv"), ("a.csv.zst", "csv"), ("a.csv.lz4", "csv"), ("a.tsv", None), ("a.gz", None),
        ("part-00000", None), ("a.parquet.gz", None),
    ],
)
def test_format_from_file_name(name, fmt):
    assert file_format(name) == fmt


def _table(rows=ROWS):
    return pa.table({c: pa.array(v, pa.string()) for c, v in rows.items()})


def _write_csv(path, table, compress=False):
    if compress:
        with pa.CompressedOutputStream(str(path), "gzip") as out:
            pacsv.write_csv(table, out)
    else:
        pacsv.write_csv(table, str(path))


def _forms(tmp, storage):
    """(configured path, format) of the same persona rows in every accepted form."""
    t = _table()
    half1, half2 = t.slice(0, 2), t.slice(2)
    base = storage.path("raw")
    storage.makedirs("raw/pq_dir/day=1")
    storage.makedirs("raw/csv_dir/sub")
    pq.write_table(t, f"{base}/one.parquet")
    pq.write_table(half1, f"{base}/pq_dir/day=1/part-0.parquet")
    pq.write_table(half2, f"{base}/pq_dir/part-1.pq")
    (tmp / "root/raw/pq_dir/_tmp-part-2.parquet").write_text("half-written")  # hidden names are never data
    _write_csv(f"{base}/one.csv", t)
    _write_csv(f"{base}/one.csv.gz", t, compress=True)
    _write_csv(f"{base}/csv_dir/part-0.csv", half1)
    _write_csv(f"{base}/csv_dir/sub/part-1.csv.gz", half2, compress=True)
    (tmp / "root/raw/csv_dir/.part-2.csv").write_text("junk")
    _write_csv(f"{base}/export-00000", t)  # no suffix: the format must be set
    return {
        "parquet file": ("raw/one.parquet", "auto"),
        "parquet directory": ("raw/pq_dir", "auto"),
        "csv file": ("raw/one.csv", "auto"),
        "gzipped csv file": ("raw/one.csv.gz", "auto"),
        "csv directory": ("raw/csv_dir", "auto"),
        "absolute path": (f"{base}/csv_dir", "auto"),
        "file URI": (f"file://{base}/pq_dir", "auto"),
        "file named by the config's format": ("raw/export-00000", "csv"),
    }


FORMS = ["parquet file", "parquet directory", "csv file", "gzipped csv file", "csv directory", "absolute path",
         "file URI", "file named by the config's format"]


@pytest.mark.parametrize("form", FORMS)
def test_every_input_form_reads_the_same_rows(tmp_path, storage, form):
    path, fmt = _forms(tmp_path, storage)[form]
    rows, bad = read_input_rows(storage, "persona", RawTable(path=path, format=fmt), COLS)
    assert rows.schema == pa.schema([(c, pa.string()) for c in COLS])
    assert sorted(rows.to_pylist(), key=str) == sorted(_table().to_pylist(), key=str)  # "007", "NA" as they are
    assert bad.num_rows == 0 and bad.schema == quarantine_schema(COLS)


def test_resolve_tells_format_and_files(tmp_path, storage):
    forms = _forms(tmp_path, storage)
    src = resolve(storage, "persona", RawTable(path=forms["parquet directory"][0]))
    assert src.format == "parquet" and [f.rsplit("/", 1)[1] for f in src.files] == ["part-0.parquet", "part-1.pq"]
    src = resolve(storage, "persona", RawTable(path=forms["csv directory"][0]))
    assert src.format == "csv" and len(src.files) == 2  # .part-2.csv is hidden
    src = resolve(storage, "persona", RawTable(path="raw", format="parquet"))  # named files only
    assert src.format == "parquet" and all(f.endswith((".parquet", ".pq")) for f in src.files)


@pytest.mark.parametrize(
    ("path", "fmt", "match"),
    [
        ("raw", "auto", "both Parquet and CSV"),
        ("raw/export-00000", "auto", "set raw.persona.format"),
        ("raw/nothing", "auto", "'persona' not found"),
        ("raw/one.csv", "parquet", "not a readable Parquet file"),
    ],
)
def test_unusable_input_is_a_schema_error_naming_it(tmp_path, storage, path, fmt, match):
    _forms(tmp_path, storage)
    with pytest.raises(SchemaError, match=match):
        read_input_rows(storage, "persona", RawTable(path=path, format=fmt), COLS)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_column_named_in_any_file(storage, suffix):
    storage.makedirs("raw/p")
    good, bad = _table(), _table().drop_columns([C.AGE_RAW])
    for name, t in (("a", good), ("b", bad)):  # the second file lacks the column
        (pq.write_table if suffix == ".parquet" else pacsv.write_csv)(t, storage.path(f"raw/p/{name}{suffix}"))
    with pytest.raises(SchemaError, match=r"'persona'.*b\.(csv|parquet).*forecast_age_dev"):
        read_input_rows(storage, "persona", RawTable(path="raw/p"), COLS)


def test_csv_rules_strings_empty_is_missing_extra_columns_ignored(storage):
    storage.makedirs("raw")
    text = ('extra;forecast_age_dev;did;gender_new_dev\n'
            'x;"3";u1;0\n'
            'x;;u2;""\n'  # empty, quoted empty: missing
            'x;0012;"u;3";1\n'  # leading zeros kept; the delimiter inside quotes
            'x;NULL;"multi\nline";1\n')  # only an empty field is missing; a quoted newline stays
    with gzip.open(storage.path("raw/p.csv.gz"), "wt") as f:
        f.write(text)
    rows = read_input(storage, "persona", RawTable(path="raw/p.csv.gz", delimiter=";"), COLS)
    assert rows.column_names == COLS
    assert rows.to_pylist() == [
        {C.DID: "u1", C.GENDER_RAW: "0", C.AGE_RAW: "3"},
        {C.DID: "u2", C.GENDER_RAW: None, C.AGE_RAW: None},
        {C.DID: "u;3", C.GENDER_RAW: "1", C.AGE_RAW: "0012"},
        {C.DID: "multi\nline", C.GENDER_RAW: "1", C.AGE_RAW: "NULL"},
    ]


MALFORMED_CSV = ('did,gender_new_dev,forecast_age_dev\n'
                 'u1,0,3\n'
                 'u2,1\n'  # a field short
                 'u3,1,4,extra,"x,y"\n'  # two fields too many, one quoted with the delimiter
                 'u4,0,5\n'
                 'lonely\n')


def test_malformed_lines_become_quarantine_rows(storage):
    storage.makedirs("raw")
    with open(storage.path("raw/p.csv"), "w") as f:
        f.write(MALFORMED_CSV)
    rows, bad = read_input_rows(storage, "persona", RawTable(path="raw/p.csv"), COLS)
    assert rows[C.DID].to_pylist() == ["u1", "u4"]
    assert bad.schema == quarantine_schema(COLS)
    assert sorted(bad.to_pylist(), key=lambda r: r[C.DID]) == [
        {C.DID: "lonely", C.GENDER_RAW: None, C.AGE_RAW: None, C.REASON: MALFORMED},
        {C.DID: "u2", C.GENDER_RAW: "1", C.AGE_RAW: None, C.REASON: MALFORMED},
        {C.DID: "u3", C.GENDER_RAW: "1", C.AGE_RAW: "4,extra,x,y", C.REASON: MALFORMED},  # the rest, joined
    ]
    with pytest.raises(SchemaError, match=r"'persona'.*p\.csv.*3 line\(s\) with the wrong number of fields"):
        read_input(storage, "persona", RawTable(path="raw/p.csv"), COLS)  # the whitelists' strict read


def test_csv_converts_to_dictionary_coded_row_groups(storage, monkeypatch):
    monkeypatch.setattr(raw_input, "CSV_ROW_GROUP_ROWS", 3)
    monkeypatch.setattr(raw_input, "CSV_BLOCK_BYTES", 64)  # several CSV blocks per row group
    storage.makedirs("raw")
    storage.makedirs("out")
    n = 40
    t = pa.table({C.DID: [f"u{i % 4}" for i in range(n)], C.GENDER_RAW: ["1"] * n,
                  C.AGE_RAW: [f"2020-01-01 00:00:{i:02d}" for i in range(n)]})
    pacsv.write_csv(t, storage.path("raw/p.csv"))
    with open(storage.path("raw/p.csv"), "a") as f:
        f.write("u9,1\n")
    src = resolve(storage, "persona", RawTable(path="raw/p.csv"))
    dest, bad = storage.path("out/part.parquet"), storage.path("out/_bad.parquet")
    assert convert_csv_file(src, src.files[0], COLS, [C.AGE_RAW], storage.fs, dest, bad) == (n, 1)
    pf = pq.ParquetFile(dest)
    assert pf.read().to_pylist() == t.to_pylist()
    assert pf.metadata.num_row_groups >= n // 8 and all(
        pf.metadata.row_group(i).num_rows >= 3 for i in range(pf.metadata.num_row_groups - 1))
    rg = pf.metadata.row_group(0)
    encodings = {rg.column(i).path_in_schema: rg.column(i).encodings for i in range(rg.num_columns)}
    assert "RLE_DICTIONARY" in encodings[C.DID] and "RLE_DICTIONARY" not in encodings[C.AGE_RAW]
    assert pq.read_table(bad).to_pylist() == [{C.DID: "u9", C.GENDER_RAW: "1", C.AGE_RAW: None, C.REASON: MALFORMED}]


def test_conversion_fingerprint_follows_the_files(storage):
    storage.makedirs("raw")
    pacsv.write_csv(_table(), storage.path("raw/p.csv"))
    spec = RawTable(path="raw/p.csv")
    first = raw_input._fingerprint(resolve(storage, "persona", spec), COLS, [])
    assert raw_input._fingerprint(resolve(storage, "persona", spec), COLS, []) == first
    assert raw_input._fingerprint(resolve(storage, "persona", spec), COLS, [C.AGE_RAW]) != first
    with open(storage.path("raw/p.csv"), "a") as f:
        f.write("u5,1,2\n")
    assert raw_input._fingerprint(resolve(storage, "persona", spec), COLS, []) != first


def test_raw_config_accepts_paths_and_mappings():
    cfg = load_config(DataConfig, "configs/data.yaml", ["raw.showlog=exports/shows.csv.gz", "raw.clicklog.format=csv",
                                                        "raw.slot.delimiter=;"])
    assert cfg.raw.showlog == RawTable(path="exports/shows.csv.gz")
    assert (cfg.raw.clicklog.path, cfg.raw.clicklog.format) == (C.RAW_CLICKLOG, "csv")
    assert cfg.raw.slot.delimiter == ";" and cfg.raw.persona.format == "auto"
    assert DataConfig(raw={"keyword": {"format": "parquet"}}).raw.keyword.path == C.RAW_KEYWORD
    for bad in ("raw.showlog.format=json", "raw.showlog.delimiter=ab", "raw.weblog=x"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(DataConfig, None, [bad])


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"did,gender_new_dev,forecast_age_dev\nu1,0,3\n\xff\xfe,1,2\n", "invalid UTF8"),
        (b"", "Empty CSV file"),
        (b'did,gender_new_dev,forecast_age_dev\nu1,0,3\n"u2,1,2\nu3,1,2\n', ["u2,1,2\nu3,1,2"]),  # quote left open
        (b"did,gender_new_dev,forecast_age_dev\n", []),  # a header and no rows: an empty table
    ],
)
def test_unreadable_csv_named_and_open_quote_malformed(storage, data, expect):
    storage.makedirs("raw")
    with open(storage.path("raw/p.csv"), "wb") as f:
        f.write(data)
    spec = RawTable(path="raw/p.csv")
    if isinstance(expect, str):
        with pytest.raises(SchemaError, match=rf"'persona'.*p\.csv.*not a readable CSV file.*{expect}"):
            read_input_rows(storage, "persona", spec, COLS)
        return
    rows, bad = read_input_rows(storage, "persona", spec, COLS)
    assert rows[C.DID].to_pylist() == (["u1"] if data.count(b"\n") > 1 else [])
    assert bad[C.DID].to_pylist() == expect and set(bad[C.REASON].to_pylist()) <= {MALFORMED}
