"""TrainConfig: the shipped configs load; invalid ones are refused with the offending value."""

import pytest

from app.config import load_config, validate
from app.errors import ConfigError
from app.train.config import TrainConfig


@pytest.mark.parametrize("path", ["configs/train/din.yaml", "configs/smoke/train_din.yaml"])
def test_shipped_configs_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.name == "din" and cfg.epochs >= 1 and cfg.model.attention_units


def test_overrides_apply():
    cfg = load_config(
        TrainConfig, "configs/smoke/train_din.yaml", ["num_workers=1", "model.activation=prelu"]
    )
    assert cfg.num_workers == 1 and cfg.model.activation == "prelu"


@pytest.mark.parametrize(
    "data, where",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"learnin_rate": 0.1}, "learnin_rate"),  # typo: unknown key
        ({"model": {"mlp_units": []}}, "mlp_units"),
        ({"model": {"attention_units": [80, 0]}}, "attention_units"),
        ({"model": {"activation": "tanh"}}, "activation"),
        ({"samples_run": "../etc"}, "samples_run"),
        ({"name": "two_tower"}, "name"),
        ({"fault_injection": {"kill_at_epoch": 0}}, "kill_at_epoch"),
    ],
)
def test_invalid_configs_are_refused(data, where):
    with pytest.raises(ConfigError, match=where):
        validate(TrainConfig, data)


def test_workers_revalidate_the_driver_dict():
    from app.train.driver import split_config

    cfg, root, version = split_config({**TrainConfig().model_dump(), "root": "/tmp/x", "version": "v1"})
    assert (root, version, cfg.name) == ("/tmp/x", "v1", "din")
    with pytest.raises(ConfigError):
        split_config({"epochs": "many"})


def test_worker_group_larger_than_local_ray_is_refused(monkeypatch):
    import ray

    from app.errors import ConfigError
    from app.train.driver import check_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    check_resources(TrainConfig(num_workers=1, cpus_per_worker=2.0))
    check_resources(TrainConfig(num_workers=2, cpus_per_worker=1.0))
    with pytest.raises(ConfigError, match=r"needs 4 CPUs; this Ray has 2"):
        check_resources(TrainConfig(num_workers=2, cpus_per_worker=2.0))
