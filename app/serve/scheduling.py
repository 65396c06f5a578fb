"""Which queued job runs next: fair across owners (API key owners), first-in-first-out within one.

Pure data structures (no Ray, no asyncio) so the rules have unit tests:

- :class:`FairQueue` hands out the oldest job of the owner *served least recently*. An owner with
  a backlog of 40 jobs and another with one job take turns; a new owner's first job goes next.
  So with ``W`` workers, another owner's backlog delays a job by at most the run time of the
  ``W`` jobs already running (one job's run time with one worker).
- :class:`RunTimes` keeps a running mean of job run times for ``Retry-After`` estimates.
"""

from __future__ import annotations

import itertools
from collections import deque


class FairQueue:
    """Job ids queued per owner; :meth:`pop` serves the least recently served owner first."""

    def __init__(self) -> None:
        self._jobs: dict[str, deque[str]] = {}
        self._last_served: dict[str, int] = {}
        self._tick = itertools.count(1)

    def __len__(self) -> int:
        return sum(len(q) for q in self._jobs.values())

    def __contains__(self, job_id: str) -> bool:
        return any(job_id in q for q in self._jobs.values())

    def count(self, owner: str) -> int:
        return len(self._jobs.get(owner, ()))

    def owners(self) -> dict[str, int]:
        return {owner: len(q) for owner, q in self._jobs.items()}

    def push(self, owner: str, job_id: str, front: bool = False) -> None:
        """Queue ``job_id`` behind the owner's others (``front``: ahead of them, for a retry)."""
        q = self._jobs.setdefault(owner, deque())
        if front:
            q.appendleft(job_id)
        else:
            q.append(job_id)

    def pop(self) -> tuple[str, str] | None:
        """(owner, job_id) of the next job, or None when nothing is queued."""
        if not self._jobs:
            return None
        owner = min(self._jobs, key=lambda o: self._last_served.get(o, 0))
        q = self._jobs[owner]
        job_id = q.popleft()
        if not q:
            del self._jobs[owner]
        self._last_served[owner] = next(self._tick)
        return owner, job_id

    def remove(self, job_id: str) -> bool:
        for owner, q in list(self._jobs.items()):
            if job_id in q:
                q.remove(job_id)
                if not q:
                    del self._jobs[owner]
                return True
        return False


class RunTimes:
    """Exponential moving mean of job run times (seconds); ``default`` until the first one."""

    def __init__(self, default: float, weight: float = 0.2):
        self.mean: float | None = None
        self.default, self.weight = default, weight

    def add(self, seconds: float) -> None:
        self.mean = seconds if self.mean is None else (1 - self.weight) * self.mean + self.weight * seconds

    def estimate(self) -> float:
        return self.default if self.mean is None else self.mean
