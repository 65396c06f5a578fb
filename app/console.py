"""What a person sees on the terminal: the command's own step lines and progress bars.

Ray, Ray Data, Ray Train and TensorFlow write hundreds of lines to stdout/stderr (worker logs
streamed to the driver, per-dataset progress logs, CUDA probes, oneDNN notices), much of it from
C++ code and child processes that Python logging never sees. A command run through
:func:`quiet_console` therefore points the process's file descriptors 1 and 2 at a log file under
the storage root, so everything (including what Ray's own processes inherit) lands there, and keeps
a duplicate of the terminal for this module's :class:`Console`: step lines, progress bars, the
JSON summary and errors in full. ``--verbose`` skips the redirection and shows everything.

Code that reports progress calls :func:`get_console` and never needs to know which mode is on:
outside the CLI (tests, notebooks) the console is plain ``sys.stdout`` with bars off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Progress:
    """A progress bar on an interactive terminal (tqdm), silent elsewhere.

    ``total=None`` shows elapsed seconds only; :meth:`set` moves the bar to an absolute count and
    ``note`` adds text after it. A background thread refreshes the elapsed time once a second so
    a long step whose count does not move still shows that it is alive.
    """

    def __init__(self, stream: IO[str], desc: str, total: int | None, unit: str, enabled: bool):
        self._bar = None
        self._stop = threading.Event()
        if not enabled:
            return
        from tqdm import tqdm

        fmt = None if total else "{desc}: {elapsed} {postfix}"
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True,
                         bar_format=fmt, mininterval=0.5)
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            if self._bar is not None:
                self._bar.refresh()

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set(self, done: int, total: int | None = None, note: str | None = None) -> None:
        if self._bar is None:
            return
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.n = done
        if note is not None:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Console:
    """The command's own output: ``[tag] message`` step lines, progress bars, results."""

    def __init__(self, stream: IO[str] | None = None, log_path: str | None = None):
        self.stream = stream or sys.stdout
        self.log_path = log_path
        self._log = logging.getLogger("app.console")

    @property
    def interactive(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def print(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def step(self, tag: str, message: str) -> None:
        """One step line on the terminal; a copy goes to the log file, between Ray's lines."""
        self.print(f"[{tag}] {message}")
        if self.log_path:
            self._log.info("[%s] %s", tag, message)

    @contextlib.contextmanager
    def progress(self, desc: str, total: int | None = None, unit: str = "it") -> Iterator[Progress]:
        bar = Progress(self.stream, desc, total, unit, self.interactive)
        try:
            yield bar
        finally:
            bar.close()


_CONSOLE = Console()


def get_console() -> Console:
    return _CONSOLE


def log_file_path(root: str, command: str) -> str:
    """``<root>/logs/<command>-<UTC time>-<pid>.log`` for a local root; a URI root's driver logs
    stay on this machine, in ``lookalike-logs`` under the system's temporary directory."""
    import tempfile

    from app.settings import is_uri

    folder = os.path.join(tempfile.gettempdir(), "lookalike-logs") if is_uri(root) else os.path.join(root, "logs")
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return os.path.join(folder, f"{command}-{stamp}-{os.getpid()}.log")


def _quiet_environment() -> None:
    """Settings that cut noise at the source, so the log file stays readable too."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


@contextlib.contextmanager
def quiet_console(log_path: str, verbose: bool = False) -> Iterator[Console]:
    """Run a command with its own lines on the terminal and everything else in ``log_path``.

    File descriptors 1 and 2 point at the log file for the duration (child processes such as
    Ray's raylet inherit them); the terminal stays reachable through a duplicate of fd 1 that
    only the :class:`Console` writes to. A Ray the command started is shut down before the
    descriptors are restored, so its exit messages land in the log too. With ``verbose`` nothing is redirected: Python
    logging goes to the terminal at INFO and the console writes to stdout as usual.
    """
    global _CONSOLE
    _quiet_environment()
    if verbose:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        previous, _CONSOLE = _CONSOLE, Console(sys.stdout)
        try:
            yield _CONSOLE
        finally:
            _CONSOLE = previous
        return

    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Python-level streams too, for hosts that replaced them (pytest's capture, notebooks)
    saved_streams = sys.stdout, sys.stderr
    log_stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed in the finally below
    sys.stdout = sys.stderr = log_stream
    root_logger = logging.getLogger()
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root_logger.addHandler(handler)
    old_level = root_logger.level
    root_logger.setLevel(logging.INFO)
    previous, _CONSOLE = _CONSOLE, Console(terminal, log_path)
    ray_before = _ray_running()
    try:
        yield _CONSOLE
    finally:
        if not ray_before:
            _shutdown_ray()  # the command's own Ray: its exit messages go to the log as well
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        sys.stdout, sys.stderr = saved_streams
        log_stream.close()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _CONSOLE = previous
        terminal.close()


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _shutdown_ray() -> None:
    if _ray_running():
        with contextlib.suppress(Exception):
            sys.modules["ray"].shutdown()


def describe(obj: Any) -> str:
    """``Type: message`` of an exception, for one-line error reports."""
    return f"{type(obj).__name__}: {obj}"
