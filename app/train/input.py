"""``tf.data`` input from the TFRecord samples: per-worker shards, batched parsing, prefetch.

The data pipeline writes ``<root>/samples/<run>/{train,test}/*.tfrecord[.gz]`` plus ``stats.json``.
Each Ray Train worker reads its own files (round-robin by rank); with fewer files than workers it
reads all of them and keeps every ``world``-th record. Collective ops need every worker to run the
same number of steps, so training datasets repeat forever and the caller fixes ``steps_per_epoch``
from the row counts in ``stats.json``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.data.tfrecord import make_parse_fn
from app.errors import SchemaError
from app.storage import Storage
from app.train.din import LABEL, MODEL_FEATURES

SPLITS = ("train", "test")


def samples_dir(run: str) -> str:
    return f"samples/{run}"


def read_stats(storage: Storage, run: str) -> dict[str, Any]:
    rel = f"{samples_dir(run)}/stats.json"
    if not storage.exists(rel):
        raise SchemaError(
            f"no samples at {storage.root!r}/{samples_dir(run)} (stats.json missing); run the pipeline first"
        )
    stats = storage.read_json(rel)
    for key in ("hist_len", "num_keywords", "train", "test"):
        if key not in stats:
            raise SchemaError(f"{rel} lacks {key!r}; it has {sorted(stats)}")
    return stats


def split_files(storage: Storage, run: str, split: str) -> list[str]:
    """Shard URIs of one split, sorted (``.tfrecord`` and ``.tfrecord.gz``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    paths = [
        p for p in storage.list_files(samples_dir(run), split) if p.endswith((".tfrecord", ".tfrecord.gz"))
    ]
    if not paths:
        raise SchemaError(f"no TFRecord files under {storage.root!r}/{samples_dir(run)}/{split}")
    prefix = storage.uri()
    return [prefix + p[len(storage.path()) :] for p in paths]


def worker_files(files: list[str], rank: int, world: int) -> tuple[list[str], bool]:
    """Files of one worker, and whether it must still shard by record (fewer files than workers)."""
    if world <= 1:
        return list(files), False
    if len(files) >= world:
        return files[rank::world], False
    return list(files), True


def _compression(files: list[str]) -> str:
    kinds = {f.endswith(".gz") for f in files}
    if len(kinds) > 1:
        raise SchemaError("a split mixes compressed and uncompressed TFRecord files")
    return "GZIP" if kinds.pop() else ""


def make_dataset(
    files: list[str],
    hist_len: int,
    batch_size: int,
    *,
    rank: int = 0,
    world: int = 1,
    shuffle_buffer: int = 0,
    repeat: bool = False,
    seed: int = 0,
    with_label: bool = True,
    keep: tuple[str, ...] = MODEL_FEATURES,
):
    """Batches of ``(features dict, label (B, 1) float32)`` (or features only) from TFRecord files."""
    import tensorflow as tf

    mine, record_shard = worker_files(files, rank, world)
    ds = tf.data.Dataset.from_tensor_slices(mine)
    if shuffle_buffer:
        ds = ds.shuffle(len(mine), seed=seed + rank, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=_compression(files)),
        cycle_length=min(4, len(mine)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle_buffer,
    )
    if record_shard:
        ds = ds.shard(world, rank)
    if repeat:
        ds = ds.repeat()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed + rank, reshuffle_each_iteration=True)
    parse = make_parse_fn(hist_len)

    def to_inputs(serialized):
        ex = parse(serialized)
        feats = {k: ex[k] for k in keep}
        if not with_label:
            return feats
        return feats, tf.cast(tf.reshape(ex[LABEL], [-1, 1]), tf.float32)

    ds = ds.batch(batch_size, drop_remainder=repeat).map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # sharding is done here by hand; tf.distribute must not shard again
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(rows: int, global_batch: int) -> int:
    """Steps that cover the split once (at least one)."""
    return max(1, math.floor(rows / global_batch))


def load_arrays(files: list[str], hist_len: int, batch_size: int = 65536) -> dict[str, np.ndarray]:
    """A whole split as NumPy arrays (every sample feature, label included) for evaluation."""
    from app.data.tfrecord import FEATURE_NAMES

    ds = make_dataset(files, hist_len, batch_size, with_label=False, keep=FEATURE_NAMES)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_NAMES}
    for batch in ds.as_numpy_iterator():
        for k in FEATURE_NAMES:
            parts[k].append(batch[k])
    return {
        k: (np.concatenate(v) if v else np.zeros((0, hist_len) if k.startswith("hist_") else (0,), np.int64))
        for k, v in parts.items()
    }
