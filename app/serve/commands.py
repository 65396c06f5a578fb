"""``python -m app serve start|prune [-c configs/serve.yaml] [--set k=v] [--root R] [--smoke]``.

``start`` reads the ``args`` of the Serve config file's first application (the same file
``serve run`` takes), starts Ray and the application, and serves until SIGTERM or SIGINT, then
shuts Serve down. ``prune`` applies the config's retention policy to the root's jobs once (the
running service does it every ``retention.prune_interval_s``) and prints what it deleted.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from app.config import apply_overrides, read_yaml
from app.errors import ConfigError

DEFAULT_CONFIG = "configs/serve.yaml"
SMOKE_CONFIG = "configs/smoke/serve.yaml"
APP_NAME = "lookalike"


def app_args(path: str, overrides: list[str] | None = None, root: str | None = None) -> dict[str, Any]:
    """The builder args of a Serve config file (or of a plain args file), with overrides."""
    data = read_yaml(path)
    if "applications" in data:
        apps = data["applications"] or []
        if not apps:
            raise ConfigError(f"{path!r} lists no applications")
        data = apps[0].get("args") or {}
    args = apply_overrides(data, overrides)
    if root:
        args["root"] = root
    return args


def start(ns: argparse.Namespace, stop: threading.Event | None = None) -> dict[str, Any]:
    from ray import serve

    from app.ray_utils import init_ray
    from app.serve.app import build_app, resolve_config
    from app.serve.config import describe_keys, resolve_api_keys

    path = ns.config or (SMOKE_CONFIG if ns.smoke else DEFAULT_CONFIG)
    args = app_args(path, ns.overrides, ns.root)
    cfg = resolve_config(args)
    keys = resolve_api_keys(cfg)  # fail before starting Ray
    print(f"lookalike service: {describe_keys(keys)}", flush=True)
    init_ray()
    stop = stop or threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": cfg.host, "port": cfg.port},
                logging_config={"enable_access_log": cfg.access_log})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{cfg.host}:{cfg.port}"
    from app.console import get_console

    get_console().step("serve", f"lookalike service at {url} (docs: {url}/docs); SIGTERM or Ctrl-C stops it")
    while not stop.wait(1.0):
        pass
    serve.shutdown()
    return {"stopped": url, "root": cfg.root}


def prune(ns: argparse.Namespace) -> dict[str, Any]:
    from app.serve.app import resolve_config
    from app.serve.jobs import JobStore
    from app.storage import Storage

    path = ns.config or (SMOKE_CONFIG if ns.smoke else DEFAULT_CONFIG)
    cfg = resolve_config(app_args(path, ns.overrides, ns.root))
    r = cfg.retention
    store = JobStore(Storage(cfg.root))
    counts = store.prune(r.seeds_after_s, r.jobs_after_s, r.incomplete_after_s)
    return {**counts, "index": store.sync_index(),
            "retention": r.model_dump(exclude={"prune_interval_s"})}


def register(subparsers: Any) -> None:
    from app.cli import add_common

    p = subparsers.add_parser("serve", help="the HTTP service (Ray Serve)")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("start", help="start the service and serve until SIGTERM/SIGINT")
    add_common(s, config=None)
    s.set_defaults(func=start)
    p2 = verbs.add_parser("prune", help="delete what the retention policy allows (seeds, old jobs) once")
    add_common(p2, config=None)
    p2.set_defaults(func=prune)
