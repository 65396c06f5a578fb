"""The console: step lines on the terminal, everything else in the log file, bars only on a TTY."""

from __future__ import annotations

import io
import logging
import os

import pytest

from app.cli import main
from app.console import Console, get_console, log_file_path, quiet_console


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_step_lines_and_no_bar_off_a_terminal():
    out = io.StringIO()
    console = Console(out)
    console.step("demo", "pipeline   4.1 s")
    with console.progress("clean_block", total=3) as bar:
        bar.update(3)
    assert out.getvalue() == "[demo] pipeline   4.1 s\n"


def test_bar_drawn_on_a_terminal():
    term = FakeTerminal()
    console = Console(term)
    with console.progress("clean_block", total=4, unit="task") as bar:
        bar.update(2)
        bar.set(4, note="epoch 2/2")
    text = term.getvalue()
    assert "clean_block" in text and "4/4" in text and "epoch 2/2" in text


def test_quiet_console_sends_fd_output_to_the_log(tmp_path, capfd):
    """Output written below Python (fd 1 and 2, as TensorFlow's C++ logs and Ray's processes do)
    and Python logging land in the file; only the console's own lines reach the terminal."""
    log = tmp_path / "run.log"
    with quiet_console(str(log)) as console:
        os.write(1, b"raw fd1 noise\n")
        os.write(2, b"raw fd2 noise\n")
        print("a print from a library")
        logging.getLogger("some.library").info("Starting execution of Dataset")
        console.step("demo", "train done")
        assert get_console() is console
    out, err = capfd.readouterr()
    assert out == "[demo] train done\n" and err == ""
    text = log.read_text()
    for needle in ("raw fd1 noise", "raw fd2 noise", "a print from a library", "Starting execution", "[demo] train done"):
        assert needle in text
    os.write(1, b"after\n")  # descriptors restored
    assert capfd.readouterr().out == "after\n"
    assert get_console() is not console


def test_verbose_console_writes_to_stdout(tmp_path, capsys):
    with quiet_console(str(tmp_path / "v.log"), verbose=True) as console:
        console.step("demo", "x")
        print("library output")
    assert capsys.readouterr().out == "[demo] x\nlibrary output\n"
    assert not (tmp_path / "v.log").exists()


def test_log_file_under_a_local_root(tmp_path):
    path = log_file_path(str(tmp_path), "data-run")
    assert os.path.dirname(path) == str(tmp_path / "logs") and os.path.basename(path).startswith("data-run-")


def test_cli_error_reaches_the_terminal_with_the_log_path(tmp_path, capfd, monkeypatch):
    """A caller's mistake: exit 2, the error named on the terminal, the log path beside it."""
    monkeypatch.chdir(tmp_path)
    code = main(["train", "run", "--smoke", "--root", "r"])
    out, err = capfd.readouterr()
    assert code == 2
    assert "error: SchemaError: no samples at" in out and str(tmp_path / "r") in out
    assert out.strip().splitlines()[-1].startswith(f"log: {tmp_path / 'r' / 'logs'}")


@pytest.mark.parametrize("argv", [["demo", "--help"], ["data", "run", "--help"]])
def test_every_command_takes_verbose(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "--verbose" in capsys.readouterr().out
