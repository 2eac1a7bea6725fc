"""The controller's handle of one replica: its state, the work it holds, and how it ended.

The handle owns its state: every change is a method named after what happened (``ready``,
``took``, ``finished``, ``retire``, ``ended``), and a change that makes no sense in the handle's
state raises ``ReplicaProtocolError`` (the replica said something out of turn) or
``ReplicaStateError`` (the controller asked for something out of turn). It never reads a clock:
the caller passes ``now`` from the controller's one clock (``clock.py``).

How it ended is one value, ``Ending``. Three words for three different things:

- ``ReplicaState`` (here): where this handle is in its life in this run.
- ``registry.RecordState``: what the project's registry says of a detached replica's lease.
- ``scaling.ReplicaPhase``: the load of a live replica as the scaling rules see it.

How the process is reached is the link's business (``launch/``). Everything the replica says
arrives on a reader thread and is only put on the controller's event queue; the controller's loop
handles it on the main thread.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import queue
import secrets
import sys
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, final

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.launch.base import Link
from pytest_reuse_env.controller.launch.process import EXIT_WAIT_SECONDS


class ReplicaState(enum.Enum):
    """Where a replica handle is in its life."""

    STARTING = "starting"  # asked to start (or attach); has not answered READY
    READY = "ready"  # serving: may be given tests
    STOPPING = "stopping"  # asked to finish what it holds and exit
    ENDED = "ended"  # gone, released or abandoned: ``Replica.ending`` says how


class EndKind(enum.Enum):
    RETIRED = "retired"  # asked to stop, and it finished (the reason says why it was asked)
    CRASHED = "crashed"  # its link closed unasked while it served
    KILLED = "killed"  # the controller killed it while it served (a timeout, a hung teardown)
    START_FAILED = "start failure"  # it ended before it was ready
    RELEASED = "released"  # a persistent replica left warm for the next run
    LEFT = "left"  # attached warm, it closed before answering: the environment leases again
    ABANDONED = "abandoned"  # the run ended first: killed after its deadline


@final
@dataclass(frozen=True)
class Ending:
    """How a replica ended (or, before its link closes, why it is ending)."""

    kind: EndKind
    #: For the user: why it was retired ("scaledown", "stale: conftest.py changed"), why it was
    #: killed, the start failure's traceback, or how the process exited.
    reason: str = ""
    #: The test whose timeout ended it.
    test: str | None = None

    @property
    def forced(self) -> bool:
        """Ended by the controller's kill or by a failed start, not by a request to stop."""
        return self.kind in (EndKind.KILLED, EndKind.START_FAILED)

    @property
    def label(self) -> str | None:
        """How the summary names it: the retire reason, "crash" or "start failure"; None for
        a replica that did not end in this run's terms (released, left, abandoned)."""
        if self.kind is EndKind.RETIRED:
            return self.reason
        if self.kind in (EndKind.CRASHED, EndKind.KILLED):
            return "crash"
        if self.kind is EndKind.START_FAILED:
            return "start failure"
        return None


class ReplicaProtocolError(Exception):
    """The replica said something that makes no sense in its handle's state."""


class ReplicaStateError(Exception):
    """The controller asked a replica handle for a change its state forbids."""


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


#: How a faulthandler dump begins: a crash's, or the teardown watchdog's.
_DUMP_MARKERS = ("Fatal Python error", "Timeout (")


def _dump_start(line: str) -> int:
    """Where a faulthandler dump begins in ``line``; -1 when it does not."""
    found = [line.find(marker) for marker in _DUMP_MARKERS if marker in line]
    return min(found) if found else -1


