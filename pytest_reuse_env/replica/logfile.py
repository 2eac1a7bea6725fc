"""The replica's log file: its stderr, and a descriptor of it that pytest's capture cannot take.

Runs inside a replica; imports only the standard library (the bootstrap, the serve loop and the
teardown watchdog all write here).
"""

from __future__ import annotations

import contextlib
import os

_LOG_FD: int | None = None


def _log_fd() -> int:
    """A descriptor of the replica's log that pytest's fd capture (which takes fd 2 over
    during a test) cannot redirect: kept from before the session started capturing."""
    global _LOG_FD
    if _LOG_FD is None:
        _LOG_FD = os.dup(2)
    return _LOG_FD


def _log_line(text: str) -> None:
    """One line in the replica's log (the controller quotes its last line while we start)."""
    with contextlib.suppress(OSError):
        os.write(_log_fd(), f"\n{text}\n".encode())


def redirect_stderr(log_path: str) -> None:
    """The replica's stderr (faulthandler dumps, prints from finalizers) goes to its log file,
    not the user's terminal; the controller quotes its tail when the replica crashes.

    Its stdout too, as a detached replica's: execnet took the real fd 1 for its channel and left
    /dev/null there, where pytest-timeout's thread method would write its banner and stacks.
    """
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 2)
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(1), os.stat(os.devnull)):
            os.dup2(log_fd, 1)
    os.close(log_fd)
