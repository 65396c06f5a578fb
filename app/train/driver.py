"""The Ray Train driver: one ``train_driver_fn(config)`` for single runs and for Tune.

``fit_trainer`` (used by ``train_driver_fn`` and by the CLI's ``app.train.run``) builds a
``TensorflowTrainer`` (Train V2) whose workers train DIN under
``MultiWorkerMirroredStrategy``, each reading its own TFRecord shards. Every epoch every worker
saves the weights (collective under the strategy: each to its own temp dir) and reports; rank 0
attaches its directory as the checkpoint. A restarted worker group (``FailureConfig``) resumes from
the latest checkpoint: weights, optimizer state and the epoch counter.

Config dict: a :class:`TrainConfig` dump plus optional ``root`` (storage root, default from
settings) and ``version`` (model version, default a new one). Ray Train writes its run directory
(checkpoints) to ``<root>/models/<name>/<version>/train``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from typing import Any

from app.config import validate
from app.errors import ConfigError
from app.registry import new_version
from app.settings import get_settings
from app.storage import Storage
from app.train.config import TrainConfig
from app.train.export import model_dir
from app.train.input import read_stats, split_files

log = logging.getLogger(__name__)
WEIGHTS = "weights"
STATE = "state.json"
RUN_NAME = "train"


def split_config(config: dict[str, Any]) -> tuple[TrainConfig, str, str]:
    """(validated TrainConfig, root, version) from a driver config dict."""
    data = dict(config)
    root = data.pop("root", None) or get_settings().root
    version = data.pop("version", None) or new_version()
    return validate(TrainConfig, data, source="train config"), root, version


# ------------------------------------------------------------------ worker side
def _maybe_kill(cfg: TrainConfig, storage: Storage, version: str, epoch: int, rank: int) -> None:
    """Fault-injection test hook: SIGKILL this worker once, halfway through ``kill_at_epoch``."""
    fi = cfg.fault_injection
    marker = f"{model_dir(cfg.name, version)}/_fault_injected"
    if fi.kill_at_epoch != epoch or fi.rank != rank or storage.exists(marker):
        return
    storage.write_text(marker, f"killed rank {rank} at epoch {epoch}\n")
    time.sleep(2.0)  # let the controller register the previous epoch's checkpoint
    os.kill(os.getpid(), signal.SIGKILL)


def _epoch_callbacks(cfg: TrainConfig, storage: Storage, version: str, epoch: int, rank: int, steps: int):
    import tensorflow as tf

    timing: dict[str, float] = {}
    progress = ProgressWriter(storage, version, cfg, steps) if rank == 0 else None

    class EpochHooks(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1:  # skip the first step (tracing / warm-up)
                timing["start"] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            timing["end"] = time.perf_counter()
            timing["steps"] = batch  # steps timed: batches 1..batch
            if progress is not None:
                progress.write(epoch, batch + 1)
            if batch == steps // 2:
                _maybe_kill(cfg, storage, version, epoch, rank)

    return [EpochHooks()], timing


class ProgressWriter:
    """Rank 0's position (epoch, step), written to ``<model dir>/_progress.json`` at most once a
    second: the driver's progress bar reads it (Ray Train sends nothing to the driver between
    checkpoints)."""

    def __init__(self, storage: Storage, version: str, cfg: TrainConfig, steps: int):
        self.storage, self.rel = storage, progress_path(cfg.name, version)
        self.epochs, self.steps = cfg.epochs, steps
        self.last = 0.0

    def write(self, epoch: int, step: int) -> None:
        now = time.monotonic()
        if now - self.last < 1.0 and step < self.steps:
            return
        self.last = now
        self.storage.write_json(self.rel, {"epoch": epoch, "epochs": self.epochs, "step": step, "steps": self.steps})


def progress_path(name: str, version: str) -> str:
    return f"{model_dir(name, version)}/_progress.json"


def _show_progress(storage: Storage, cfg: TrainConfig, version: str, stop: threading.Event) -> None:
    """Driver side: move the console's progress bar as rank 0 reports steps."""
    from app.console import get_console

    with get_console().progress("train", total=None, unit="step") as bar:
        while not stop.wait(1.0):
            try:
                p = storage.read_json(progress_path(cfg.name, version))
            except (OSError, ValueError):
                continue
            total = int(p["epochs"]) * int(p["steps"])
            done = (int(p["epoch"]) - 1) * int(p["steps"]) + int(p["step"])
            bar.set(done, total, note=f"epoch {p['epoch']}/{p['epochs']}")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import tensorflow as tf

    cfg, root, version = split_config(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, int(round(cfg.cpus_per_worker)))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    if cfg.use_gpu and cfg.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    tf.keras.utils.set_random_seed(cfg.seed)

    from app.train.din import build_din, compile_din
    from app.train.input import make_dataset, steps_per_epoch

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    storage = Storage(root)
    stats = read_stats(storage, cfg.samples_run)
    hist_len, num_keywords = int(stats["hist_len"]), int(stats["num_keywords"])
    global_batch = cfg.batch_size * world
    with strategy.scope():
        model = compile_din(build_din(num_keywords, hist_len, cfg.model), cfg.learning_rate)

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.load_weights(os.path.join(d, WEIGHTS))
            with open(os.path.join(d, STATE)) as fh:
                start_epoch = int(json.load(fh)["epoch"])
        log.info("rank %d resumed from the checkpoint of epoch %d", rank, start_epoch)

    train_ds = make_dataset(
        split_files(storage, cfg.samples_run, "train"),
        hist_len,
        global_batch,
        rank=rank,
        world=world,
        shuffle_buffer=cfg.shuffle_buffer,
        repeat=True,
        seed=cfg.seed,
    )
    steps = steps_per_epoch(int(stats["train"]["rows"]), global_batch)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    val: dict[str, Any] = {}
    if cfg.validate_every_epoch:
        val = {
            "validation_data": make_dataset(
                split_files(storage, cfg.samples_run, "test"),
                hist_len,
                global_batch,
                rank=rank,
                world=world,
                repeat=True,
            ),
            "validation_steps": steps_per_epoch(int(stats["test"]["rows"]), global_batch),
        }

    for epoch in range(start_epoch, cfg.epochs):
        callbacks, timing = _epoch_callbacks(cfg, storage, version, epoch + 1, rank, steps)
        history = model.fit(
            train_ds,
            epochs=epoch + 1,
            initial_epoch=epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=0,
            **val,
        )
        metrics: dict[str, Any] = {k: float(v[-1]) for k, v in history.history.items()}
        timed = timing.get("steps", 0)
        if timed and "start" in timing:
            metrics["examples_per_s"] = timed * global_batch / max(1e-9, timing["end"] - timing["start"])
        metrics.update(
            epoch=epoch + 1, resumed_from_epoch=start_epoch, world_size=world, global_batch=global_batch
        )
        with tempfile.TemporaryDirectory() as d:
            model.save_weights(os.path.join(d, WEIGHTS))  # collective: every worker saves
            with open(os.path.join(d, STATE), "w") as fh:
                json.dump({"epoch": epoch + 1, "metrics": metrics}, fh)
            ckpt = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
            ray.train.report(metrics, checkpoint=ckpt)


