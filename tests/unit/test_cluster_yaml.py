"""ray_cluster.yaml passes Ray's own schema check (offline: fill defaults, then validate)."""

import yaml


def test_cluster_yaml_is_valid():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    with open("ray_cluster.yaml") as fh:
        config = yaml.safe_load(fh)
    config = fillout_defaults(config)
    validate_config(config)
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0")
