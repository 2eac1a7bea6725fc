"""Shared test setup for pytest-reuse-env's own suite.

Every test that uses ``pytester`` is checked afterwards for replica processes left running in
its directory (found by pid with psutil): a replica that outlives its test is a failure.
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


def replica_processes(root: Path) -> list[psutil.Process]:
    """Replica processes (they carry PYTEST_REUSE_REPLICA) working under ``root``."""
    found = []
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = process.info.get("cwd")
        if process.pid == os.getpid() or not cwd or not Path(cwd).is_relative_to(root):
            continue
        try:
            if "PYTEST_REUSE_REPLICA" in process.environ():
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(autouse=True)
def _no_leftover_replicas(request: pytest.FixtureRequest) -> Iterator[None]:
    if "pytester" not in request.fixturenames:
        yield
        return
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
    left = replica_processes(pytester.path)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = replica_processes(pytester.path)
    for process in left:
        process.kill()
    assert not left, f"replica processes outlived the test: {[p.pid for p in left]}"
