"""Typed configuration: one pydantic model per stage, loaded from YAML with ``--set`` overrides.

Every stage's config model derives from :class:`StrictModel` (unknown keys are refused) and lives
next to its stage (``app/data/config.py``, ``app/train/config.py``...). This module only knows how
to load, override, validate and dump them, so stages never parse YAML themselves.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from app.errors import ConfigError
from app.settings import config_path

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value (so ``3`` is an int)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override set."""
    out = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = parse_override(item)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = config_path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return data


def validate(model: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Validate ``data`` against ``model``; a readable :class:`ConfigError` on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            value = err.get("input")
            shown = "" if err["type"] == "missing" else f" (got {value!r})"
            lines.append(f"  {loc}: {err['msg']}{shown}")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from exc


def load_config(
    model: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Load ``model`` from an optional YAML file plus ``--set`` overrides (defaults otherwise)."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    return validate(model, data, source=str(path) if path else "config")


def dump_config(cfg: BaseModel) -> str:
    """YAML text of a resolved config, stored next to every run's output."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
