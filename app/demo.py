"""``python -m app demo``: the main job end to end on generated data under a local Ray.

generate -> data pipeline -> DIN training (Ray Train) -> evaluation gate -> score table (Ray Data
batch inference) -> a sample audience extension -> validation table. Every step is the same
function its own CLI verb calls; the demo only chains them and prints what each did.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from app.cli import add_common
from app.config import load_config
from app.console import get_console
from app.settings import get_settings
from app.storage import Storage


def _say(step: str, detail: str) -> None:
    get_console().step("demo", f"{step:<10} {detail}")


def pick_seeds(storage: Storage, n: int, seed: int = 0) -> list[str]:
    """A realistic seed list: users who clicked the most clicked keyword before the cutting date."""
    import pyarrow.compute as pc

    from app import constants as C

    stats = storage.read_json("samples/default/stats.json")
    logs = storage.read_table(C.T_LOGS, columns=[C.DID, C.IS_CLICK, C.KEYWORD, C.ACTION_TIME_SECONDS])
    clicks = logs.filter(pc.and_(pc.equal(logs[C.IS_CLICK], 1),
                                 pc.less(logs[C.ACTION_TIME_SECONDS], stats["cutting_seconds"])))
    counts = pc.value_counts(clicks[C.KEYWORD])
    top = counts.field("values")[int(np.argmax(counts.field("counts").to_numpy()))].as_py()
    dids = np.unique(clicks.filter(pc.equal(clicks[C.KEYWORD], top))[C.DID].to_numpy(zero_copy_only=False))
    rng = np.random.default_rng(seed)
    _say("seeds", f"{min(n, len(dids))} users who clicked '{top}' before {stats['cutting_date']}")
    return rng.choice(dids, size=min(n, len(dids)), replace=False).tolist()


def run_demo(root: str, users: int, smoke: bool) -> dict[str, Any]:
    from app.data.config import DataConfig
    from app.data.pipeline import run_pipeline
    from app.data.synthetic import GenerateConfig, generate
    from app.extend.config import ExtendConfig
    from app.extend.engine import extend_audience
    from app.extend.scores import generate_score_table
    from app.extend.validate import run_validation, summary_table
    from app.ray_utils import init_ray
    from app.train.config import TrainConfig
    from app.train.run import run as train_run

    started = time.perf_counter()
    storage = Storage(root)
    pre = "configs/smoke/" if smoke else "configs/"
    gcfg = load_config(GenerateConfig, f"{pre}generate.yaml", [f"users={users}"])
    gen = generate(gcfg, storage)
    _say("generate", f"{gen['users']} users x {gen['days']} days: {gen['rows']['showlog']} shows, "
                     f"{gen['rows']['clicklog']} clicks (with injected dirt) under {root}/raw")
    init_ray()
    data = run_pipeline(load_config(DataConfig, f"{pre}data.yaml"), storage)
    q = {k: v["quarantined_total"] for k, v in data["clean"].items()}
    _say("pipeline", f"{data['seconds']} s; quarantined {q}; {data['trainready']['users']} users train-ready; "
                     f"samples train {data['samples']['train']} / test {data['samples']['test']}")
    tcfg = load_config(TrainConfig, "configs/smoke/train_din.yaml" if smoke else "configs/train/din.yaml")
    trained = train_run(tcfg, storage)
    models = trained["metrics"]["models"]
    aucs = ", ".join(f"{k} {v['auc']:.3f}" for k, v in models.items() if v.get("auc") is not None)
    _say("train", f"DIN {trained['version']} test AUC: {aucs}")
    gate = trained["gate"]
    _say("gate", f"{'promoted' if gate['promote'] else 'kept the current model; refused'} {trained['version']} "
                 f"({gate['reason']})")
    ecfg = load_config(ExtendConfig, f"{pre}extend.yaml")
    scores = generate_score_table(storage, ecfg.scores)
    _say("scores", f"score table {scores['version']}: {scores['num_users']} users, {scores['users_per_s']} users/s")
    seeds = pick_seeds(storage, 200)
    report = extend_audience(storage, seeds, ecfg, "jobs/demo")
    clusters = report.get("clusters", {})
    _say("extend", f"seeds {report['seeds']} -> audience of {report['audience_size']} in {root}/jobs/demo "
                   f"({clusters.get('k')} seed cluster(s), silhouette {_num(clusters.get('silhouette'))})")
    val = run_validation(storage, ecfg.model_copy(update={"validation": ecfg.validation.model_copy(
        update={"seed_sizes": [100], "extension_factors": [1, 5]})}))
    _say("validate", f"lift over a random audience, as of {val['cutting_date']} (every figure: "
                     f"{storage.uri(val['files'][1])})")
    get_console().print(summary_table(val["rows"]).rstrip())
    for verdict in val["verdicts"]:
        get_console().print(f"  {verdict}")
    return {
        "root": root,
        "seconds": round(time.perf_counter() - started, 1),
        "model_version": trained["version"],
        "audience": storage.uri("jobs/demo/audience.csv"),
        "validation": storage.uri(val["files"][0]),
    }


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    return run_demo(get_settings(args.root).root, args.users or (2000 if args.smoke else 10000), args.smoke)


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job end to end on generated data (local Ray)")
    add_common(p, None)
    p.add_argument("--users", type=int, default=None, help="synthetic users (default 10000; 2000 with --smoke)")
    p.set_defaults(func=cmd_demo)
