"""Pytest-session fixture: smoke-size synthetic data generated and run through the whole pipeline once."""

import pytest

from app.config import load_config


@pytest.fixture(scope="session")
def generated_root(ray_local, tmp_path_factory) -> str:
    from app.data.config import DataConfig
    from app.data.pipeline import run_pipeline
    from app.data.synthetic import GenerateConfig, generate
    from app.storage import Storage

    root = str(tmp_path_factory.mktemp("lookalike") / "root")
    storage = Storage(root)
    generate(load_config(GenerateConfig, "configs/smoke/generate.yaml"), storage)
    run_pipeline(load_config(DataConfig, "configs/smoke/data.yaml"), storage)
    return root
