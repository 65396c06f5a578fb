"""DIN on Ray Train: a 2-worker CPU run beats popularity, the gate refuses a worse model, and a
killed worker resumes from the last checkpoint."""

import json
import os

import numpy as np
import pytest

from tests.integration.fixtures_train import train_test_config

pytestmark = pytest.mark.integration


def test_two_worker_run_beats_popularity_and_is_current(trained_run):
    from app.registry import Registry
    from app.storage import Storage
    from app.train.export import load_current_scorer

    storage, summary = Storage(trained_run["root"]), trained_run["summary"]
    models = summary["metrics"]["models"]
    assert summary["train"]["world_size"] == 2 and summary["train"]["epoch"] == 2
    assert models["din"]["auc"] > models["popularity"]["auc"] + 0.02, models
    assert models["din"]["auc"] > 0.6
    if "oracle" in models:
        assert models["oracle"]["auc"] >= models["din"]["auc"] - 0.02  # finite-sample noise
    assert summary["gate"]["promote"] is True
    version = summary["version"]
    assert Registry(storage).current_model("din")[0] == version
    for name in ("saved_model/saved_model.pb", "metrics.json", "config.yaml", "gate.json", "scorer.json"):
        assert storage.exists(f"models/din/{version}/{name}"), name
    stored = storage.read_json(f"models/din/{version}/metrics.json")
    assert stored["models"]["din"]["auc"] == pytest.approx(models["din"]["auc"])

    current, scorer = load_current_scorer(storage)
    assert current == version
    users = {
        "age": np.array([1, 2]),
        "gender": np.array([0, 1]),
        **{
            k: np.zeros((2, scorer.hist_len), np.int64)
            for k in ("hist_kwi", "hist_show_counts", "hist_click_counts")
        },
    }
    users["hist_kwi"][:, 0] = 1
    users["hist_kwi"][1, 1:3] = [2, 1]
    users["hist_show_counts"][1, :3] = [5, 1, 2]
    grid = scorer.score_all_keywords(users)
    assert grid.shape == (2, scorer.num_keywords - 1) and np.all((grid > 0) & (grid < 1))
    assert len(scorer.keywords) == scorer.num_keywords - 1
    # the score table's fast path (KeywordGrid) gives the serving signature's scores, row by row
    assert scorer.keyword_grid() is not None
    k = scorer.num_keywords - 1
    rows = {name: np.repeat(v, k, axis=0) for name, v in users.items()}
    rows["target_kwi"] = np.tile(np.arange(1, k + 1), 2)
    np.testing.assert_allclose(grid, scorer.score(rows).reshape(2, k), atol=1e-5)


def test_gate_refuses_a_worse_model(trained_run):
    from app.registry import Registry, new_version
    from app.storage import Storage
    from app.train.din import build_din
    from app.train.export import export_saved_model, model_dir, write_scorer_meta
    from app.train.input import read_stats
    from app.train.run import evaluate_and_gate

    storage, summary = Storage(trained_run["root"]), trained_run["summary"]
    cfg = train_test_config()
    stats = read_stats(storage, cfg.samples_run)
    version = new_version()
    rel = model_dir(cfg.name, version)
    untrained = build_din(int(stats["num_keywords"]), int(stats["hist_len"]), cfg.model)
    export_saved_model(untrained, storage.uri(rel, "saved_model"), int(stats["hist_len"]))
    write_scorer_meta(
        storage, rel, int(stats["hist_len"]), int(stats["num_keywords"]), stats.get("keywords", [])
    )

    worse = evaluate_and_gate(cfg, storage, version, stats)
    gate = worse["gate"]
    assert gate["promote"] is False
    assert gate["current_version"] == summary["version"]
    assert gate["current_auc"] == pytest.approx(summary["metrics"]["models"]["din"]["auc"], abs=1e-6)
    assert gate["new_auc"] < gate["current_auc"]
    registry = Registry(storage)
    assert registry.current_model("din")[0] == summary["version"]
    assert registry.read()["models"]["din"]["versions"][version]["gate"]["promote"] is False


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(train_samples_root):
    from app.registry import new_version
    from app.storage import Storage
    from app.train.driver import train_driver_fn
    from app.train.export import model_dir

    cfg = train_test_config(
        [
            "epochs=2",
            "max_steps_per_epoch=6",
            "validate_every_epoch=false",
            "max_failures=1",
            "fault_injection.kill_at_epoch=2",
            "fault_injection.rank=1",
        ]
    )
    version = new_version()
    result = train_driver_fn({**cfg.model_dump(mode="json"), "root": train_samples_root, "version": version})
    storage = Storage(train_samples_root)
    assert storage.exists(f"{model_dir('din', version)}/_fault_injected")  # the worker really was killed
    assert result["version"] == version and result["epoch"] == 2
    # the restarted group loaded the epoch-1 checkpoint instead of starting over
    assert result["resumed_from_epoch"] == 1
    with open(os.path.join(result["checkpoint_path"], "state.json")) as fh:
        assert json.load(fh)["epoch"] == 2
