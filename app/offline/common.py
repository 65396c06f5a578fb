"""What every offline job shares: the grouped-actions schema, reading a client's days, and writing
a model version (Parquet tables + report + resolved config) that the registry then names.

Layout under the storage root (docs/design.md, "Offline jobs")::

    offline/actions/client=<c>/day=<YYYY-MM-DD>/part-*.parquet     grouped actions
    tables/quarantine/offline_actions/day=<YYYY-MM-DD>/             rejected lines + reason
    offline/models/<job>/<client>/<version>/<table>/part-*.parquet  a model version
    offline/models/<job>/<client>/<version>/report.json, config.yaml
    registry.json: models["offline.<job>.<client>"]                 current version per job/client

A version is written under ``_staging`` and moved into place in one commit, so a reader never
sees half a model, and only then registered (current when the config says ``activate``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from app.config import dump_config
from app.errors import ModelNotReady, SchemaError
from app.registry import Registry, new_version
from app.storage import Storage

# ------------------------------------------------------------------ the grouped-actions schema
CLIENT = "client"
USER = "userid"
ITEM = "itemid"
CLIENT_USER = "client_userid"
CLIENT_ITEM = "client_itemid"
RECTAG = "rectag"
TYPE = "type"
VALUE = "value"
TIMESTAMP = "timestamp_utc"
DAY = "day"

#: the columns of a grouped action (``client`` and ``day`` are the partition keys)
ACTION_SCHEMA = pa.schema([
    (USER, pa.int64()),
    (ITEM, pa.int64()),
    (TYPE, pa.int32()),
    (VALUE, pa.float64()),
    (TIMESTAMP, pa.timestamp("s", tz="UTC")),
    (CLIENT_USER, pa.string()),
    (CLIENT_ITEM, pa.string()),
    (RECTAG, pa.string()),
])


def model_name(job: str, client: str) -> str:
    """The registry's name of a job's model for one client."""
    return f"offline.{job}.{client}"


def client_days(storage: Storage, input_path: str, client: str) -> list[dt.date]:
    """The days the grouped-actions table holds for ``client``, oldest first."""
    days = []
    for name in storage.iter_dirs(input_path, f"{CLIENT}={client}"):
        if name.startswith(f"{DAY}="):
            days.append(dt.date.fromisoformat(name.split("=", 1)[1]))
    return sorted(days)


def select_days(storage: Storage, input_path: str, client: str, start_day: dt.date | None,
                days: int) -> list[dt.date]:
    """The ``days`` days ending at ``start_day`` (default: the client's newest) that exist."""
    have = client_days(storage, input_path, client)
    if not have:
        raise SchemaError(f"no grouped actions for client {client!r} under {storage.root!r}/{input_path}; "
                          "run `python -m app offline actions` first")
    last = start_day or have[-1]
    wanted = {last - dt.timedelta(days=i) for i in range(days)}
    chosen = [d for d in have if d in wanted]
    if not chosen:
        raise SchemaError(f"client {client!r} has no actions in the {days} day(s) ending {last} "
                          f"(it has {have[0]}..{have[-1]})")
    return chosen


def read_actions(storage: Storage, input_path: str, client: str, start_day: dt.date | None, days: int,
                 columns: list[str] | None = None, filter=None) -> tuple[pa.Table, list[dt.date]]:
    """(actions of ``client`` over the selected days, the days read)."""
    chosen = select_days(storage, input_path, client, start_day, days)
    files = []
    for d in chosen:
        files += storage.list_files(input_path, f"{CLIENT}={client}", f"{DAY}={d.isoformat()}", suffix=".parquet")
    cols = columns or ACTION_SCHEMA.names
    ds = pads.dataset(files, filesystem=storage.fs, format="parquet", schema=ACTION_SCHEMA)
    return ds.to_table(columns=cols, filter=filter), chosen


# ------------------------------------------------------------------ model versions
class ModelWriter:
    """One new model version of ``job`` for ``client``: tables are written into a staging
    directory (by the driver or by Ray tasks, see :meth:`table_dir`), then :meth:`commit` moves
    it into place, writes the report and registers it."""

    def __init__(self, storage: Storage, cfg: Any, job: str):
        self.storage, self.cfg, self.job = storage, cfg, job
        self.version = new_version()
        self.dest = f"{cfg.output_path}/{job}/{cfg.client}/{self.version}"
        self.staging = storage.new_staging(f"{job}-{cfg.client}")
        self.started = time.perf_counter()
        self.rows: dict[str, int] = {}

    def table_dir(self, name: str) -> str:
        """Root-relative staging folder of table ``name`` (Ray tasks write part files into it)."""
        return f"{self.staging}/{name}"

    def write(self, name: str, table: pa.Table, part: int = 0) -> None:
        """Write one part file of table ``name``."""
        path = self.storage.path(self.table_dir(name), f"part-{part:05d}.parquet")
        self.storage.fs.create_dir(self.storage.path(self.table_dir(name)), recursive=True)
        pq.write_table(table, path, filesystem=self.storage.fs)
        self.rows[name] = self.rows.get(name, 0) + table.num_rows

    def commit(self, report: dict[str, Any]) -> dict[str, Any]:
        """Move the version into place, write report.json and config.yaml, register it."""
        report = {"job": self.job, "client": self.cfg.client, "version": self.version, "path": self.dest,
                  "rows": dict(self.rows), **report,
                  "seconds": round(time.perf_counter() - self.started, 3)}
        self.storage.write_json(f"{self.staging}/report.json", report)
        self.storage.write_text(f"{self.staging}/config.yaml", dump_config(self.cfg))
        self.storage.commit_replace(self.staging, self.dest)
        Registry(self.storage).add_model_version(
            model_name(self.job, self.cfg.client), self.version,
            {"path": self.dest, "rows": report["rows"], "created": dt.datetime.now(dt.UTC).isoformat()},
            make_current=self.cfg.activate)
        return report


def current_model_path(storage: Storage, job: str, client: str) -> str:
    """Root-relative folder of the current version of ``job``'s model for ``client``."""
    _version, info = Registry(storage).current_model(model_name(job, client))
    return info["path"]


def upstream_path(storage: Storage, cfg: Any, job: str) -> str:
    """Folder of the version of ``job``'s model that a downstream job reads: ``source_version``
    under ``input_path/<job>/<client>/`` if the config names one, else the registry's current."""
    if getattr(cfg, "source_version", None):
        path = f"{cfg.input_path}/{job}/{cfg.client}/{cfg.source_version}"
        if not storage.exists(path):
            raise ModelNotReady(f"no {job} version {cfg.source_version!r} for client {cfg.client!r} at {path!r}")
        return path
    return current_model_path(storage, job, cfg.client)


def read_model_table(storage: Storage, job: str, client: str, table: str, path: str | None = None) -> pa.Table:
    """Table ``table`` of the current (or the given) version of ``job``'s model for ``client``."""
    base = path or current_model_path(storage, job, client)
    if not storage.exists(base, table):
        raise ModelNotReady(f"{job} model of client {client!r} at {base!r} has no table {table!r}")
    return storage.read_table(f"{base}/{table}")


def user_activity_filter(table: pa.Table, min_actions: int, max_actions: int | None) -> pa.Table:
    """Rows of users with between ``min_actions`` and ``max_actions`` actions (inclusive)."""
    if min_actions <= 0 and max_actions is None:
        return table
    counts = pc.value_counts(table[USER])
    users = counts.field("values")
    n = counts.field("counts")
    keep = pc.greater_equal(n, min_actions)
    if max_actions is not None:
        keep = pc.and_(keep, pc.less_equal(n, max_actions))
    return table.filter(pc.is_in(table[USER], value_set=users.filter(keep)))
