"""What the suite's end-to-end tests share: how an inner pytest run is started, and how the
warm replicas it leaves are found and stopped (by pid) afterwards."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

import psutil
import pytest

#: Plugins the test extra installs for the compatibility matrix (tests/e2e/test_compat_*.py):
#: off in every other inner run, so merely having them installed changes nothing there.
COMPAT_OFF: Final = (
    *("-p", "no:syrupy", "-p", "no:benchmark"),
    *("-p", "no:pytest_order", "-p", "no:dependency", "-p", "no:randomly"),
)
#: Plugins that would only add noise to an inner run are off; the plugin under test is on.
BASE_NOISE_OFF: Final = (
    *("-p", "no:asyncio", "-p", "no:hypothesispytest", "-p", "no:anyio"),
    *("-p", "no:randomly"),
)
NOISE_OFF: Final = (*BASE_NOISE_OFF, *COMPAT_OFF)
PLUGIN_ARGS: Final = (*NOISE_OFF, "-p", "reuse_env")
#: For the compatibility matrix: the other plugins on.
COMPAT_ARGS: Final = (*BASE_NOISE_OFF, "-p", "reuse_env")
#: Bound of every inner run: a hang fails the test instead of the whole suite.
RUN_TIMEOUT: Final = 60.0
#: How long a replica told to stop may take to be gone.
WAIT_SECONDS: Final = 15.0
#: One run-scoped replica: the ini of inner runs that count replicas and spares.
ONE_RUN_SCOPED_REPLICA_INI: Final = """
[pytest]
reuse_replicas = 1
reuse_scope = run
"""


def run(
    pytester: pytest.Pytester,
    *args: str,
    timeout: float = RUN_TIMEOUT,
    plugins: Sequence[str] = PLUGIN_ARGS,
    basetemp: bool = True,
) -> pytest.RunResult:
    """An inner pytest in a subprocess (real replicas are processes). ``plugins``: the ``-p``
    arguments (by default the plugin on, noise off); ``basetemp=False``: without pytester's
    ``--basetemp``, so temp directories go where pytest puts them by default."""
    if not basetemp:
        return pytester.run(sys.executable, "-m", "pytest", *plugins, *args, timeout=timeout)
    return pytester.runpytest_subprocess(*plugins, *args, timeout=timeout)


def run_compat(
    pytester: pytest.Pytester, *args: str, timeout: float = RUN_TIMEOUT
) -> pytest.RunResult:
    """``run`` with the compatibility matrix's plugins (syrupy, pytest-benchmark, ...) on."""
    return run(pytester, *args, timeout=timeout, plugins=COMPAT_ARGS)


def run_in_process(
    pytester: pytest.Pytester, *args: str, plugins: Sequence[str] = PLUGIN_ARGS
) -> pytest.RunResult:
    """An inner pytest in this process: for runs that start no replica (options, usage
    errors) or test the plugin's parts in-process."""
    return pytester.runpytest(*plugins, *args)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_under(root: Path) -> set[int]:
    """Live processes (other than this one) whose working directory is under ``root``: the
    replicas an inner run left, and the spares it started before any had a replica's
    environment."""
    found = set()
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = process.info.get("cwd")
        if process.pid == os.getpid() or not cwd or not Path(cwd).is_relative_to(root):
            continue
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.add(process.pid)
        except psutil.Error:
            continue
    return found


def replica_pids(root: Path) -> set[int]:
    """Live replica processes (they carry PYTEST_REUSE_REPLICA) working under ``root``."""
    found = set()
    for pid in processes_under(root):
        try:
            if "PYTEST_REUSE_REPLICA" in psutil.Process(pid).environ():
                found.add(pid)
        except psutil.Error:
            continue
    return found


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Poll ``predicate`` every 0.1 s until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def stop_and_check(pytester: pytest.Pytester) -> None:
    """``--reuse-stop``, then every replica of the directory is gone by pid."""
    before = replica_pids(pytester.path)
    result = run(pytester, "--reuse-stop")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert wait_for(lambda: not replica_pids(pytester.path)), (
        f"replicas {replica_pids(pytester.path)} outlived --reuse-stop (before: {before})\n"
        + result.stdout.str()
    )


@contextlib.contextmanager
def replicas_stopped(pytester: pytest.Pytester) -> Iterator[None]:
    """Around a test that leaves warm replicas: stop them at the end and check them gone by
    pid, and kill any left even when the test or the stop failed."""
    try:
        yield
    finally:
        try:
            stop_and_check(pytester)
        finally:
            for pid in replica_pids(pytester.path):
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()
