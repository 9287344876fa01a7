"""The CLI exits with the status it chose even while a vitcop worker thread is inside torch.

Without :mod:`vitcop_cli.cli.process_exit`, a daemon thread running torch ops when the interpreter
finalises makes libtorch abort (``terminate called without an active exception``, status 134):
an interrupted ``batch`` reported -6 instead of 143 on CI.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from vitcop_cli.cli.process_exit import busy_workers, exit_process, status_of

_BUSY_THEN_EXIT = textwrap.dedent(
    """
    import sys, threading, time, torch
    from vitcop_cli.app import main

    started = threading.Event()

    def busy():
        x = torch.randn(300, 300)
        while True:
            x @ x
            torch.nn.functional.interpolate(x[None, None], size=(200, 200), mode="bicubic")
            started.set()

    threading.Thread(target=busy, name={name!r}, daemon=True).start()
    started.wait(30)
    sys.argv = ["vitcop", *{argv!r}]
    if {guarded!r}:
        main()
    else:
        from vitcop_cli.app import app
        app(prog_name="vitcop")
    """
)


def _run(name: str, argv: list[str], guarded: bool) -> subprocess.CompletedProcess:
    code = _BUSY_THEN_EXIT.format(name=name, argv=argv, guarded=guarded)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, status", [(["--version"], 0), (["presets", "--no-such-option"], 2)])
def test_the_chosen_status_survives_a_busy_worker_thread(argv, status):
    done = _run("vitcop-batch-prefetch", argv, guarded=True)
    assert done.returncode == status, done.stderr
    assert "terminate called" not in done.stderr


def test_without_the_guard_the_same_exit_aborts():
    """The failure the guard exists for: same script, the guard bypassed -> SIGABRT from libtorch."""
    done = _run("vitcop-batch-prefetch", ["--version"], guarded=False)
    if done.returncode == 0:
        pytest.skip("this libtorch finalises cleanly under a busy thread; the abort is not reproducible here")
    assert done.returncode in (-6, 134) and "terminate called" in done.stderr, (done.returncode, done.stderr)


def test_returns_when_no_vitcop_thread_is_alive():
    other = threading.Event()
    t = threading.Thread(target=other.wait, name="someone-else", daemon=True)
    t.start()
    try:
        assert busy_workers() == []
        exit_process(3)  # returns: finalisation is kept for ordinary exits
    finally:
        other.set()
        t.join()


def test_lists_only_live_vitcop_threads():
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="vitcop-test", daemon=True)
    t.start()
    try:
        assert busy_workers() == ["vitcop-test"]
    finally:
        release.set()
        t.join()
    assert busy_workers() == []


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (143, 143), ("a message", 1)])
def test_status_is_what_system_exit_gives(code, status):
    assert status_of(code) == status
