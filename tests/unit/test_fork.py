"""Spares forked from the pytest process (``controller/launch/fork.py``): when a fork is
refused, and that a forked child is ended and reaped like a spawned one (``ForkedProcess``).

The children here ``os._exit`` or sleep at once: nothing of this test process runs in them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from pytest_reuse_env.controller.launch import fork
from pytest_reuse_env.controller.launch.process import describe_exit, wait_exit, wait_or_kill

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")


def forked(then: str) -> fork.ForkedProcess:
    """A child that exits 3 at once (``then="exit"``) or sleeps until killed."""
    pid = os.fork()
    if pid == 0:
        try:
            if then == "sleep":
                time.sleep(60)
        finally:
            os._exit(3)
    return fork.ForkedProcess(pid)


def test_a_forked_child_is_waited_for_like_a_spawned_one() -> None:
    child = forked("exit")
    assert wait_exit(child, 10.0) == 3
    assert child.poll() == 3
    assert describe_exit(child.returncode) == "exit code 3"


def test_a_forked_child_that_does_not_exit_is_killed_and_reaped() -> None:
    child = forked("sleep")
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.01)
    wait_or_kill(child, 0.0)
    assert describe_exit(child.returncode) == "signal SIGKILL (9)"
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped: no zombie left


def test_no_fork_with_another_thread_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert fork.why_not_fork() in ("more than one thread", "not Linux")
    finally:
        stop.set()
        thread.join()


def test_no_fork_while_standard_streams_are_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork, "_native_threads", lambda: 1)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    monkeypatch.setattr(sys, "stdout", object())
    if sys.platform.startswith("linux") and sys.gettrace() is None:
        assert fork.why_not_fork() == "standard streams replaced"
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
        assert fork.why_not_fork() is None
        monkeypatch.setenv(fork.NO_FORK_ENV_VAR, "0")
        assert fork.why_not_fork() == "PYTEST_REUSE_FORK says not to"
    else:
        assert fork.why_not_fork() is not None
