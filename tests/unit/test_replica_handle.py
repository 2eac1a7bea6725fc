"""The replica handle owns its state: transitions are methods, out-of-turn ones raise, and one
value (``Ending``) says how it ended."""

from __future__ import annotations

import queue

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import (
    Ending,
    EndKind,
    Replica,
    ReplicaProtocolError,
    ReplicaState,
    ReplicaStateError,
)
from tests.unit.fakes import FakeLink, ready, start_payload


def started() -> tuple[Replica, FakeLink]:
    link = FakeLink(7)
    replica = Replica("r0", "default", queue.SimpleQueue(), link)
    replica.start(start_payload("r0"))
    return replica, link


def test_ready_once_then_work_then_idle() -> None:
    replica, link = started()
    assert replica.state is ReplicaState.STARTING
    with pytest.raises(ReplicaStateError):
        replica.assign(["t.py::a"])
    replica.ready(ready(["t.py::a"], pid=99)[1], now=5.0)
    assert (replica.state, replica.pid, replica.idle_since) == (ReplicaState.READY, 99, 5.0)
    with pytest.raises(ReplicaProtocolError, match="twice"):
        replica.ready(ready(["t.py::a"])[1], now=6.0)
    replica.assign(["t.py::a"])
    assert link.sent[-1] == protocol.run(["t.py::a"])
    assert replica.idle_since is None
    replica.took("t.py::a", 7.0, logged=True)
    assert (replica.current, replica.running, replica.first_test_at) == (
        "t.py::a",
        {"t.py::a": 7.0},
        7.0,
    )
    replica.finished("t.py::a", 8.0)
    idle_since: float | None = replica.idle_since  # set again by the finish
    assert idle_since == 8.0
    assert (replica.tests_run, replica.current) == (1, None)
    assert not replica.in_flight
    assert not replica.running


def test_out_of_turn_messages_raise() -> None:
    replica, _ = started()
    with pytest.raises(ReplicaProtocolError, match="while starting"):
        replica.took("t.py::a", 1.0, logged=True)
    replica.ready(ready(["t.py::a"])[1], now=1.0)
    with pytest.raises(ReplicaProtocolError, match="never started"):
        replica.finished("t.py::a", 2.0)
    with pytest.raises(ReplicaProtocolError, match="after it was ready"):
        replica.start_failed("boom")


def test_retire_keeps_the_most_specific_reason_and_a_kill_beats_it() -> None:
    replica, link = started()
    replica.ready(ready([])[1], now=1.0)
    replica.retire("end of run")
    replica.retire("scaledown")
    assert replica.cause == Ending(EndKind.RETIRED, "scaledown")
    assert replica.state is ReplicaState.STOPPING
    assert link.names().count(protocol.SHUTDOWN) == 1, "SHUTDOWN is sent once"
    replica.retire("idle")
    assert replica.cause.reason == "scaledown", "the first specific reason stays"
    timeout = Ending(EndKind.KILLED, "timed out", test="t.py::a")
    replica.kill(timeout)
    replica.kill(Ending(EndKind.KILLED, "teardown"))
    assert replica.cause == timeout, "the first forced cause stays"
    assert link.killed
    with pytest.raises(ValueError, match="forced"):
        replica.kill(Ending(EndKind.RETIRED, "idle"))


def test_ended_once_and_clears_what_it_was_running() -> None:
    replica, _ = started()
    replica.ready(ready(["t.py::a"])[1], now=1.0)
    replica.assign(["t.py::a"])
    replica.took("t.py::a", 2.0, logged=True)
    replica.ended(Ending(EndKind.CRASHED, "signal SIGKILL (9)"))
    assert replica.state is ReplicaState.ENDED
    assert not replica.running
    assert not replica.in_flight
    assert replica.current is None
    with pytest.raises(ReplicaStateError, match="already ended"):
        replica.ended(Ending(EndKind.RETIRED, "end of run"))
    with pytest.raises(ReplicaStateError):
        replica.retire("idle")


def test_release_ends_a_persistent_replica_warm() -> None:
    link = FakeLink(7)
    replica = Replica("r0", "default", queue.SimpleQueue(), link, persistent=True)
    replica.attach("/nowhere/log")
    assert link.sent[0][0] == protocol.ATTACH
    assert replica.attached
    replica.release()
    assert link.released
    assert replica.ending == Ending(EndKind.RELEASED)


@pytest.mark.parametrize(
    ("ending", "label"),
    [
        (Ending(EndKind.RETIRED, "stale: conftest.py changed"), "stale: conftest.py changed"),
        (Ending(EndKind.CRASHED, "exit code 3"), "crash"),
        (Ending(EndKind.KILLED, "timed out"), "crash"),
        (Ending(EndKind.START_FAILED, "Traceback"), "start failure"),
        (Ending(EndKind.RELEASED), None),
        (Ending(EndKind.LEFT), None),
        (Ending(EndKind.ABANDONED), None),
    ],
)
def test_ending_label_for_the_summary(ending: Ending, label: str | None) -> None:
    assert ending.label == label
