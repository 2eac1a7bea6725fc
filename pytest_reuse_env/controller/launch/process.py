"""Ending a replica's process, by pid and bounded: "ask, wait, kill" and how it ended.

Shared by the launch strategies and ``commands.py`` (``--reuse-stop``). psutil is imported
where it is used, as in ``launcher.py``, ``launch/daemon.py`` and ``record.py``: a run whose
replicas all end as asked never needs it, and its import (about 10 ms) came before the first
replica's START.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import psutil

#: Bounded waits of the "ask, wait, kill" teardown, in seconds.
EXIT_WAIT_SECONDS: Final = 5.0
KILL_WAIT_SECONDS: Final = 5.0


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited; returns those still running after ``timeout``.

    A zombie counts as exited: a detached replica is reaped by init, not by us, and init may
    take seconds to get to it.
    """
    import psutil

    deadline = time.monotonic() + timeout
    alive = list(processes)
    while True:
        still = []
        for process in alive:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    still.append(process)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def gateway_popen(gateway: Any) -> subprocess.Popen[bytes] | None:
    """The local process of an execnet gateway (a popen gateway's interpreter, an ssh
    gateway's ssh), None for a socket gateway or none yet."""
    popen: subprocess.Popen[bytes] | None = getattr(getattr(gateway, "_io", None), "popen", None)
    return popen


def kill_marked(marker: str) -> list[int]:
    """SIGKILL this process's descendants whose command line holds ``marker`` (a launch that
    hangs before its pid is known: ``-X pytest_reuse_launch=...``); their pids."""
    import psutil

    killed = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any(marker in part for part in child.cmdline()):
                child.kill()
                killed.append(child.pid)
        except psutil.Error:
            continue
    return killed


def kill_and_wait(processes: list[psutil.Process]) -> None:
    """SIGKILL what is left, then wait (bounded) for it to go."""
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    wait_gone(processes, KILL_WAIT_SECONDS)


def describe_exit(returncode: int | None) -> str:
    """ "exit code 3" or "signal SIGKILL (9)" from a Popen returncode."""
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {name} ({-returncode})"
    return f"exit code {returncode}"


def wait_exit(popen: subprocess.Popen[bytes], timeout: float) -> int:
    """``popen.wait(timeout)``, woken the moment the process exits: Popen's own bounded wait
    polls with sleeps of up to 50 ms, which the end of every run would pay. Linux's pidfd
    (``os.pidfd_open``) says when; elsewhere, Popen's wait."""
    if popen.returncode is not None:
        return popen.returncode
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or already reaped
        return popen.wait(timeout=timeout)
    try:
        readable, _, _ = select.select([pidfd], [], [], max(0.0, timeout))
    finally:
        os.close(pidfd)
    if not readable:
        raise subprocess.TimeoutExpired(popen.args, timeout)
    return popen.wait(timeout=KILL_WAIT_SECONDS)  # it has exited: reaps at once


def wait_or_kill(
    popen: subprocess.Popen[bytes], wait: float, kill: Callable[[], None] | None = None
) -> None:
    """Wait up to ``wait`` seconds for the process, then kill it (``kill``, by default SIGKILL
    to that pid) and wait again, bounded."""
    try:
        wait_exit(popen, wait)
    except subprocess.TimeoutExpired:
        (kill or popen.kill)()
        try:
            wait_exit(popen, KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"pytest-reuse-env: pid {popen.pid} did not die after SIGKILL\n")
