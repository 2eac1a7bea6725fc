"""What a replica says about the test it runs: one TEST message when the test ends, unless the
test runs long enough to be announced.

A quick test (nearly all of them) costs one message: its reports (compact when it passed
quietly, see ``protocol.PASSED``) and warnings travel together once it ends; a quiet pass may
be held back and sent with the next ones (``held.py``). A test still
running after ``protocol.ANNOUNCE_SECONDS`` is announced by the replica's watchdog thread
(LOGSTART with how long it has run, then what it has said so far), and the rest of it streams
message by message as before, so the controller can show it as running, enforce its timeout
and its teardown deadline, and blame the right phase if the replica dies.

Runs inside a replica; imports the standard library and the package's ``protocol`` only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, final

from pytest_reuse_env import protocol


@final
class TestOutbox:
    """The running test's messages, held until it ends or is announced.

    The main thread adds to it; the watchdog thread may announce it: one lock orders them.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        send: Callable[[protocol.Message], None],
        send_quiet_pass: Callable[[protocol.Message], None] | None = None,
    ) -> None:
        self._send = send
        #: For a test whose events are all compact passes (``held.py`` may hold it back).
        self._send_quiet_pass = send_quiet_pass or send
        self._lock = threading.Lock()
        self._nodeid: str | None = None
        self._location: tuple[str, int | None, str] = ("", None, "")
        self._lease = ""
        self._warm = False
        self._since = 0.0
        self._events: list[list[Any]] = []
        self._announced = False

    def start(
        self, nodeid: str, location: tuple[str, int | None, str], lease: str, *, warm: bool
    ) -> None:
        with self._lock:
            if nodeid == self._nodeid:  # another attempt (pytest-rerunfailures): one more start
                if self._announced:
                    self._send(protocol.logstart(nodeid, location, lease))
                else:
                    self._events.append([protocol.LOGSTART])
                return
            self._nodeid, self._location, self._lease, self._warm = nodeid, location, lease, warm
            self._events = []
            self._announced = False
            self._since = time.monotonic()

    def add(self, event: list[Any]) -> None:
        """A report (``[FULL_REPORT, text]`` or a compact ``[PASSED, ...]``) or a warning."""
        with self._lock:
            if self._nodeid is not None and not self._announced:
                self._events.append(event)
            else:  # announced, or outside any test (nothing to group it with)
                self._send(self._message(event))

    def finish(self, nodeid: str) -> None:
        """The test ended: everything it said, in one TEST, or its LOGFINISH once announced."""
        with self._lock:
            if self._nodeid == nodeid and not self._announced:
                message = protocol.test_done(
                    nodeid, self._lease, self._warm, self._events, self._location
                )
                if all(event[0] == protocol.PASSED for event in self._events):
                    self._send_quiet_pass(message)
                else:
                    self._send(message)
            else:
                self._send(protocol.logfinish(nodeid, self._location, self._lease))
            self._nodeid = None
            self._events = []

    def announce(self, *, after: float = 0.0) -> None:
        """Announce the running test if it has run ``after`` seconds: LOGSTART, then what it
        said so far; from then on it streams. The watchdog calls this, and so does a session
        that is ending unasked (the controller then knows the exact phase)."""
        with self._lock:
            if self._nodeid is None or self._announced:
                return
            elapsed = time.monotonic() - self._since
            if elapsed < after:
                return
            self._announced = True
            self._send(protocol.logstart(self._nodeid, self._location, self._lease, elapsed))
            for event in self._events:
                self._send(self._message(event))
            self._events = []

    def _message(self, event: list[Any]) -> protocol.Message:
        kind = event[0]
        if kind == protocol.LOGSTART:
            return protocol.logstart(self._nodeid or "", self._location, self._lease)
        if kind == protocol.PASSED:
            return protocol.compact_report(event, self._nodeid or "", self._warm, self._lease)
        if kind == protocol.FULL_REPORT:
            text: str = event[1]
            return protocol.encoded_report(text)
        payload: protocol.WarningPayload = event[1]
        return protocol.warning(**payload)
