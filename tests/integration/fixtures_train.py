"""Pytest-session fixtures for the train integration tests (see conftest.py).

``trained_root``: a storage root with samples and one DIN version trained by 2 CPU workers,
exported, evaluated and made current by the gate. It builds on ``generated_root`` (the smoke data
through the whole pipeline). ``LOOKALIKE_TRAIN_TEST_DATA=planted`` uses small planted TFRecord
samples instead (no pipeline), to test training alone.
"""

import os

import pytest

from app.config import load_config

SMOKE_TRAIN = "configs/smoke/train_din.yaml"


def train_test_config(overrides=None):
    from app.train.config import TrainConfig

    return load_config(TrainConfig, SMOKE_TRAIN, overrides)


@pytest.fixture(scope="session")
def train_samples_root(ray_local, request, tmp_path_factory) -> str:
    if os.environ.get("LOOKALIKE_TRAIN_TEST_DATA") == "planted":
        from app.storage import Storage
        from app.train.planted import write_planted_run

        root = str(tmp_path_factory.mktemp("train") / "root")
        write_planted_run(Storage(root), n_users=3000, hist_len=8, samples_per_user=10)
        return root
    return request.getfixturevalue("generated_root")


@pytest.fixture(scope="session")
def trained_run(train_samples_root) -> dict:
    from app.storage import Storage
    from app.train.run import run

    summary = run(train_test_config(), Storage(train_samples_root))
    return {"root": train_samples_root, "summary": summary}


@pytest.fixture(scope="session")
def trained_root(trained_run) -> str:
    return trained_run["root"]
