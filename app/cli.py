"""One CLI: ``python -m app <stage> <verb> -c CONFIG [--set k=v ...] [--smoke] [--root ROOT]``.

Each stage package has a ``commands.py`` with ``register(subparsers)``; a command body only loads
its config, calls the stage's ``run(cfg)`` and prints a JSON summary. The command functions are
plain functions the tests call too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import traceback
from typing import Any

from app.console import describe, get_console, log_file_path, quiet_console
from app.errors import LookalikeError

STAGE_MODULES = ["app.data.commands", "app.train.commands", "app.extend.commands", "app.serve.commands", "app.demo",
                 "app.banners.commands", "app.offline.commands"]


def add_common(p: argparse.ArgumentParser, config: str | None = None) -> None:
    """The options every command shares."""
    p.add_argument("-c", "--config", default=config, help=f"YAML config (default: {config})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set samples.cutting_date=2020-01-10")
    p.add_argument("--root", default=None, help="storage root: a path or a URI (default: $LOOKALIKE_ROOT, else var/lookalike in the current directory)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Ray's and TensorFlow's output on the terminal instead of only in the log file")


def stage_config_path(args: argparse.Namespace, default: str, smoke: str) -> str:
    """``-c`` (default ``default``), or ``smoke`` with ``--smoke`` unless ``-c`` named another file."""
    path = args.config or default
    return smoke if getattr(args, "smoke", False) and path == default else path


def load_stage_config(model, args: argparse.Namespace, default: str, smoke: str):
    """The command's validated config, ``--set`` overrides applied on top."""
    from app.config import load_config

    return load_config(model, stage_config_path(args, default, smoke), args.overrides)


def print_json(obj: Any) -> None:
    get_console().print(json.dumps(obj, indent=2, sort_keys=True, default=str))


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


def command_name(args: argparse.Namespace) -> str:
    """``data-run``, ``train-run``, ``demo``: names the command's log file."""
    return "-".join(str(x) for x in (args.stage, getattr(args, "verb", None)) if x)


def main(argv: list[str] | None = None) -> int:
    """Parse, resolve the storage root once, run the command with a readable console.

    The command's step lines, progress bars, JSON summary and errors reach the terminal; Ray's
    and TensorFlow's output goes to ``<root>/logs/<command>-<time>.log`` (``--verbose``: all of it
    to the terminal). Exit status 2 for a caller's mistake (a :class:`LookalikeError`), 1 for
    anything else, whose traceback is printed in full.
    """
    from app.settings import get_settings

    args = build_parser().parse_args(argv)
    console = get_console()
    try:
        root = get_settings(getattr(args, "root", None)).root
    except LookalikeError as exc:
        console.print(f"error: {describe(exc)}")
        return 2
    if getattr(args, "root", None):
        args.root = root  # the one absolute root, for the command and every process it starts
    log_path = log_file_path(root, command_name(args))
    with quiet_console(log_path, verbose=getattr(args, "verbose", False)) as console:
        try:
            result = args.func(args)
        except LookalikeError as exc:
            console.print(f"error: {describe(exc)}")
            console.print(f"log: {log_path}")
            return 2
        except KeyboardInterrupt:
            console.print(f"interrupted; log: {log_path}")
            return 130
        except Exception:  # noqa: BLE001 - reported in full, then a non-zero exit
            console.print(traceback.format_exc().rstrip())
            console.print(f"log: {log_path}")
            return 1
        if result is not None:
            print_json(result)
        console.print(f"log: {log_path}")
    return 0
