"""One local Ray per pytest run of the integration tests (small: 2 CPUs, 256 MiB object store)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from app.ray_utils import init_ray

    init_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()


# Each area keeps its shared fixtures in its own module; later areas build on earlier ones:
# generated_root (data) -> trained_root (train) -> scored_root (extend) -> serve fixtures.
from tests.integration.fixtures_data import *  # noqa: E402,F401,F403
from tests.integration.fixtures_extend import *  # noqa: E402,F401,F403
from tests.integration.fixtures_serve import *  # noqa: E402,F401,F403
from tests.integration.fixtures_train import *  # noqa: E402,F401,F403
