"""Request and response models of the HTTP API (also what the OpenAPI docs show).

Field names follow the seed (``job-id``, ``status``, ``url``); everything else is snake_case.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.serve.errors import InvalidRequestBody
from app.serve.uploads import DID_RE

STRATEGIES = ("din", "jsd")
OPTION_FIELDS = ("size", "percentage", "strategy", "top_n")


class ExtendOptions(BaseModel):
    """Optional form fields of ``POST /lookalike/extend-audience`` (beside the seed files)."""

    model_config = ConfigDict(extra="forbid")

    size: int | None = Field(None, ge=1, description="audience size M (non-seed users returned)")
    percentage: float | None = Field(
        None, gt=0, description="audience size as a percentage of the seed count (200 = 2x seeds)"
    )
    strategy: Literal["din", "jsd"] | None = Field(None, description="similarity strategy")
    top_n: int | None = Field(None, ge=1, le=10_000, description="similarities averaged per user")

    @model_validator(mode="after")
    def _one_size(self):
        if self.size is not None and self.percentage is not None:
            raise ValueError("give size or percentage, not both")
        return self

    def check_limits(self, max_size: int, max_percentage: float) -> None:
        if self.size is not None and self.size > max_size:
            raise ValueError(f"size {self.size} is above the service limit {max_size}")
        if self.percentage is not None and self.percentage > max_percentage:
            raise ValueError(f"percentage {self.percentage} is above the service limit {max_percentage}")


class JobAccepted(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    job_id: str = Field(alias="job-id")
    status: Literal["Queued"] = "Queued"
    seeds: int = Field(description="distinct seeds read from the upload")
    duplicates: int = 0
    url: str = Field(description="where to poll the status")


class JobStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    job_id: str = Field(alias="job-id")
    status: Literal["Queued", "Running", "Finished", "Failed"]
    progress: float = 0.0
    message: str | None = None
    attempts: int = 0
    created_at: float
    updated_at: float
    heartbeat_at: float | None = Field(None, description="last sign of life of the running attempt (Running)")
    url: str | None = Field(None, description="the audience CSV (Finished only)")
    counts: dict[str, Any] | None = Field(None, description="the engine's report counts (Finished)")
    error: str | None = Field(None, description="why the job failed (Failed only)")

    @classmethod
    def from_status(cls, s: dict[str, Any]) -> JobStatus:
        return cls.model_validate(
            {
                "job-id": s["job_id"],
                "status": s["state"],
                **{k: s.get(k) for k in ("message", "url", "counts", "error", "heartbeat_at") if s.get(k) is not None},
                "progress": s.get("progress", 0.0),
                "attempts": s.get("attempts", 0),
                "created_at": s["created_at"],
                "updated_at": s["updated_at"],
            }
        )


class JobList(BaseModel):
    jobs: list[JobStatus]
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= for the next (older) page; null on the last page")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dids: list[str] = Field(min_length=1, description="users to score")
    keywords: list[str] | None = Field(None, description="keywords to return; default all")

    @model_validator(mode="after")
    def _dids(self):
        for i, did in enumerate(self.dids):
            if not DID_RE.match(did):
                raise ValueError(f"dids[{i}] = {did[:40]!r} is not a did (1-128 letters, digits or _.:@-)")
        return self


def validation_message(exc: ValidationError) -> str:
    """Where and what, for each error; never the offending input itself (pydantic's ``input``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)[:2000]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_score_body(body: bytes) -> ScoreRequest:
    """``POST /score``'s body; InvalidRequestBody (422) for anything but a valid request, NaN and
    Infinity included (they are not JSON)."""
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequestBody(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # bad encoding, NaN/Infinity, nesting too deep
        raise InvalidRequestBody(f"the body is not valid JSON ({str(exc)[:100] or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise InvalidRequestBody(f"the body must be a JSON object with 'dids', not a {type(data).__name__}")
    try:
        return ScoreRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestBody(validation_message(exc)) from None


class ScoreResponse(BaseModel):
    model_version: str
    keywords: list[str]
    dids: list[str] = Field(description="scored dids, in request order (unknown ones left out)")
    scores: list[list[float]] = Field(description="one row per scored did, one column per keyword")
    unknown: list[str] = Field(description="dids without history (not scored)")
    source: Literal["score_table", "din"] = Field(
        description="score_table: the current model's precomputed scores; din: computed now by the model"
    )


class Health(BaseModel):
    status: Literal["ok", "starting", "unavailable"] = Field(
        description="ok: the queue and the cluster answer; starting: not yet; unavailable: one of them is gone"
    )
    version: str
    checks: dict[str, str] = Field(description="each check: 'ok' or why not")
