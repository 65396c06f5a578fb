"""One local Ray per integration-test session (small: 2 CPUs, 256 MiB object store)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from app.ray_utils import init_ray

    init_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()