@final
class Replica:
    """One replica process, as the controller sees it."""

    def __init__(
        self,
        replica_id: str,
        environment_name: str,
        events: queue.SimpleQueue[Any],
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
        #: This lease's id: the replica stamps it on every message about a test it was sent
        #: under it; anything else (a test that outlived an earlier run) is not ours.
        self.lease = f"{os.getpid()}-{secrets.token_hex(8)}"
        #: Set when its session ended unasked (KeyboardInterrupt, pytest.exit, an error).
        self.stopped_early: protocol.StoppedEarlyPayload | None = None
        #: Its pytest session's exit code, from FINISHED.
        self.exit_code: int | None = None
        #: A detached replica (scope="global"): the end of the run only disconnects it.
        self.persistent = persistent
        #: Attached warm from the registry rather than started by this run.
        self.attached = False
        #: Started as a spare, before the run knew it needed it (launch/spare.py).
        self.from_spare = False
        self.state = ReplicaState.STARTING
        self.pid: int | None = None
        self.log_path: str | None = None
        #: Where it writes the quiet passes it holds back (``replica/held.py``), if it does,
        #: and that file, opened once it is READY: a test that removes the run's directory
        #: leaves the file readable for as long as this stays open.
        self.held_path: str | None = None
        self.held_file: IO[bytes] | None = None
        #: When the controller dropped what it had not started (``cancel``): a held pass that
        #: ended before then had run, and is reported.
        self.cancelled_at: float | None = None
        #: When its environment asked for it (the controller's clock): scale-up time from here.
        self.started_at = 0.0
        #: When it was last asked to start or to attach (a watch round re-attaches it): the
        #: start deadline and the slow-start notice count from here.
        self.asked_at = 0.0
        self.ready_at: float | None = None
        #: What becoming warm cost it (see ``protocol.ReadyPayload``), plus its first setup.
        self.setup_seconds: float | None = None
        self.nodeids: frozenset[str] = frozenset()
        self.collect_errors: list[str] = []
        #: Nodeids sent and not finished, in the order the replica runs them.
        self.in_flight: deque[str] = deque()
        #: Tests started and not finished, with when they started (several in async batches).
        self.running: dict[str, float] = {}
        #: The last test it finished this run: a fixture torn down after it, between tests,
        #: failed in that test's teardown in plain pytest.
        self.last_finished: str | None = None
        #: Since when the first test it holds has (at the latest) been running: it starts each
        #: test as soon as the previous one ends, and quick tests are not announced.
        self.head_since: float | None = None
        #: A moving average of how long its tests take (head_since to finish), once known.
        self.mean_test_seconds: float | None = None
        #: Tests taken back by CANCEL (-x): what the replica still says of them is dropped.
        self.cancelled: set[str] = set()
        #: It was asked (STEAL) to hand back tests it has not started; RETURNED answers.
        self.steal_asked = False
        #: The nodeid whose logstart came and whose logfinish has not, and its phases so far.
        self.current: str | None = None
        self.current_phases: list[str] = []
        self.current_warm = False
        #: Whether the current test's logstart was replayed (not when presumed running).
        self.current_logged = True
        #: When the current test's teardown phase began (bounded by reuse_teardown_timeout).
        self.teardown_since: float | None = None
        self.tests_run = 0
        #: When its first test began.
        self.first_test_at: float | None = None
        #: Every nodeid this replica started for this run, in order.
        self.ran: list[str] = []
        self.idle_since: float | None = None
        #: Why it is ending, known before its link closes: asked to retire, killed, or its own
        #: START_FAILED. ``ending`` is the final word, set once when it is gone.
        self.cause: Ending | None = None
        self.ending: Ending | None = None
        #: It said FINISHED: its session was torn down on purpose.
        self.said_finished = False
        #: A run-scoped replica sent its last WORKEROUTPUT: its session's fixtures are torn
        #: down and every report is sent; what is left is its pytest session's end and exit.
        self.served = False
        self._drained = False

    def __repr__(self) -> str:
        return f"<Replica {self.id} pid={self.pid} {self.state.value}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, payload: protocol.StartPayload) -> None:
        """Start the process (or connect to a new daemon) and send it START; returns at once."""
        self.log_path = payload["log_path"]
        self.held_path = payload.get("held")
        payload["lease"] = self.lease
        self.link.open(protocol.start(payload), self._enqueue)
        self.pid = self.link.pid
        self.from_spare = self.link.from_spare

    def attach(self, log_path: str, workerinput: dict[str, Any] | None = None) -> None:
        """Connect to a warm replica found in the registry; it answers READY."""
        self.attached = True
        self.log_path = log_path
        # Its START (by the run that started it) named the file it holds passes in.
        self.held_path = protocol.held_path(log_path)
        self.link.open(protocol.attach(os.getpid(), self.lease, workerinput), self._enqueue)
        self.pid = self.link.pid

    def reattach(self, now: float) -> None:
        """Watch mode, a new round: ATTACH again over the same link with a new lease; the
        replica catches up with edited files and answers READY (or says it is stale)."""
        if self.state is not ReplicaState.READY or self.in_flight:
            raise ReplicaStateError(
                f"replica {self.id} is {self.state.value} with {len(self.in_flight)} tests: "
                "only an idle ready replica starts a new round"
            )
        self.lease = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.asked_at = now
        self.state = ReplicaState.STARTING
        self.ready_at = self.idle_since = None
        self._drained = False
        self.send(protocol.attach(os.getpid(), self.lease))

    def collect(self, message: protocol.Message, now: float) -> None:
        """COLLECT: the test files it waited for. Its start deadline counts from now: the
        wait was for this process's collection, not for the replica."""
        self.asked_at = now
        self.send(message)

    def _enqueue(self, message: protocol.Message) -> None:
        self._events.put((self, message))

    def of_this_lease(self, lease: object) -> bool:
        """Whether a message stamped ``lease`` (None or "": not stamped) is about this lease's
        work."""
        return not lease or lease == self.lease

    def adopted(self, now: float) -> None:
        """Its environment took it on at ``now``."""
        self.started_at = self.asked_at = now

    def ready(self, payload: protocol.ReadyPayload, now: float) -> None:
        """READY: collected (or attached) and serving."""
        if self.ready_at is not None or self.state not in (
            ReplicaState.STARTING,
            ReplicaState.STOPPING,
        ):
            raise ReplicaProtocolError(f"said {protocol.READY!r} twice")
        if self.state is ReplicaState.STARTING:
            self.state = ReplicaState.READY
        self.pid = payload["pid"]
        self.open_held()
        self.node_cold.describe(self.pid)
        self.node_warm.describe(self.pid)
        self.ready_at = self.idle_since = now
        self.setup_seconds = payload["setup_seconds"]
        self.nodeids = frozenset(protocol.split_nodeids(payload["nodeids"]))
        self.collect_errors = list(payload["collect_errors"])

    def start_failed(self, traceback: str) -> None:
        """START_FAILED: its session could not be built."""
        if self.ready_at is not None:
            raise ReplicaProtocolError(f"said {protocol.START_FAILED!r} after it was ready")
        self.cause = Ending(EndKind.START_FAILED, traceback)

    def served_all(self) -> None:
        """Its final WORKEROUTPUT came (a run-scoped replica sends it once, after tearing its
        session's fixtures down): at the end of a run it has nothing more to say."""
        if not self.persistent:
            self.served = True

    @property
    def only_exiting(self) -> bool:
        """Served everything and holds no test: only its process has yet to exit."""
        return self.served and not self.in_flight

    def session_ending(self, now: float) -> None:
        """STOPPED_EARLY was handled: its session's teardown runs from ``now``, bounded by
        reuse_teardown_timeout like a test's."""
        self.teardown_since = now

    def log_out_of_reach(self) -> None:
        """It runs on another machine: its log cannot be quoted in crash reports."""
        self.log_path = None

    def session_finished(self, exit_code: int | None = None) -> None:
        """FINISHED: its session is torn down; its link closes next."""
        self.said_finished = True
        self.exit_code = exit_code

    @property
    def alive(self) -> bool:
        """Starting or serving, not asked to stop: counts as live capacity."""
        return self.state in (ReplicaState.STARTING, ReplicaState.READY)

    @property
    def accepting(self) -> bool:
        """Ready, not asked to stop: may be given work."""
        return self.state is ReplicaState.READY

    # -- work --------------------------------------------------------------------------------

    def send(self, message: protocol.Message) -> bool:
        """Send a message; False when the link is already gone (the close event follows)."""
        return self.link.send(message)

    def assign(
        self, nodeids: list[str], now: float | None = None, *, then: str | None = None
    ) -> None:
        """Append tests to its queue (RUN) at ``now``; ``then``: the session's test after them
        (NEXT, one test at a time), whether it runs here or not."""
        if not self.accepting:
            raise ReplicaStateError(f"replica {self.id} is {self.state.value}: it takes no work")
        if not self.in_flight and now is not None:
            self.head_since = now
        self.in_flight.extend(nodeids)
        self._drained = False
        self.idle_since = None
        if then is not None:
            self.send(protocol.next_test(then))
        self.send(protocol.run(nodeids))

    def drain(self) -> None:
        """Run what you hold without waiting for more (DRAIN), once per batch."""
        if not self._drained:
            self._drained = True
            self.send(protocol.drain())

    def cancel(self, now: float) -> list[str]:
        """Ask the replica to drop what it has not started; returns those nodeids. A test it
        has not announced may have begun already: it is dropped too, and what the replica
        says of it later is not shown (as if it had not run, as in plain pytest), unless it
        is a pass it held back that had ended before ``now`` (``ended_before_cancel``)."""
        dropped = self._take_held()
        self.cancelled.update(dropped)
        if self.cancelled_at is None:
            self.cancelled_at = now
        self.send(protocol.cancel())
        return dropped

    def was_cancelled(self, nodeid: str) -> bool:
        return nodeid in self.cancelled and nodeid not in self.in_flight

    def ended_before_cancel(self, nodeid: str, ended: float | None) -> bool:
        """A cancelled test whose pass it held back (``replica/held.py``) had ended before the
        cancel: it ran, and would have been reported had it come alone. It is in flight again,
        to be reported; False for any other cancelled test."""
        if (
            ended is None
            or self.cancelled_at is None
            or ended > self.cancelled_at
            or not self.was_cancelled(nodeid)
        ):
            return False
        self.cancelled.discard(nodeid)
        self.in_flight.appendleft(nodeid)
        return True

    def open_held(self) -> None:
        """READY: the held file exists (the replica made it before collecting); keep it open."""
        if self.held_path is not None and self.held_file is None:
            try:
                self.held_file = open(self.held_path, "rb")
            except OSError:
                self.held_file = None

    def presume_running(self) -> None:
        """It ended without announcing a test: tests run in the order sent, so the first one
        it holds is the one it was running (quick tests are not announced, see
        ``protocol.ANNOUNCE_SECONDS``); its setup is presumed done."""
        if (
            self.current is None
            and not self.running
            and self.in_flight
            and self.ready_at is not None
            and not self.said_finished  # it ended its session: it was running nothing
        ):
            self.current = self.in_flight[0]
            self.running[self.current] = self.idle_since or self.started_at
            self.current_phases = ["setup"]
            self.current_logged = False

    @property
    def unstarted(self) -> int:
        """Tests it holds beyond those it may be running (the first one: quick tests are not
        announced, or an async batch's announced ones)."""
        return max(0, len(self.in_flight) - max(1, len(self.running)))

    def waits_for_work(self, now: float) -> None:
        """It holds one test, not begun: it waits for a next one or the word to finish, which
        its environment holds back while other replicas' tests may still move to it. The wait
        is not that test's time (its timeout, the mean)."""
        if len(self.in_flight) == 1 and not self.running:
            self.head_since = now

    def ask_steal(self, count: int) -> None:
        """Ask it to hand back up to ``count`` tests it has not started, from the end of what it
        holds (STEAL): another replica of its environment ran dry. RETURNED answers."""
        self.steal_asked = True
        self.send(protocol.steal(count))

    def returned(self, nodeids: list[str]) -> list[str]:
        """RETURNED: tests it handed back unrun, asked by STEAL or sent to it after it asked to
        be recycled. Returns those it still held, in order (after RECYCLE the controller has
        taken them back already): they run elsewhere."""
        self.steal_asked = False
        return self._take_held(set(nodeids))

    def give_back(self) -> list[str]:
        """Take back every test it holds and has not started, in the order they were sent
        (in transit ones included): they run elsewhere."""
        return self._take_held()

    def _take_held(self, only: set[str] | None = None) -> list[str]:
        """Remove from ``in_flight`` the tests it holds and has not started (of ``only``, if
        given); returns them in the order they were sent."""
        held = [
            n
            for n in self.in_flight
            if n != self.current and n not in self.running and (only is None or n in only)
        ]
        if held:
            taken = set(held)
            self.in_flight = deque(n for n in self.in_flight if n not in taken)
        return held

    def took(self, nodeid: str, now: float, *, logged: bool) -> None:
        """A test began: LOGSTART (``logged``), or STARTED for an async test of a concurrent
        batch (its LOGSTART, reports and LOGFINISH come together when it finishes)."""
        if self.ready_at is None or self.state is ReplicaState.ENDED:
            raise ReplicaProtocolError(f"started {nodeid} while {self.state.value}")
        if nodeid not in self.running:
            self.ran.append(nodeid)
            self.running[nodeid] = now
        if self.first_test_at is None:
            self.first_test_at = now
        if logged:
            self.current = nodeid
            self.current_phases = []
            self.current_logged = True

    def reported(self, when: str, passed: bool, warm: bool, duration: float, now: float) -> None:
        """A report of the current test's phase ``when`` arrived."""
        self.current_phases.append(when)
        if when == "call" or (when == "setup" and not passed):
            self.teardown_since = now  # its teardown phase starts now
        self.current_warm = warm
        if when == "setup" and not warm and self.setup_seconds:
            self.setup_seconds += duration  # a cold replica's first fixture setup

    def held_reported(self, nodeids: set[str]) -> None:
        """After it ended, the controller reported passes it had held back and not sent
        (``replica/held.py``): a timeout the controller named by the first test it held, one
        of those, names the first test left instead, the one that ran too long."""
        cause = self.cause
        if cause is not None and cause.test in nodeids:
            test = self.in_flight[0] if self.in_flight else None
            self.cause = dataclasses.replace(cause, test=test)

    def finished(self, nodeid: str, now: float) -> None:
        """LOGFINISH: the test's reports are all in."""
        if nodeid not in self.running:
            raise ReplicaProtocolError(f"finished {nodeid}, which it never started")
        self._done_with(nodeid, now)
        self.last_finished = nodeid

    def not_collected(self, nodeid: str, now: float) -> None:
        """UNKNOWN_NODEID: it holds no such test; the controller fails it."""
        self._done_with(nodeid, now)

    def reported_for(self, nodeid: str, now: float) -> None:
        """The controller reported the test itself (the replica stopped while running it):
        nothing more of it is expected."""
        self._done_with(nodeid, now)

    def _done_with(self, nodeid: str, now: float) -> None:
        if nodeid in self.in_flight:
            self.in_flight.remove(nodeid)
        self.running.pop(nodeid, None)
        self.teardown_since = None
        if self.current == nodeid:
            self.current = None
        self.tests_run += 1
        if self.head_since is not None:
            took = max(0.0, now - self.head_since)
            mean = self.mean_test_seconds
            self.mean_test_seconds = took if mean is None else 0.8 * mean + 0.2 * took
        self.head_since = now
        if not self.in_flight:
            self.idle_since = now

    # -- ending ------------------------------------------------------------------------------

    def retire(self, reason: str) -> None:
        """Ask it to finish what it holds and exit (SHUTDOWN); ``reason`` is kept for the
        summary. A replica still starting gets it too: the message waits in its inbox."""
        if self.state is ReplicaState.ENDED:
            raise ReplicaStateError(f"replica {self.id} has ended: it cannot retire")
        # A specific reason (recycle, stale, scaledown) says more than "end of run".
        if self.cause is None or (
            self.cause.kind is EndKind.RETIRED and self.cause.reason == "end of run"
        ):
            self.cause = Ending(EndKind.RETIRED, reason)
        if self.alive:
            self.state = ReplicaState.STOPPING
            self.send(protocol.shutdown())

    def kill(self, cause: Ending) -> None:
        """SIGKILL the process now, saying why; its link closes and the controller handles the
        rest. The first forced cause is kept: a second deadline adds nothing."""
        if not cause.forced:
            raise ValueError(f"a kill is forced, not {cause.kind.value}")
        if self.cause is None or not self.cause.forced:
            self.cause = cause
        self.link.kill()

    def ended(self, ending: Ending) -> None:
        """It is gone (or left warm): the final word on how, set once."""
        if self.ending is not None:
            raise ReplicaStateError(
                f"replica {self.id} already ended ({self.ending.kind.value}), now "
                f"{ending.kind.value}"
            )
        self.ending = ending
        self.state = ReplicaState.ENDED
        if self.held_file is not None:
            self.held_file.close()
            self.held_file = None
        # A test it was running runs no more: only live replicas' tests count as running.
        self.running.clear()
        self.current = None
        self.teardown_since = None
        self.in_flight.clear()

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
        # A crash's faulthandler dump, or the one a hung teardown leaves behind; maybe after
        # a detached replica's progress dots on the same line (its stdout is the log too).
        starts = [i for i, line in enumerate(text) if _dump_start(line) >= 0]
        if not starts:
            return "".join(text[-lines:]).rstrip()
        dump = text[starts[-1] :]
        dump[0] = dump[0][_dump_start(dump[0]) :]
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

    def retirement(self) -> Ending:
        """The ending of a replica that finished its session: retired, for the reason it was
        asked (the end of the run when nobody asked)."""
        cause = self.cause
        if cause is not None and cause.kind is EndKind.RETIRED:
            return cause
        return Ending(EndKind.RETIRED, "end of run")

    def let_exit(self) -> None:
        """It served everything (``only_exiting``): its process may finish its pytest session
        while the run reports; ``terminate`` reaps it later."""
        self.link.let_exit()

    def terminate(self, wait: float = EXIT_WAIT_SECONDS) -> None:
        """Ask, wait up to ``wait`` seconds, then kill, by pid (the link's end only)."""
        self.link.terminate(wait)

    def release(self) -> None:
        """End of the run (or a hand-back) for a persistent replica: disconnect, leaving it
        warm."""
        self.link.release()
        self.ended(Ending(EndKind.RELEASED))
