"""The feature (JSD) strategy at scale: seconds for S seeds over a root's train-ready users.

    python benchmarks/jsd.py --root /tmp/scale-1m --seeds 1000 10000

Runs ``extend_jsd`` in process (it needs no Ray) on a root the pipeline has built, with seeds
drawn as the demo draws them (users who clicked the most clicked keyword before the cutting date),
extension 5x. Prints one JSON line per seed count: total seconds and each lap (reading features,
seed matching, feature weighting, ranking, plots).
"""

from __future__ import annotations

import argparse
import json
import time

from app.demo import pick_seeds
from app.extend.config import ExtendConfig
from app.extend.jsd import extend_jsd
from app.storage import Storage


class Laps:
    """``lap(name)``: seconds since the previous lap (or since creation) under ``name``."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.mark = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.mark, 2)
        self.mark = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    storage = Storage(args.root)
    pool = pick_seeds(storage, max(args.seeds))
    cfg = ExtendConfig(strategy="jsd", percentage=500)
    for n in args.seeds:
        lap = Laps()

        out = f"jobs/bench-jsd-{n}"  # top_features.csv and lookalike.png land here
        t0 = time.perf_counter()
        audience, report = extend_jsd(storage, pool[:n], cfg, out, lambda f, m: None, lap)
        seconds = time.perf_counter() - t0
        storage.delete(out)
        print(json.dumps({"seeds": n, "users": report["eligible_users"], "audience": audience.num_rows,
                          "seconds": round(seconds, 2), "laps": lap.laps,
                          "features": [f["feature"] for f in report["top_features"]][:5]}), flush=True)


if __name__ == "__main__":
    main()
