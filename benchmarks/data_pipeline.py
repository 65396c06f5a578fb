"""Data pipeline throughput: raw log rows/s per stage and end to end, TFRecord samples/s, peak memory.

    python benchmarks/data_pipeline.py --rows 1000000 --rows 10000000
    python benchmarks/data_pipeline.py --rows 1000000 --format parquet --format csv   # CSV input too

For each size (and each ``--format``) it generates synthetic raw logs (not timed; with ``csv``
they are then exported as one CSV file per table, or ``--csv-files N`` per log, also not timed),
then runs the whole pipeline under a local Ray and prints one JSON line: per-stage wall seconds and raw-log-rows/s (every stage is divided
by the same raw show+click row count, so the figures add up like the spec's Spark timings; a stage
the clean stage ran fused shows ``written_by`` and, for train-ready and samples, the
``task_seconds`` its work took inside clean's bucket tasks, summed over buckets), end-to-end
rows/s, TFRecord samples per second (per task-second when fused), and the peak resident memory
of the driver plus every Ray process it started (sampled every 0.2 s). CSV runs also give the
seconds spent converting each log to Parquet (inside the keywords and clean stages' times).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from app.config import load_config  # noqa: E402
from app.data.config import DataConfig  # noqa: E402
from app.data.pipeline import run_pipeline  # noqa: E402
from app.data.synthetic import GenerateConfig, generate  # noqa: E402
from app.storage import Storage  # noqa: E402


class PeakMemory:
    """Peak summed RSS of this process and all its descendants (local Ray's processes)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def export_csv(storage: Storage, files_per_log: int) -> tuple[list[str], int]:
    """The generated raw tables as CSV under ``csv/`` (one file per table; each log split into
    ``files_per_log`` files in a directory when more than 1). Returns (config overrides, bytes)."""
    overrides, size = [], 0
    for table in ("persona", "showlog", "clicklog", "keyword", "slot"):
        data = pa.concat_tables([pq.read_table(f) for f in storage.list_files(f"raw/{table}", suffix=".parquet")])
        data = data.cast(pa.schema([(f.name, pa.string()) for f in data.schema]))
        parts = files_per_log if table in ("showlog", "clicklog") and files_per_log > 1 else 1
        rel = f"csv/{table}" if parts > 1 else f"csv/{table}.csv"
        step = -(-data.num_rows // parts)
        for i in range(parts):
            path = storage.path(f"{rel}/part-{i:05d}.csv" if parts > 1 else rel)
            storage.fs.create_dir(os.path.dirname(path), recursive=True)
            pacsv.write_csv(data.slice(i * step, step), path)
            size += os.path.getsize(path)
        overrides.append(f"raw.{table}={rel}")
    return overrides, size


def run_size(rows: int, days: int, workdir: str, overrides: list[str], fmt: str = "parquet",
             csv_files: int = 1) -> dict:
    users = max(1000, int(rows / (days * 4.0 * 1.08)))  # ~4 shows/user/day plus ~8% clicks
    gcfg = load_config(GenerateConfig, "configs/generate.yaml", [f"users={users}", f"days={days}"])
    root = os.path.join(workdir, f"rows{rows}-{fmt}")
    storage = Storage(root)
    t0 = time.perf_counter()
    gen = generate(gcfg, storage)
    gen_s = time.perf_counter() - t0
    raw_rows = gen["rows"]["showlog"] + gen["rows"]["clicklog"]
    csv_overrides, csv_bytes = export_csv(storage, csv_files) if fmt == "csv" else ([], 0)
    cfg = load_config(DataConfig, "configs/data.yaml", [*csv_overrides, *overrides])
    with PeakMemory() as mem:
        reports = run_pipeline(cfg, storage)
    stages = {}
    for name in ("keywords", "persona", "clean", "unify", "trainready", "samples"):
        if reports[name].get("written_by"):  # fused: its wall time is inside that stage's
            stages[name] = {"written_by": reports[name]["written_by"]}
            if name != "unify":  # unify's work is not timed apart from clean's
                stages[name]["task_seconds"] = reports[name]["seconds"]
            continue
        secs = reports["stage_seconds"][name]  # wall time of the stage inside run_pipeline
        stages[name] = {"seconds": round(secs, 2), "raw_rows_per_s": round(raw_rows / max(secs, 1e-3))}
    stages["clean"]["task_seconds"] = reports["clean"]["showlog"]["task_seconds"]  # its two steps
    samples = reports["samples"]["train"] + reports["samples"]["test"]
    if reports["samples"].get("written_by"):
        # fused: seconds summed over the bucket tasks (several run at once), so this is a rate
        # per busy CPU, lower than the stage's rate per wall second
        tfrecord = {"tfrecord_samples_per_task_s": round(samples / max(reports["samples"]["seconds"], 1e-3))}
    else:
        tfrecord = {"tfrecord_samples_per_s": round(samples / reports["stage_seconds"]["samples"])}
    shutil.rmtree(root, ignore_errors=True)
    csv_info = {}
    if fmt == "csv":
        csv_info["csv"] = {
            "bytes": csv_bytes, "files_per_log": csv_files,
            "conversion_seconds": {"showlog": reports["keywords"].get("showlog_csv_conversion_seconds"),
                                   "clicklog": reports["clean"]["clicklog"].get("csv_conversion_seconds")},
        }
    return {
        "raw_log_rows": raw_rows,
        "format": fmt,
        "users": users,
        "days": days,
        "data_config_overrides": overrides,
        "generate_seconds": round(gen_s, 2),
        "stages": stages,
        "end_to_end_seconds": reports["seconds"],
        "end_to_end_raw_rows_per_s": round(raw_rows / reports["seconds"]),
        "samples": samples,
        **tfrecord,
        **csv_info,
        "peak_rss_gib": round(mem.peak / 2**30, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, action="append", help="raw log rows (repeatable)")
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="configs/data.yaml override, e.g. did_bucket_num=8 (repeatable)")
    ap.add_argument("--format", dest="formats", action="append", choices=["parquet", "csv"],
                    help="raw input format (repeatable: each size runs in each, in turn); default parquet")
    ap.add_argument("--csv-files", type=int, default=1, help="CSV files per log (1 = one file per table)")
    args = ap.parse_args()
    from app.ray_utils import init_ray

    init_ray()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-data-")
    results = [run_size(r, args.days, workdir, args.overrides, fmt, args.csv_files)
               for r in (args.rows or [1_000_000]) for fmt in (args.formats or ["parquet"])]
    print(json.dumps({
        "benchmark": "data_pipeline",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "results": results,
    }))


if __name__ == "__main__":
    main()
