"""``python -m app serve start [-c configs/serve.yaml] [--set k=v] [--root R] [--smoke]``.

Reads the ``args`` of the Serve config file's first application (the same file ``serve run``
takes), starts Ray and the application, and serves until SIGTERM or SIGINT, then shuts Serve down.
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
    from app.serve.config import resolve_api_keys

    path = ns.config or (SMOKE_CONFIG if ns.smoke else DEFAULT_CONFIG)
    args = app_args(path, ns.overrides, ns.root)
    cfg = resolve_config(args)
    resolve_api_keys(cfg)  # fail before starting Ray
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


def register(subparsers: Any) -> None:
    from app.cli import add_common

    p = subparsers.add_parser("serve", help="the HTTP service (Ray Serve)")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("start", help="start the service and serve until SIGTERM/SIGINT")
    add_common(s, config=None)
    s.set_defaults(func=start)
