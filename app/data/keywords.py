"""Stage 1, keywords: keep keywords above ``keyword_threshold`` of impressions; stable indices.

Index 0 is padding. A keyword keeps its index across runs (indices are read back from the existing
table and new keywords are appended after the largest), so models and score tables built on an
older run stay meaningful. Keywords under the threshold keep their index but are marked
``kept = false``; their log rows are quarantined as ``rare_keyword``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app import constants as C
from app.data.config import DataConfig
from app.data.io import StageReport, map_tasks, pack_units, read_unit
from app.data.raw_input import LogInput, log_inputs, read_input
from app.errors import SchemaError
from app.storage import Storage


def _count_apps(batch: dict) -> pa.Table:
    """Impressions per spread_app_id of some row groups: a bincount of the dictionary codes."""
    parts = []
    work = [(f, int(rg)) for files, groups in zip(batch["file"], batch["row_group"], strict=True)
            for f, rg in zip(files, groups, strict=True)]
    for f, rg in work:
        apps = read_unit(f, rg, [C.SPREAD_APP_ID], dictionary=(C.SPREAD_APP_ID,))[C.SPREAD_APP_ID]
        for chunk in apps.chunks:
            counts = np.bincount(chunk.indices.drop_null().to_numpy(), minlength=len(chunk.dictionary))
            used = counts > 0
            parts.append(pa.table({C.SPREAD_APP_ID: chunk.dictionary.filter(pa.array(used)),
                                   "n": pa.array(counts[used], pa.int64())}))
    return pa.concat_tables(parts)


def app_impressions(showlog: LogInput) -> pa.Table:
    """Impressions per spread_app_id over the raw show log (Ray Data, one column read)."""
    # one column read per row group is quick: a task takes several (task scheduling costs more)
    counts = map_tasks(pack_units(showlog.units, 2_000_000), _count_apps, {})
    if not len(counts):
        return pa.table({C.SPREAD_APP_ID: pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    allc = pa.Table.from_pandas(counts, preserve_index=False)
    return allc.group_by(C.SPREAD_APP_ID).aggregate([("n", "sum")]).rename_columns([C.SPREAD_APP_ID, "n"])


def assign_indices(keywords: list[str], previous: dict[str, int]) -> dict[str, int]:
    """Stable indices from 1: previous ones kept, new keywords appended in sorted order."""
    out = dict(previous)
    nxt = max(out.values(), default=0) + 1
    for kw in sorted(set(keywords) - set(out)):
        out[kw] = nxt
        nxt += 1
    return out


def run(cfg: DataConfig, storage: Storage) -> dict:
    report = StageReport("keywords")
    kw_table = read_input(storage, "keyword", cfg.raw.keyword, C.KEYWORD_TABLE_COLUMNS)
    kw_table = kw_table.filter(pc.is_valid(kw_table[C.KEYWORD]))
    showlog = log_inputs(storage, cfg.raw, {"showlog": (C.SHOWLOG_COLUMNS, C.SHOW_TIME)})["showlog"]
    imps = app_impressions(showlog)
    joined = imps.join(kw_table, C.SPREAD_APP_ID, join_type="inner")
    per_kw = joined.group_by(C.KEYWORD).aggregate([("n", "sum")]).rename_columns([C.KEYWORD, C.IMPRESSIONS])
    all_keywords = sorted(set(kw_table[C.KEYWORD].to_pylist()))
    if not all_keywords:
        raise SchemaError(f"input table 'keyword' ({cfg.raw.keyword.path}) has no keywords")
    imp_map = dict(zip(per_kw[C.KEYWORD].to_pylist(), per_kw[C.IMPRESSIONS].to_pylist(), strict=True))
    total = max(sum(imp_map.values()), 1)
    previous: dict[str, int] = {}
    if storage.list_files(C.T_KEYWORDS, suffix=".parquet"):
        old = storage.read_table(C.T_KEYWORDS, columns=[C.KEYWORD, C.KEYWORD_INDEX])
        previous = dict(zip(old[C.KEYWORD].to_pylist(), old[C.KEYWORD_INDEX].to_pylist(), strict=True))
    indices = assign_indices(all_keywords, previous)
    names = sorted(indices, key=indices.get)
    impressions = np.array([imp_map.get(k, 0) for k in names], dtype=np.int64)
    kept = impressions / total >= cfg.keywords.keyword_threshold
    if cfg.keywords.keyword_threshold > 0:
        kept &= impressions > 0
    table = pa.table(
        {
            C.KEYWORD: pa.array(names, pa.string()),
            C.KEYWORD_INDEX: pa.array([indices[k] for k in names], pa.int32()),
            C.IMPRESSIONS: impressions,
            "kept": kept,
        }
    )
    storage.write_table(C.T_KEYWORDS, table)
    report.rows_in = int(sum(imp_map.values()))
    report.rows_out = int(kept.sum())
    report.extra = {"keywords": len(names), "kept": int(kept.sum()), "threshold": cfg.keywords.keyword_threshold}
    if showlog.format == "csv":
        report.extra["showlog_csv_conversion_seconds"] = showlog.conversion_seconds
    return report.finish(storage)


def load_keywords(storage: Storage, kept_only: bool = True) -> pa.Table:
    t = storage.read_table(C.T_KEYWORDS)
    if kept_only:
        t = t.filter(t["kept"])
    return t.sort_by(C.KEYWORD_INDEX)
