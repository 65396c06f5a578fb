"""tf.data input: per-worker shards cover the split exactly once; labels and shapes."""

import numpy as np
import pytest

from app.errors import SchemaError
from app.train.input import load_arrays, make_dataset, read_stats, split_files, steps_per_epoch, worker_files
from app.train.planted import write_planted_run


@pytest.mark.parametrize(
    "n_files, world, want",
    [(4, 2, ([0, 2], [1, 3], False)), (1, 2, ([0], [0], True)), (3, 1, ([0, 1, 2], None, False))],
)
def test_worker_files(n_files, world, want):
    files = list(range(n_files))
    mine0, rec = worker_files(files, 0, world)
    assert mine0 == want[0] and rec is want[2]
    if world > 1:
        assert worker_files(files, 1, world)[0] == want[1]


def test_steps_per_epoch():
    assert steps_per_epoch(1000, 256) == 3 and steps_per_epoch(10, 256) == 1


@pytest.mark.parametrize("shards", [4, 1])
def test_workers_read_disjoint_shards_covering_the_split(storage, shards):
    stats = write_planted_run(storage, n_users=60, shards=shards, samples_per_user=5)
    files = split_files(storage, "default", "train")
    seen = []
    for rank in range(2):
        ds = make_dataset(
            files, 8, 32, rank=rank, world=2, with_label=False, keep=("did_index", "target_kwi")
        )
        seen.append(
            np.concatenate([np.stack([b["did_index"], b["target_kwi"]], 1) for b in ds.as_numpy_iterator()])
        )
    assert len(seen[0]) + len(seen[1]) == stats["train"]["rows"]
    assert abs(len(seen[0]) - len(seen[1])) <= stats["train"]["rows"] // 2


def test_batches_have_model_features_and_float_labels(storage):
    write_planted_run(storage, n_users=40, samples_per_user=3)
    ds = make_dataset(split_files(storage, "default", "test"), 8, 16, repeat=True)
    x, y = next(iter(ds))
    assert x["hist_kwi"].shape == (16, 8) and x["target_kwi"].shape == (16,)
    assert y.shape == (16, 1) and y.dtype.name == "float32"
    assert "label" not in x and "did_index" not in x
    arrays = load_arrays(split_files(storage, "default", "test"), 8)
    assert set(np.unique(arrays["label"])) <= {0, 1} and arrays["hist_kwi"].shape[1] == 8


def test_missing_samples_are_a_schema_error(storage):
    with pytest.raises(SchemaError, match="stats.json"):
        read_stats(storage, "nope")
    storage.write_json("samples/empty/stats.json", {"hist_len": 2})
    with pytest.raises(SchemaError, match="lacks"):
        read_stats(storage, "empty")
