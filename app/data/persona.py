"""Stage 2, clean persona: distinct rows; drop every did with more than one (gender, age).

Persona tables are small next to the logs (the spec's had 380k rows for 45M shows), so this stage
runs in one pyarrow pass on the driver: the conflict check needs every row of a did together.
Output ``tables/persona/did_bucket=B`` with did, gender, age (ints) and the stable did_bucket.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from app import constants as C
from app.data.config import DataConfig
from app.data.io import StageReport
from app.data.raw_input import read_input_rows
from app.data.transforms import did_bucket
from app.storage import Storage


def clean_persona(raw: pa.Table, num_buckets: int) -> tuple[pa.Table, pa.Table]:
    """(clean persona, quarantined rows with reason). Pure function, tested on the spec's example."""
    raw = raw.select(C.PERSONA_COLUMNS)
    missing = pc.or_(pc.is_null(raw[C.DID]), pc.equal(pc.fill_null(raw[C.DID], ""), ""))
    g_ok = pc.fill_null(pc.match_substring_regex(raw[C.GENDER_RAW], r"^\d+$"), False)
    a_ok = pc.fill_null(pc.match_substring_regex(raw[C.AGE_RAW], r"^\d+$"), False)
    bad_value = pc.and_(pc.invert(missing), pc.invert(pc.and_(g_ok, a_ok)))
    reasons = pc.if_else(missing, "missing_did", pc.if_else(bad_value, "bad_persona_value", pa.scalar(None, pa.string())))
    quarantine = [raw.filter(pc.is_valid(reasons)).append_column(C.REASON, reasons.filter(pc.is_valid(reasons)))]
    good = raw.filter(pc.is_null(reasons))
    distinct = good.group_by(C.PERSONA_COLUMNS, use_threads=False).aggregate([([], "count_all")])
    per_did = distinct.group_by(C.DID, use_threads=False).aggregate([([], "count_all")])
    conflicted = per_did.filter(pc.greater(per_did["count_all"], 1))[C.DID]
    is_conflict = pc.is_in(good[C.DID], value_set=conflicted)
    bad_rows = good.filter(is_conflict)
    quarantine.append(bad_rows.append_column(C.REASON, pa.array(["conflicting_persona"] * bad_rows.num_rows, pa.string())))
    clean = distinct.filter(pc.invert(pc.is_in(distinct[C.DID], value_set=conflicted)))
    out = pa.table(
        {
            C.DID: clean[C.DID],
            C.GENDER: pc.cast(clean[C.GENDER_RAW], pa.int32()),
            C.AGE: pc.cast(clean[C.AGE_RAW], pa.int32()),
            C.DID_BUCKET: pa.array(did_bucket(clean[C.DID], num_buckets)),
        }
    )
    return out, pa.concat_tables(quarantine)


def run(cfg: DataConfig, storage: Storage) -> dict:
    report = StageReport("persona")
    raw, malformed = read_input_rows(storage, "persona", cfg.raw.persona, C.PERSONA_COLUMNS)
    clean, rejected = clean_persona(raw, cfg.did_bucket_num)
    # one schema for every row: the raw columns as strings, then the reason (malformed CSV lines too)
    quarantine = pa.concat_tables([rejected.cast(malformed.schema), malformed])
    storage.write_table(C.T_PERSONA, clean, partition_cols=[C.DID_BUCKET])
    storage.write_table(f"{C.T_QUARANTINE}/persona", quarantine)
    report.rows_in = raw.num_rows + malformed.num_rows
    report.rows_out = clean.num_rows
    counts = pc.value_counts(quarantine[C.REASON]).to_pylist() if quarantine.num_rows else []
    report.add_quarantine({c["values"]: c["counts"] for c in counts})
    report.extra = {
        "duplicate_rows_merged": raw.num_rows - rejected.num_rows - clean.num_rows,
        "conflicting_dids": int(len(set(quarantine.filter(pc.equal(quarantine[C.REASON], "conflicting_persona"))[C.DID].to_pylist()))),
    }
    return report.finish(storage)


def load_persona(storage: Storage) -> pa.Table:
    return storage.read_table(C.T_PERSONA, columns=[C.DID, C.GENDER, C.AGE, C.DID_BUCKET])
