"""``<root>/registry.json``: which model and score-table versions are current.

It replaces the spec's Zookeeper entry. Shape::

    {"models": {"din": {"current": "20261128-101500-ab12", "versions": {"<v>": {...}}}},
     "score_tables": {"current": "<v>", "versions": {"<v>": {...}}}}

Updates are read-modify-write under an exclusive lock file (local roots) and written atomically, so
concurrent writers never lose each other's entries and readers never see half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from app.errors import ModelNotReady
from app.storage import Storage

REGISTRY = "registry.json"


def new_version() -> str:
    """Sortable, unique version id: UTC timestamp plus a short random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:4]


class Registry:
    def __init__(self, storage: Storage):
        self.storage = storage

    def read(self) -> dict[str, Any]:
        if not self.storage.exists(REGISTRY):
            return {"models": {}, "score_tables": {"current": None, "versions": {}}}
        return self.storage.read_json(REGISTRY)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.storage._scheme:  # remote roots: single writer assumed (documented)
            yield
            return
        lock_path = self.storage.path(".registry.lock")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with self._locked():
            data = self.read()
            fn(data)
            self.storage.write_json(REGISTRY, data)
            return data

    # ---------------------------------------------------------------- models
    def add_model_version(self, name: str, version: str, info: dict[str, Any], make_current: bool) -> None:
        def fn(data: dict[str, Any]) -> None:
            entry = data.setdefault("models", {}).setdefault(name, {"current": None, "versions": {}})
            entry["versions"][version] = info
            if make_current:
                entry["current"] = version

        self.update(fn)

    def current_model(self, name: str) -> tuple[str, dict[str, Any]]:
        """(version, info) of the current model, or ModelNotReady."""
        entry = self.read().get("models", {}).get(name)
        if not entry or not entry.get("current"):
            raise ModelNotReady(f"no current {name!r} model in {self.storage.root!r}/{REGISTRY}; train one first")
        return entry["current"], entry["versions"][entry["current"]]

    # ---------------------------------------------------------------- score tables
    def add_score_table(self, version: str, info: dict[str, Any], make_current: bool = True) -> None:
        def fn(data: dict[str, Any]) -> None:
            entry = data.setdefault("score_tables", {"current": None, "versions": {}})
            entry.setdefault("versions", {})[version] = info
            if make_current:
                entry["current"] = version

        self.update(fn)

    def current_score_table(self) -> tuple[str, dict[str, Any]]:
        entry = self.read().get("score_tables", {})
        if not entry.get("current"):
            raise ModelNotReady(f"no current score table in {self.storage.root!r}/{REGISTRY}; run `python -m app extend scores`")
        return entry["current"], entry["versions"][entry["current"]]


def registry_for(root: str) -> Registry:
    return Registry(Storage(root))


