"""One storage root (local path or pyarrow filesystem URI) and atomic writes into it.

Layout (docs/design.md, "Storage")::

    <root>/raw/...                      inputs
    <root>/tables/<name>/k=v/...        Parquet tables with Hive partitioning
    <root>/tables/quarantine/<stage>/   rejected rows with their reason
    <root>/samples/<run>/...            TFRecords + stats.json
    <root>/models/<name>/<version>/     saved models
    <root>/scores/<version>/            score tables
    <root>/registry.json                current model / score-table versions
    <root>/jobs/<job_id>/               audience-extension jobs

Atomicity. Writers put a whole new table or set of partitions under ``<root>/_staging/<id>/`` and
then call :meth:`Storage.commit_partitions`, which swaps each partition directory in by rename,
guarded by a journal under ``<root>/_txn``. A crash at any point leaves every partition either
old or new: :meth:`Storage.recover` (run before every commit) rolls an interrupted commit forward.
Readers ignore names starting with ``_`` or ``.`` (pyarrow's default), so staging and trash
directories are never read as data.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from app.errors import SchemaError

HIDDEN_PREFIXES = ("_", ".")


def _is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIXES)


class Storage:
    """A storage root. Paths given to methods are relative to the root, with ``/`` separators."""

    def __init__(self, root: str):
        #: absolute for a local root: the string is handed to Ray workers and replicas, whose
        #: working directories differ from the caller's (see app.settings.resolve_root)
        self.root = root if "://" in root else os.path.abspath(os.path.expanduser(root))
        if "://" in root:
            self.fs, self.base = pafs.FileSystem.from_uri(root)
            self._scheme = root.split("://", 1)[0]
        else:
            self.fs, self.base = pafs.LocalFileSystem(), self.root
            self._scheme = ""
        self.fs.create_dir(self.base, recursive=True)

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        """Filesystem path (for ``self.fs``) of a root-relative path."""
        return posixpath.join(self.base, *[p.strip("/") for p in parts if p])

    def uri(self, *parts: str) -> str:
        """Path usable by Ray Data / pyarrow outside this object (a URI on remote filesystems)."""
        p = self.path(*parts)
        return f"{self._scheme}://{p}" if self._scheme else p

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.Directory

    def makedirs(self, *parts: str) -> str:
        p = self.path(*parts)
        self.fs.create_dir(p, recursive=True)
        return p

    def delete(self, *parts: str) -> None:
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        """Data files under a directory (recursively), skipping hidden names; sorted, fs paths."""
        top = self.path(*parts)
        if self.fs.get_file_info(top).type != pafs.FileType.Directory:
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(top, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            rel = posixpath.relpath(info.path, top)
            if any(_is_hidden(seg) for seg in rel.split("/")):
                continue
            if info.path.endswith(suffix):
                out.append(info.path)
        return sorted(out)

    def list_partitions(self, *parts: str) -> list[str]:
        """Leaf partition directories (relative, e.g. ``day=2020-01-01/did_bucket=3``)."""
        top = self.path(*parts)
        leaves = {posixpath.dirname(posixpath.relpath(f, top)) for f in self.list_files(*parts)}
        return sorted(leaf for leaf in leaves if leaf not in ("", "."))

    # ------------------------------------------------------------------ small files
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file atomically: temp name in the same directory, then rename."""
        dest = self.path(rel)
        self.fs.create_dir(posixpath.dirname(dest), recursive=True)
        tmp = posixpath.join(posixpath.dirname(dest), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(dest)}")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, dest)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    # ------------------------------------------------------------------ tables
    def new_staging(self, label: str) -> str:
        """A fresh root-relative staging directory for one write."""
        rel = f"_staging/{label}-{uuid.uuid4().hex[:12]}"
        self.makedirs(rel)
        return rel

    def write_table(self, rel: str, table: pa.Table, partition_cols: list[str] | None = None) -> None:
        """Write a Parquet table and atomically replace ``rel`` (or just the partitions it has)."""
        staging = self.new_staging(posixpath.basename(rel))
        if partition_cols:
            pq.write_to_dataset(
                table,
                self.path(staging),
                partition_cols=partition_cols,
                filesystem=self.fs,
                basename_template="part-{i}.parquet",
            )
            self.commit_partitions(staging, rel)
        else:
            pq.write_table(table, self.path(staging, "part-0.parquet"), filesystem=self.fs)
            self.commit_replace(staging, rel)

    def read_table(self, rel: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        """Read a (possibly Hive-partitioned) Parquet table; a SchemaError names what is missing."""
        files = self.list_files(rel, suffix=".parquet")
        if not files:
            raise SchemaError(f"table {rel!r} not found under {self.root!r} (no Parquet files)")
        ds = pads.dataset(
            files,
            filesystem=self.fs,
            format="parquet",
            partitioning=pads.HivePartitioning.discover(infer_dictionary=False),
            partition_base_dir=self.path(rel),
        )
        if columns:
            missing = [c for c in columns if c not in ds.schema.names]
            if missing:
                raise SchemaError(
                    f"table {rel!r} lacks column(s) {missing}; it has {ds.schema.names}"
                )
        return ds.to_table(columns=columns, filter=filter)

    # ------------------------------------------------------------------ commits
    def _journal(self, txn: str) -> str:
        return f"_txn/{txn}.json"

    def commit_partitions(self, staging: str, dest: str) -> list[str]:
        """Swap every leaf partition of ``staging`` into ``dest``; other partitions are untouched."""
        leaves = self.list_partitions(staging)
        if not leaves:
            # an unpartitioned write or an empty result: nothing to swap partition by partition
            files = self.list_files(staging)
            if files:
                raise ValueError(f"staging {staging!r} holds unpartitioned files; use commit_replace")
            self.delete(staging)
            return []
        moves = [(f"{staging}/{leaf}", f"{dest}/{leaf}") for leaf in leaves]
        self._run_txn(moves, cleanup=staging)
        return leaves

    def commit_replace(self, staging: str, dest: str) -> None:
        """Replace the whole directory ``dest`` by ``staging``."""
        self._run_txn([(staging, dest)], cleanup=None)

    def _run_txn(self, moves: list[tuple[str, str]], cleanup: str | None) -> None:
        self.recover()
        txn = uuid.uuid4().hex[:12]
        plan = [
            {"src": src, "dest": dst, "trash": self._trash_name(dst, txn)} for src, dst in moves
        ]
        self.write_json(self._journal(txn), {"moves": plan, "cleanup": cleanup})
        self._apply(plan)
        if cleanup:
            self.delete(cleanup)
        self.delete(self._journal(txn))

    @staticmethod
    def _trash_name(dest: str, txn: str) -> str:
        parent, leaf = posixpath.split(dest)
        return posixpath.join(parent, f"_trash-{txn}-{leaf}")

    def _apply(self, plan: list[dict[str, str]]) -> None:
        for step in plan:
            src, dst, trash = step["src"], step["dest"], step["trash"]
            if self.exists(src):
                if self.exists(dst):
                    self.fs.move(self.path(dst), self.path(trash))
                self.makedirs(posixpath.dirname(dst))
                self.fs.move(self.path(src), self.path(dst))
            if self.exists(trash):
                self.delete(trash)

    def recover(self) -> int:
        """Roll forward commits interrupted by a crash; return how many were found."""
        journals = self.list_files("_txn", suffix=".json") if self.exists("_txn") else []
        # list_files skips hidden names, and "_txn" itself is the top, so journals are listed
        for path in journals:
            rel = posixpath.relpath(path, self.base)
            info = self.read_json(rel)
            self._apply(info["moves"])
            if info.get("cleanup"):
                self.delete(info["cleanup"])
            self.delete(rel)
        return len(journals)

    def list_names(self, *parts: str) -> list[str]:
        """Names in a folder ([] when it does not exist), without a stat per entry on a local
        root (a listing of 10k job-index entries: milliseconds instead of a stat each)."""
        top = self.path(*parts)
        if not self._scheme:
            try:
                return os.listdir(top)
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            return [posixpath.basename(i.path) for i in self.fs.get_file_info(pafs.FileSelector(top))]
        except FileNotFoundError:
            return []

    def iter_dirs(self, *parts: str) -> Iterator[str]:
        top = self.path(*parts)
        if self.fs.get_file_info(top).type != pafs.FileType.Directory:
            return
        for info in self.fs.get_file_info(pafs.FileSelector(top)):
            name = posixpath.basename(info.path)
            if info.type == pafs.FileType.Directory and not _is_hidden(name):
                yield name
