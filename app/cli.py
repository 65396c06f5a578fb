"""One CLI: ``python -m app <stage> <verb> -c CONFIG [--set k=v ...] [--smoke] [--root ROOT]``.

Each stage package has a ``commands.py`` with ``register(subparsers)``; a command body only loads
its config, calls the stage's ``run(cfg)`` and prints a JSON summary. The command functions are
plain functions the tests call too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any

from app.errors import LookalikeError

STAGE_MODULES = ["app.data.commands", "app.train.commands", "app.extend.commands", "app.serve.commands", "app.demo"]


def add_common(p: argparse.ArgumentParser, config: str | None = None) -> None:
    """The options every command shares."""
    p.add_argument("-c", "--config", default=config, help=f"YAML config (default: {config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set samples.cutting_date=2020-01-10")
    p.add_argument("--root", default=None, help="storage root (default: $LOOKALIKE_ROOT or var/lookalike)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")


def stage_config_path(args: argparse.Namespace, default: str, smoke: str) -> str:
    """``-c`` (default ``default``), or ``smoke`` with ``--smoke`` unless ``-c`` named another file."""
    path = args.config or default
    return smoke if getattr(args, "smoke", False) and path == default else path


def load_stage_config(model, args: argparse.Namespace, default: str, smoke: str):
    """The command's validated config, ``--set`` overrides applied on top."""
    from app.config import load_config

    return load_config(model, stage_config_path(args, default, smoke), args.overrides)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Lookalike-audience platform on Ray")
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except LookalikeError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print_json(result)
    return 0
