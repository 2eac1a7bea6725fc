"""Shared test setup for pytest-reuse-env's own suite.

Every test that uses ``pytester`` is checked afterwards for processes left running in its
directory (found by pid with psutil): a replica that outlives its test is a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytest_plugins = ["pytester"]

#: How long a finished test's replicas may take to exit before they count as left behind.
LEFTOVER_GRACE_SECONDS = 10.0


def processes_under(root: Path) -> list[psutil.Process]:
    """Processes other than this one working in ``root``: replicas (popen, detached or over
    ssh) chdir to the run's directory. Found by what the kernel shows now: a variable a
    process set in its own environment after it started is not in /proc/PID/environ."""
    found = []
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = process.info.get("cwd")
        if process.pid != os.getpid() and cwd and Path(cwd).is_relative_to(root):
            found.append(process)
    return found


@pytest.fixture(autouse=True)
def _no_leftover_replicas(request: pytest.FixtureRequest) -> Iterator[None]:
    if "pytester" not in request.fixturenames:
        yield
        return
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    left = processes_under(pytester.path)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_under(pytester.path)
    for process in left:
        process.kill()
    assert not left, f"processes outlived the test: {[p.pid for p in left]}"
