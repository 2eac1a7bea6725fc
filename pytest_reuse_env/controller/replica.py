"""The controller's handle of one replica: its state, the work it holds, and how it ended.

How the process is reached (an execnet popen gateway, or a detached replica over a Unix socket)
is the link's business (``launch/``). Everything the replica says arrives on a reader thread
and is only put on the controller's event queue; the controller's loop handles it on the main
thread.
"""

from __future__ import annotations

import enum
import os
import queue
import sys
import time
from collections import deque
from typing import Any, Final, final

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.launch.base import END, Link
from pytest_reuse_env.controller.launch.process import EXIT_WAIT_SECONDS

#: Delivered when the replica's link closes, for whatever reason.
CHANNEL_CLOSED: Final = END[0]


class ReplicaState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    DEAD = "dead"


@final
class ReplicaNode:
    """What pytest's terminal reporter and junitxml look for on an xdist-style report.

    ``report.node.gateway.id`` gives the ``[r0]`` prefix in ``-v`` output, and
    ``_workerinfocache`` the line above a failure's traceback.
    """

    def __init__(self, replica_id: str, label: str) -> None:
        self.gateway = self
        self.replica_id = replica_id
        #: Shown by the terminal reporter: "r0 cold" for a replica's first test, "r0 warm" after.
        self.id = f"{replica_id} {label}"
        self.describe(None)

    def describe(self, pid: int | None) -> None:
        version = ".".join(map(str, sys.version_info[:3]))
        self._workerinfocache = (
            f"[{self.replica_id}] replica pid {pid} -- Python {version} {sys.executable}"
        )

    def __repr__(self) -> str:
        return f"<ReplicaNode {self.id}>"


