"""The service's own refusals, each a subclass of one of the project's errors (app/errors.py).

The HTTP layer (:func:`app.serve.http.error_status`) maps every one of them to a status code and,
where a retry can succeed, a ``Retry-After`` header. Messages name things in the service's terms
(job ids, owners, limits), never a path.
"""

from __future__ import annotations

from app.errors import ConfigError, JobNotFound, LookalikeError, SeedError


class InvalidJobId(JobNotFound):
    """A job id that is not 32 lowercase hex characters (never turned into a path). HTTP 400."""


class InvalidCursor(LookalikeError):
    """A ``GET /lookalike/jobs`` cursor that is not one a previous page returned. HTTP 400."""


class InvalidTransition(LookalikeError):
    """A status change the state machine does not allow (e.g. out of Finished)."""


class UnreadableJobRecord(LookalikeError):
    """A job file (status.json, request.json) that is not valid JSON of the expected shape.

    The job is reported as Failed ("unreadable status"); other jobs are never affected.
    """


class UploadTooLarge(SeedError):
    """A request body over the route's byte limit (HTTP 413).

    ``guard`` says which check answered: ``declared`` (Content-Length, before any byte was read)
    or ``streamed`` (counted while the body arrived, chunked bodies included).
    """

    def __init__(self, message: str, guard: str):
        super().__init__(message)
        self.guard = guard


class BodyTooSlow(SeedError):
    """A request body that arrives slower than the configured minimum rate (HTTP 408)."""


class InvalidRequestBody(ConfigError):
    """A JSON body that does not parse or does not match the request model (HTTP 422)."""


class Unauthorized(LookalikeError):
    """No API key, or one the service does not know (HTTP 401)."""


class Busy(LookalikeError):
    """A limit that frees up by itself: per-key uploads or queued jobs (429), the replica's
    parsing slots (503). ``retry_after_s`` goes out as ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: float, status: int = 429):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status


class QueueUnavailable(LookalikeError):
    """The job queue did not answer in time, or is gone (HTTP 503 with ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s
