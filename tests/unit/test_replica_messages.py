"""The replica side's dispatch table: every message a controller may send has a handler, and
a name it does not know ends the session with the reason (STOPPED_EARLY), never a silent drop."""

from __future__ import annotations

import queue
from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica.session import ReplicaSession, UnknownMessage
from tests.unit.fakes import start_payload


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[protocol.Message] = []

    def send(self, message: protocol.Message) -> None:
        self.sent.append(message)


def replica_session() -> tuple[ReplicaSession, FakeChannel]:
    channel = FakeChannel()
    return ReplicaSession(channel, queue.SimpleQueue(), start_payload("r0")), channel


def test_every_controller_message_after_start_has_a_handler() -> None:
    replica, _ = replica_session()
    expected = (protocol.CONTROLLER_MESSAGES - {protocol.START}) | {protocol.CHANNEL_CLOSED}
    assert set(replica._handlers) == expected


def test_queue_messages_change_what_it_will_run() -> None:
    replica, _ = replica_session()
    replica._handle(protocol.run(["t.py::a", "t.py::b"]))
    assert list(replica.pending) == ["t.py::a", "t.py::b"]
    assert not replica.final
    replica._handle(protocol.drain())
    assert replica.final
    replica._handle(protocol.cancel())
    assert list(replica.pending) == []
    replica._handle(protocol.shutdown())
    assert replica.shutting_down


def test_steal_hands_back_the_last_tests_not_started() -> None:
    replica, channel = replica_session()
    replica._handle(protocol.run([f"t.py::{n}" for n in "abcde"]))
    replica._handle(protocol.steal(2))
    assert list(replica.pending) == ["t.py::a", "t.py::b", "t.py::c"]
    assert channel.sent[-1] == protocol.returned(["t.py::d", "t.py::e"])
    replica._handle(protocol.steal(10))  # it ran ahead: all that is left, possibly none
    assert list(replica.pending) == []
    assert channel.sent[-1] == protocol.returned(["t.py::a", "t.py::b", "t.py::c"])
    replica._handle(protocol.steal(1))
    assert channel.sent[-1] == protocol.returned([])


@pytest.mark.parametrize("message", [("frobnicate", None), protocol.start({})])  # type: ignore[typeddict-item]
def test_an_unknown_message_is_an_error_not_a_silent_drop(message: Any) -> None:
    replica, channel = replica_session()
    with pytest.raises(UnknownMessage, match=repr(message[0])):
        replica._handle(message)
    assert list(replica.pending) == []
    assert channel.sent == []