@final
class Replica:
    """One replica process, as the controller sees it."""

    def __init__(
        self,
        replica_id: str,
        environment_name: str,
        events: queue.Queue[Any],
        link: Link,
        *,
        persistent: bool = False,
    ) -> None:
        self.id = replica_id
        self.environment_name = environment_name
        self.node_cold = ReplicaNode(replica_id, "cold")
        self.node_warm = ReplicaNode(replica_id, "warm")
        self._events = events
        self.link = link
        #: A detached replica (scope="global"): the end of the run only disconnects it.
        self.persistent = persistent
        #: Attached warm from the registry rather than started by this run.
        self.attached = False
        self.state = ReplicaState.STARTING
        self.pid: int | None = None
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.setup_seconds: float | None = None
        self.nodeids: frozenset[str] = frozenset()
        self.collect_errors: list[str] = []
        #: Nodeids sent and not finished, in the order the replica runs them.
        self.in_flight: deque[str] = deque()
        #: The nodeid whose logstart came and whose logfinish has not.
        self.current: str | None = None
        self.current_location: tuple[str, int | None, str] | None = None
        self.current_phases: list[str] = []
        self.current_started_at: float | None = None
        self.current_warm = False
        #: Why the process ended, when the controller ended it (a timeout, a start deadline).
        self.crash_reason: str | None = None
        #: When the current test's teardown phase began (bounded by reuse_teardown_timeout).
        self.teardown_since: float | None = None
        #: The test whose timeout made the controller kill this replica.
        self.timed_out: str | None = None
        self.start_failure: str | None = None
        #: Why the environment asked it to stop: "scaledown", "idle", "end of run".
        self.retire_reason: str | None = None
        self.log_path: str | None = None
        #: How it ended, for the summary: a retire reason, "crash" or "start failure".
        self.end_reason: str | None = None
        self.tests_run = 0
        #: When its first test began (the environment's clock).
        self.first_test_at: float | None = None
        #: Every nodeid this replica started for this run, in order.
        self.ran: list[str] = []
        #: Tests started and not finished, with when they started (several in async batches).
        self.running: dict[str, float] = {}
        self.drained = False
        self.shutdown_sent = False
        self.finished = False
        self.idle_since: float | None = None

    def __repr__(self) -> str:
        return f"<Replica {self.id} pid={self.pid} {self.state.value}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, payload: protocol.StartPayload) -> None:
        """Start the process (or connect to a new daemon) and send it START; returns at once."""
        self.log_path = payload["log_path"]
        self.link.open((protocol.START, payload), self._enqueue)
        self.pid = self.link.pid

    def attach(self, log_path: str) -> None:
        """Connect to a warm replica found in the registry; it answers READY."""
        self.attached = True
        self.log_path = log_path
        attach: protocol.AttachPayload = {"controller_pid": os.getpid()}
        self.link.open((protocol.ATTACH, attach), self._enqueue)
        self.pid = self.link.pid

    def _enqueue(self, message: protocol.Message) -> None:
        self._events.put((self, message))

    def mark_ready(self, payload: protocol.ReadyPayload) -> None:
        self.state = ReplicaState.STOPPING if self.shutdown_sent else ReplicaState.READY
        self.pid = payload["pid"]
        self.node_cold.describe(self.pid)
        self.node_warm.describe(self.pid)
        self.ready_at = time.monotonic()
        self.setup_seconds = payload["setup_seconds"]
        self.nodeids = frozenset(payload["nodeids"])
        self.collect_errors = list(payload["collect_errors"])
        self.idle_since = self.ready_at

    @property
    def alive(self) -> bool:
        return self.state in (ReplicaState.STARTING, ReplicaState.READY)

    @property
    def accepting(self) -> bool:
        """Ready, not asked to stop: may be given work."""
        return self.state is ReplicaState.READY and not self.shutdown_sent

    # -- messages ----------------------------------------------------------------------------

    def send(self, name: str, payload: Any = None) -> bool:
        """Send a message; False when the link is already gone (the close event follows)."""
        return self.link.send((name, payload))

    def run(self, nodeids: list[str]) -> None:
        self.in_flight.extend(nodeids)
        self.drained = False
        self.idle_since = None
        self.send(protocol.RUN, nodeids)

    def drain(self) -> None:
        if not self.drained:
            self.drained = True
            self.send(protocol.DRAIN)

    def cancel(self) -> list[str]:
        """Ask the replica to drop what it has not started; returns those nodeids."""
        dropped = [n for n in self.in_flight if n != self.current]
        self.in_flight = deque(n for n in self.in_flight if n == self.current)
        self.send(protocol.CANCEL)
        return dropped

    def request_shutdown(self) -> None:
        # A replica still starting gets it too: the message waits in its inbox.
        if not self.shutdown_sent and self.alive:
            self.shutdown_sent = True
            self.state = ReplicaState.STOPPING
            self.send(protocol.SHUTDOWN)

    def batch_test_started(self, nodeid: str) -> None:
        """An async test of a concurrent batch began (its reports come when it finishes)."""
        self.ran.append(nodeid)
        self.running[nodeid] = time.monotonic()

    def test_started(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        if nodeid not in self.running:
            self.ran.append(nodeid)
            self.running[nodeid] = time.monotonic()
        self.current = nodeid
        self.current_location = location
        self.current_phases = []
        self.current_started_at = time.monotonic()

    def test_finished(self, nodeid: str) -> None:
        if nodeid in self.in_flight:
            self.in_flight.remove(nodeid)
        self.running.pop(nodeid, None)
        self.teardown_since = None
        if self.current == nodeid:
            self.current = None
            self.current_started_at = None
        self.tests_run += 1
        if not self.in_flight:
            self.idle_since = time.monotonic()

    # -- ending ------------------------------------------------------------------------------

    def exit_description(self, wait: float = EXIT_WAIT_SECONDS) -> str:
        """How the process ended: "exit code 3" or "signal SIGKILL (9)"; waits at most ``wait``."""
        return self.link.exit_description(wait)

    def log_tail(self, lines: int = 15) -> str:
        """What the replica last wrote to its stderr log ("" if nothing).

        A faulthandler dump is quoted from its start, where the crashing test's frame is.
        """
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                text = log.readlines()[-2000:]
        except OSError:
            return ""
        # A crash's faulthandler dump, or the one a hung teardown leaves behind.
        starts = [
            i for i, line in enumerate(text) if line.startswith(("Fatal Python error", "Timeout ("))
        ]
        if not starts:
            return "".join(text[-lines:]).rstrip()
        dump = text[starts[-1] :]
        current = [i for i, line in enumerate(dump) if line.startswith("Current thread")]
        threads = [i for i, line in enumerate(dump) if "(most recent call first)" in line]
        if dump[0].startswith("Timeout (") and threads:
            # Taken by a watchdog thread: the main thread (listed last) is the one that hung.
            dump = dump[:1] + dump[threads[-1] :]
        elif current:  # the thread that crashed, not execnet's receiver
            dump = dump[:1] + dump[current[0] :]
        elif len(threads) > 1:
            dump = dump[:1] + dump[threads[-1] :]
        return "".join(dump[:lines]).rstrip()

    def kill(self) -> None:
        """SIGKILL the process now; its link closes and the controller handles the rest."""
        self.link.kill()

    def mark_dead(self) -> None:
        self.state = ReplicaState.DEAD

    def terminate(self, wait: float = EXIT_WAIT_SECONDS) -> None:
        """Ask, wait up to ``wait`` seconds, then kill, by pid."""
        self.link.terminate(wait)
        self.state = ReplicaState.DEAD

    def release(self) -> None:
        """End of the run for a persistent replica: disconnect, leaving it warm."""
        self.link.release()
        self.state = ReplicaState.DEAD