# ------------------------------------------------------------------ driver side
def build_trainer(cfg: TrainConfig, root: str, version: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    storage = Storage(root)
    callbacks = None
    if cfg.report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]
    return TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={**cfg.model_dump(mode="json"), "root": root, "version": version},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=storage.uri(model_dir(cfg.name, version)),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.num_to_keep),
            callbacks=callbacks,
        ),
    )


def check_resources(cfg: TrainConfig) -> None:
    """On a local Ray (no autoscaler), refuse a worker group that can never be placed, instead of
    letting Ray Train wait for it until its start timeout."""
    import ray

    if get_settings().ray_address:
        return  # a cluster may scale up to fit
    cpus = ray.cluster_resources().get("CPU", 0.0)
    need = cfg.num_workers * cfg.cpus_per_worker
    if need > cpus:
        raise ConfigError(
            f"num_workers={cfg.num_workers} x cpus_per_worker={cfg.cpus_per_worker} needs {need:g} CPUs; "
            f"this Ray has {cpus:g}. Lower them, e.g. --set num_workers=1 cpus_per_worker={max(1, int(cpus))}"
        )


def fit_trainer(config: dict[str, Any]):
    """Train DIN with Ray Train; returns the ``ray.train.Result`` (latest checkpoint, metrics)."""
    cfg, root, version = split_config(config)
    storage = Storage(root)
    read_stats(storage, cfg.samples_run)  # fail fast, before any worker starts
    split_files(storage, cfg.samples_run, "train")
    check_resources(cfg)
    log.info("training %s %s: %d worker(s), gpu=%s", cfg.name, version, cfg.num_workers, cfg.use_gpu)
    from app.console import get_console

    stop = threading.Event()
    watcher = threading.Thread(target=_show_progress, args=(storage, cfg, version, stop), daemon=True)
    if get_console().interactive:
        watcher.start()
    try:
        return build_trainer(cfg, root, version).fit()
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join(timeout=5)


def train_driver_fn(config: dict[str, Any]) -> dict[str, Any]:
    """The one driver function, for a single run and for a Tune trial (Ray must be initialised).

    Returns a JSON-able dict (Tune records a returned dict as the trial's last result): the last
    epoch's metrics plus ``version``, ``root`` and ``checkpoint_path`` (the latest checkpoint).
    In a sweep: ``Tuner(train_driver_fn, param_space={... "report_to_tune": True})`` so every epoch
    is reported to Tune as it happens.
    """
    _, root, version = split_config(config)
    result = fit_trainer({**config, "root": root, "version": version})
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    path = result.checkpoint.path if result.checkpoint else None
    return {**metrics, "version": version, "root": root, "checkpoint_path": path}
