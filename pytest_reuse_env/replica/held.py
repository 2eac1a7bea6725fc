"""Quiet passes held back and sent together: one message for many quick tests.

A test that passed with no output, no warning and no report of its own (nearly every test of
a quick suite) would cost its replica one pipe write, and that write wakes the controller's
receiving thread, often on this replica's own core: measured on 2000 trivial tests, 25 us in
the write and about as much again in the next test. ``HeldResults`` keeps such a test's TEST
back and sends up to ``BATCH`` of them as one TESTS message:

- when ``BATCH`` are held, or the oldest has waited ``FLUSH_SECONDS`` (checked as the next is
  held, and by the replica's watchdog thread while a long test runs);
- before any other message, so the controller sees everything in the order it happened (a
  failure, which ``-x`` acts on, is never held and goes out at once, after the passes before
  it);
- before the replica waits for work, and while fewer than ``MIN_QUEUED`` tests are queued
  behind it: the controller sends more as results come in, so a short queue is never starved.

A crash must not lose a held test: each is first appended to a file the controller names in
START (``protocol.held_path``) and reads when the replica's link closes
(``controller/dispatch.py``); a write to a file wakes no one. The file is emptied after each
send. The controller takes from it only tests it still counts in flight, so one sent just
before the crash is not counted twice. Replicas on other hosts get no file and hold nothing. A
detached (persistent) replica keeps its file for its life, emptied when a client goes or comes
(``drop``); a controller takes from it only its own lease's tests.

Runs inside a replica; imports the standard library, the package's ``protocol`` and the
replica's ``procfs`` (its descriptor kept high, as the leak checks' files are).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Final, final

from pytest_reuse_env import protocol
from pytest_reuse_env.replica.procfs import keep_high

#: The most quiet passes one TESTS carries.
BATCH: Final = 16
#: The longest a held test waits for the ones after it.
FLUSH_SECONDS: Final = 0.05
#: Tests queued behind the one that ended for it to be held.
MIN_QUEUED: Final = 8
_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
#: Bound at import, before a reloading replica wraps ``os.open`` to hear data files.
_os_open: Final = os.open


@final
class HeldResults:
    """The TESTs held back, and the file that keeps them should the replica die."""

    def __init__(
        self,
        path: str | None,
        send: Callable[[protocol.Message], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``send``: the channel's own send (the caller holds the replica's send lock around
        every call here)."""
        self._send = send
        self._clock = clock
        #: Each held TEST's ``protocol.held_line``: its payload and when the test ended (this
        #: machine's monotonic clock, the controller's too: it times the replica's tests by
        #: when each ended).
        self._held: list[str] = []
        self._since = 0.0
        self._fd = _open(path) if path else None

    def hold(self, text: str, queued: int) -> bool:
        """Hold a quiet pass's TEST payload; False when it is not held (no file, too few tests
        queued, the file could not be written): the caller sends it itself, after ``flush``."""
        if self._fd is None or queued < MIN_QUEUED:
            return False
        now = self._clock()
        line = protocol.held_line(now, text)
        try:
            os.write(self._fd, line.encode())
        except OSError:  # closed or full: hold nothing more
            self._fd = None
            return False
        if not self._held:
            self._since = now
        self._held.append(line)
        if len(self._held) >= BATCH or now - self._since >= FLUSH_SECONDS:
            self.flush()
        return True

    def flush(self) -> None:
        """Send what is held, as one TESTS, and empty the file."""
        if not self._held:
            return
        lines, self._held = self._held, []
        self._send(protocol.tests("".join(lines)))
        self._empty_file()

    def drop(self) -> None:
        """A persistent replica's client is gone (or a new one attaches): what is held was that
        client's, whom nobody will tell; the next must not get it."""
        self._held = []
        self._empty_file()

    def _empty_file(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:  # closed or gone: hold nothing more
                self._fd = None

    def flush_stale(self) -> None:
        """The watchdog's call: send what has waited ``FLUSH_SECONDS`` (a long test runs)."""
        if self._held and self._clock() - self._since >= FLUSH_SECONDS:
            self.flush()


def _open(path: str) -> int | None:
    """The held file, emptied, written only by this process, at a high descriptor number."""
    try:
        return keep_high(_os_open(path, _FLAGS, 0o600))
    except OSError:
        return None
