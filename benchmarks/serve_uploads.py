"""Memory of the ingress (and Serve's proxy) under big uploads and oversize bodies, on localhost.

Starts the service in-process on a free port (its own local Ray, a temporary root, the synthetic
scorer; jobs fail at once for want of a model, which is fine: the upload path is what is measured),
samples the resident memory (RSS) of the ingress replica and of the HTTP proxy every 20 ms, and
runs, one after another:

    uploads     --uploads parallel extend-audience uploads of --upload-mb MB each (64-hex dids),
                spread over --keys API keys (per_key.max_uploads is 2)
    oversize    one chunked --oversize-mb MB body to POST /noop without a key (the body guard
                must cut it at max_body_bytes)

and prints one JSON line per scenario (peak RSS above the idle baseline, seconds, status codes),
then a summary line. Only the builder args both the service and older versions of it know are
passed, so the same script measures a checkout of another version (PYTHONPATH=<its root>).

    python benchmarks/serve_uploads.py                  # 6 x 31 MB uploads, 600 MB oversize body
    python benchmarks/serve_uploads.py --smoke          # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import threading
import time
from typing import Any

import httpx
import psutil

KEYS = [f"bench-upload-key-{i:02d}" for i in range(16)]


def start_service(args: argparse.Namespace, root: str) -> str:
    from serve_load import run_local_service  # the sibling benchmark (run as a script from here)

    app_args = {"root": root, "api_keys": {k: f"owner{i}" for i, k in enumerate(KEYS)},
                "scorer_loader": "app.serve.scoring:synthetic_scorer",
                "max_upload_bytes": args.max_upload_mb * 1024 * 1024}
    return run_local_service(app_args)


def find_process(fragment: str) -> psutil.Process:
    """A Ray process of this script's own cluster whose title contains ``fragment``."""
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if fragment in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    raise LookupError(fragment)


class PeakRSS:
    """Samples the RSS of some processes in a thread; ``peaks`` in MiB."""

    def __init__(self, procs: dict[str, psutil.Process], every_s: float = 0.02):
        self.procs, self.every_s = procs, every_s
        self.peaks = {name: 0.0 for name in procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, p in self.procs.items():
                try:
                    self.peaks[name] = max(self.peaks[name], p.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def rss(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: round(p.memory_info().rss / 2**20, 1) for name, p in procs.items()}


def seed_body(megabytes: float) -> bytes:
    lines = int(megabytes * 1e6 / 65)
    return ("\n".join(secrets.token_hex(32) for _ in range(lines)) + "\n").encode()


async def uploads(url: str, body: bytes, n: int, keys: int, timeout: float) -> list[tuple[int, float]]:
    async def one(i: int) -> tuple[int, float]:
        t0 = time.perf_counter()
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.post(f"{url}/lookalike/extend-audience", headers={"X-API-Key": KEYS[i % keys]},
                                  files=[("seeds", ("seeds.txt", body, "text/plain"))], data={"size": "100"})
        return r.status_code, time.perf_counter() - t0

    return await asyncio.gather(*(one(i) for i in range(n)))


def oversize(url: str, megabytes: int) -> tuple[int | str, float]:
    chunk = b"y" * (1 << 20)

    def gen():
        for _ in range(megabytes):
            yield chunk

    t0 = time.perf_counter()
    try:
        r = httpx.post(f"{url}/noop", content=gen(), timeout=120)
        code: int | str = r.status_code
    except httpx.HTTPError as exc:
        code = type(exc).__name__
    return code, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uploads", type=int, default=6)
    p.add_argument("--upload-mb", type=float, default=31.0)
    p.add_argument("--keys", type=int, default=3, help="API keys the uploads are spread over")
    p.add_argument("--max-upload-mb", type=int, default=32)
    p.add_argument("--oversize-mb", type=int, default=600)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--smoke", action="store_true", help="2 uploads of 2 MB, a 50 MB oversize body")
    args = p.parse_args(argv)
    if args.smoke:
        args.uploads, args.upload_mb, args.keys, args.oversize_mb = 2, 2.0, 1, 50
    root = tempfile.mkdtemp(prefix="serve_uploads_")
    body = seed_body(args.upload_mb)
    url = start_service(args, root)
    from ray import serve

    out = []
    try:
        procs = {"ingress": find_process("ServeReplica:lookalike:Ingress"), "proxy": find_process("ProxyActor")}
        time.sleep(2.0)
        base = rss(procs)
        with PeakRSS(procs) as peak:
            t0 = time.perf_counter()
            results = asyncio.run(uploads(url, body, args.uploads, args.keys, args.timeout))
            wall = time.perf_counter() - t0
        codes: dict[str, int] = {}
        for code, _ in results:
            codes[str(code)] = codes.get(str(code), 0) + 1
        out.append({"bench": "serve_uploads", "scenario": "uploads", "uploads": args.uploads,
                    "upload_mb": round(len(body) / 1e6, 1), "keys": args.keys, "codes": codes,
                    "wall_s": round(wall, 2), "max_upload_s": round(max(s for _, s in results), 2),
                    "baseline_mib": base, "peak_mib": {k: round(v, 1) for k, v in peak.peaks.items()},
                    "peak_over_baseline_mib": {k: round(peak.peaks[k] - base[k], 1) for k in base}})
        print(json.dumps(out[-1]), flush=True)
        time.sleep(2.0)
        base = rss(procs)
        with PeakRSS(procs) as peak:
            code, seconds = oversize(url, args.oversize_mb)
        out.append({"bench": "serve_uploads", "scenario": "oversize", "body_mb": args.oversize_mb,
                    "answer": code, "seconds": round(seconds, 2), "baseline_mib": base,
                    "peak_mib": {k: round(v, 1) for k, v in peak.peaks.items()},
                    "peak_over_baseline_mib": {k: round(peak.peaks[k] - base[k], 1) for k in base}})
        print(json.dumps(out[-1]), flush=True)
    finally:
        serve.shutdown()
    print(json.dumps({"bench": "serve_uploads", "summary": {
        r["scenario"]: {"peak_over_baseline_mib": r["peak_over_baseline_mib"],
                        "answers": r.get("codes", r.get("answer"))} for r in out}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
