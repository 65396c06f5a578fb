"""Running an offline job's work as Ray tasks.

Every job has the same shape: the driver plans small work items (a byte range of an input file,
a block of users), one Ray task per item does the work and writes its own part file, and returns a
few counters. Plain ``ray.remote`` tasks are enough here (no pipeline of operators), and the same
code runs on a local Ray, on ``ray up`` workers and under ``ray job submit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def ensure_ray() -> None:
    """Join ``$RAY_ADDRESS`` or start the project's local Ray (no-op when already up)."""
    from app.ray_utils import init_ray

    init_ray()


def run_tasks(fn: Callable[..., Any], items: Sequence[Any], *args: Any, desc: str | None = None,
              num_cpus: float = 1, **kwargs: Any) -> list[Any]:
    """``[fn(item, *args, **kwargs) for item in items]``, one Ray task per item, results in order.

    Large shared arguments (item factors, a matrix) should be ``ray.put`` refs: Ray resolves a ref
    passed as an argument, so every task gets the object from the object store, not a copy each.
    """
    import ray

    from app.console import get_console

    ensure_ray()
    remote = ray.remote(num_cpus=num_cpus)(fn)
    refs = [remote.remote(item, *args, **kwargs) for item in items]
    index = {ref: i for i, ref in enumerate(refs)}
    out: list[Any] = [None] * len(refs)
    pending = list(refs)
    with get_console().progress(desc or getattr(fn, "__name__", "tasks"), total=len(refs), unit="task") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                out[index[ref]] = ray.get(ref)
                bar.update(1)
    return out


def run_one(fn: Callable[..., Any], *args: Any, num_cpus: float = 1, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in one Ray task (a model fit that uses the task's threads)."""
    import ray

    ensure_ray()
    return ray.get(ray.remote(num_cpus=num_cpus)(fn).remote(*args, **kwargs))


def task_cpus(requested: int = 0) -> int:
    """Threads a task may use: ``requested``, else the CPUs Ray granted it, else 1."""
    if requested:
        return requested
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        return max(1, int(cpus))
    except Exception:  # noqa: BLE001 - outside a Ray task
        return 1
