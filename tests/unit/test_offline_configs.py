"""Every offline job's shipped configs validate, its function exists, and the CLI knows it; the
generator plants what its truth says."""

from __future__ import annotations

import numpy as np
import pytest

from app.cli import build_parser
from app.config import load_config
from app.errors import ConfigError
from app.offline import commands
from app.offline.generate import GenerateActionsConfig, day_actions, planted_bundles


@pytest.mark.parametrize("job", sorted(commands.JOBS))
def test_shipped_configs_validate_and_job_resolves(job):
    model_ref, fn_ref, _ = commands.JOBS[job]
    model = commands._load(model_ref)
    for path in commands.config_paths(job):
        load_config(model, path)
    assert callable(commands._load(fn_ref))
    args = build_parser().parse_args(["offline", job, "--smoke"])
    assert args.verb == job and callable(args.func)


def test_unknown_key_is_refused():
    model = commands._load(commands.JOBS["fpgrowth"][0])
    with pytest.raises(ConfigError, match="min_suport"):
        load_config(model, None, ["min_suport=0.1"])


def test_generator_plants_disjoint_bundles_inside_groups():
    cfg = GenerateActionsConfig(n_users=300, n_items=100, n_groups=5, bundles_per_group=3, bundle_size=3)
    b = planted_bundles(cfg)
    assert b.shape == (5, 3, 3)
    assert len(np.unique(b)) == b.size  # disjoint
    assert all((b[g] % 5 == g).all() for g in range(5))  # inside their group
    favourite = np.random.default_rng(0).integers(0, 5, cfg.n_users)
    a = day_actions(cfg, favourite, b, cfg.first_day, np.random.default_rng(0))
    adds = a["type"] == 1
    assert set(np.unique(a["type"])) == {1, 2, cfg.view_type}
    # most actions fall in the user's favourite group (focus 0.8, plus chance)
    assert np.mean(a["item"][~adds] % 5 == favourite[a["user"][~adds]]) > 0.75
    with pytest.raises(ValueError, match="cannot hold"):
        planted_bundles(GenerateActionsConfig(n_items=20, n_groups=5, bundles_per_group=3, bundle_size=3))
