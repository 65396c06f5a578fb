"""Config of DIN training (``configs/train/din.yaml``): model, optimisation, Ray Train, gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app.config import StrictModel


class DinModelConfig(StrictModel):
    """Hyperparameters of :func:`app.train.din.build_din` (docs/design.md, "Models")."""

    embedding_dim: int = Field(16, ge=2, le=512)
    attention_units: list[int] = Field(default_factory=lambda: [80, 40])
    attention_activation: Literal["sigmoid", "dice", "prelu", "relu"] = "sigmoid"
    attention_normalization: Literal["softmax", "none"] = "softmax"
    mlp_units: list[int] = Field(default_factory=lambda: [200, 80])
    activation: Literal["dice", "prelu"] = "dice"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: age / gender values are clipped into [0, vocab) before their embeddings
    age_vocab: int = Field(128, ge=1)
    gender_vocab: int = Field(8, ge=1)
    embedding_l2: float = Field(0.0, ge=0.0)

    @field_validator("attention_units", "mlp_units")
    @classmethod
    def _units(cls, v: list[int]) -> list[int]:
        if not v or any(u < 1 for u in v):
            raise ValueError(f"layer sizes must be a non-empty list of positive ints, got {v}")
        return v


class CheckpointSettings(StrictModel):
    #: a checkpoint is written every epoch; keep this many
    num_to_keep: int = Field(2, ge=1)


class EvaluationConfig(StrictModel):
    #: rows of the train split used to fit the logistic-regression baseline (a random sample)
    lr_max_rows: int = Field(300_000, ge=100)
    #: compare with the generator's true click probabilities when the root has them
    oracle: bool = True
    #: the new version must beat the current one's test AUC by more than this
    min_improvement: float = Field(0.0, ge=0.0)


class FaultInjection(StrictModel):
    """Test hook: SIGKILL the worker of ``rank`` at the start of ``kill_at_epoch`` of a fresh run."""

    kill_at_epoch: int | None = Field(None, ge=1)
    rank: int = Field(1, ge=0)


class TrainConfig(StrictModel):
    name: Literal["din"] = "din"
    samples_run: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$")
    model: DinModelConfig = DinModelConfig()
    epochs: int = Field(3, ge=1)
    #: examples per worker per step (the global batch is batch_size * num_workers)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    num_workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    use_gpu: bool = False
    #: mixed_float16 when training on GPU (ignored on CPU)
    mixed_precision: bool = True
    shuffle_buffer: int = Field(20_000, ge=0)
    #: cap on steps per epoch (quick runs, benchmarks); None = one pass over the train split
    max_steps_per_epoch: int | None = Field(None, ge=1)
    #: evaluate loss/AUC on the test split after every epoch (reported with the epoch metrics)
    validate_every_epoch: bool = True
    checkpoint: CheckpointSettings = CheckpointSettings()
    max_failures: int = Field(2, ge=0)
    evaluation: EvaluationConfig = EvaluationConfig()
    fault_injection: FaultInjection = FaultInjection()
    #: set by a Tune sweep: report each epoch to Tune (TuneReportCallback)
    report_to_tune: bool = False
    seed: int = 0
