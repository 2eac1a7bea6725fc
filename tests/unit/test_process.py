"""Ending a process, bounded: ``wait_exit`` returns as soon as the process exits (pidfd on
Linux), raises on timeout, and ``wait_or_kill`` kills what outlives its wait."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_reuse_env.controller.launch.process import wait_exit, wait_or_kill

HANG = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_wait_exit_returns_the_exit_code_of_a_process_that_ended() -> None:
    with subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]) as popen:
        assert wait_exit(popen, 30.0) == 3
        assert wait_exit(popen, 0.0) == 3, "already reaped: answered from the returncode"


def test_wait_exit_times_out_on_a_running_process() -> None:
    with subprocess.Popen(HANG) as popen:
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                wait_exit(popen, 0.01)
            assert popen.poll() is None
        finally:
            popen.kill()
            popen.wait(10)


def test_wait_or_kill_kills_what_outlives_the_wait() -> None:
    with subprocess.Popen(HANG) as popen:
        wait_or_kill(popen, 0.01)
        assert popen.returncode == -9
