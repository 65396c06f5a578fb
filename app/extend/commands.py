"""CLI: ``python -m app extend scores|run|validate -c configs/extend.yaml [--set k=v] [--root R] [--smoke]``."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from app.cli import add_common, load_stage_config
from app.config import dump_config
from app.errors import SeedError
from app.extend.config import ExtendConfig
from app.settings import get_settings
from app.storage import Storage

DEFAULT_CONFIG = "configs/extend.yaml"
SMOKE_CONFIG = "configs/smoke/extend.yaml"


def load_extend_config(args: argparse.Namespace) -> ExtendConfig:
    return load_stage_config(ExtendConfig, args, DEFAULT_CONFIG, SMOKE_CONFIG)


def _storage(args: argparse.Namespace) -> Storage:
    return Storage(get_settings(args.root).root)


def cmd_scores(args: argparse.Namespace) -> dict[str, Any]:
    """Score every user x keyword with the current DIN model; register the score table."""
    from app.extend.scores import generate_score_table
    from app.ray_utils import init_ray

    cfg = load_extend_config(args)
    init_ray()
    info = generate_score_table(_storage(args), cfg.scores, as_of=args.as_of,
                                active_only=cfg.eligible == "active_before")
    keep = ("version", "current", "as_of", "model_version", "num_users", "seconds", "users_per_s")
    return {k: info[k] for k in keep}


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    """Extend the seeds in ``--seeds FILE``; files and report under ``--out`` (root-relative)."""
    from app.extend.engine import extend_audience
    from app.extend.seeds import parse_seed_lines
    from app.ray_utils import init_ray

    cfg = load_extend_config(args)
    update: dict[str, Any] = {}
    if args.strategy:
        update["strategy"] = args.strategy
    if args.size is not None:
        update.update(size=args.size, percentage=None)
    if args.percentage is not None:
        update.update(percentage=args.percentage, size=None)
    if args.as_of is not None:
        update["as_of"] = args.as_of
    cfg = ExtendConfig.model_validate({**cfg.model_dump(), **update})
    path = Path(args.seeds)
    if not path.is_file():
        raise SeedError(f"seed file {str(path)!r} does not exist")
    seeds = parse_seed_lines(path.read_text())
    storage = _storage(args)
    out = args.out or f"jobs/cli-{uuid.uuid4().hex[:12]}"
    storage.write_text(f"{out}/config.yaml", dump_config(cfg))
    init_ray()
    report = extend_audience(storage, seeds, cfg, out)
    from app.console import get_console

    for warning in report.get("warnings", []):
        get_console().step("extend", f"warning: {warning}")
    keep = ("strategy", "as_of", "seeds", "clusters", "warnings", "eligible_users", "requested_size",
            "audience_size", "similarity_spread", "files", "timings_s")
    return {k: report[k] for k in keep if k in report}


def cmd_validate(args: argparse.Namespace) -> dict[str, Any]:
    """Seeds from clicks before the cutting date, outcomes after it: lift vs random/popularity."""
    from app.extend.validate import run_validation
    from app.ray_utils import init_ray

    cfg = load_extend_config(args)
    if args.as_of is not None:
        cfg.validation.cutting_date = args.as_of
    init_ray()
    report = run_validation(_storage(args), cfg)
    storage = _storage(args)
    from app.console import get_console

    get_console().print(storage.read_bytes(report["files"][1]).decode().rstrip())
    return {"files": report["files"], "rows": len(report["rows"]), "score_table": report["score_table"]}


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def register(subparsers) -> None:
    p = subparsers.add_parser("extend", help="score table, audience extension, validation")
    verbs = p.add_subparsers(dest="verb", required=True)
    sc = verbs.add_parser("scores", help="generate and register the user x keyword score table")
    add_common(sc, DEFAULT_CONFIG)
    sc.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD",
                    help="only history before this date; users with none are left out; registered, not current")
    sc.set_defaults(func=cmd_scores)
    run_p = verbs.add_parser("run", help="extend a seed file to a lookalike audience")
    add_common(run_p, DEFAULT_CONFIG)
    run_p.add_argument("--seeds", required=True, help="seed file: one did per line (optional header)")
    run_p.add_argument("--strategy", choices=["din", "jsd"], default=None)
    size = run_p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=None, help="audience size M")
    size.add_argument("--percentage", type=float, default=None, help="M as %% of found seeds (500 = 5x)")
    run_p.add_argument("--out", default=None, help="root-relative output dir (default jobs/cli-<id>)")
    run_p.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD",
                       help="everything as of this date: score table, features, eligible users")
    run_p.set_defaults(func=cmd_run)
    va = verbs.add_parser("validate", help="lift vs random and popularity, precision vs planted segment")
    add_common(va, DEFAULT_CONFIG)
    va.add_argument("--as-of", type=_date, default=None, metavar="YYYY-MM-DD",
                    help="the cutting date (default: the samples' cutting_date)")
    va.set_defaults(func=cmd_validate)
