"""xdist's node hooks around replica leases (controller/nodes.py), with a fake replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.nodes import ReplicaNodes, WorkerNode, loop_owner
from pytest_reuse_env.controller.replica import Replica, ReplicaState
from pytest_reuse_env.role import Role


@dataclass
class FakeReplica:
    id: str
    persistent: bool = False
    said_finished: bool = False
    state: ReplicaState = ReplicaState.READY

    def send(self, message: protocol.Message) -> bool:
        self.sent = message
        return True


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: WorkerNode) -> None:
        node.workerinput["recorded_seed"] = 7
        self.calls.append(("configure", node.gateway.id, None))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node: WorkerNode) -> None:
        self.calls.append(("ready", node.gateway.id, None))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: WorkerNode, error: object) -> None:
        self.calls.append(("down", node.gateway.id, (dict(node.workeroutput), error)))


#: Plugins that would only add noise here.
QUIET = ("-p", "no:randomly", "-p", "no:cov", "-p", "no:asyncio")


def handle(fake: FakeReplica) -> Replica:
    """The fake, typed as the handle it stands in for."""
    return cast(Replica, fake)


@pytest.fixture
def config(pytester: pytest.Pytester) -> pytest.Config:
    return pytester.parseconfigure(*QUIET)


def test_slots_are_the_lowest_free_and_the_run_uid_is_shared(config: pytest.Config) -> None:
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    first = nodes.workerinput("r0", 2)
    second = nodes.workerinput("r1", 2)
    assert (first["workerid"], second["workerid"]) == ("gw0", "gw1")
    assert first["testrunuid"] == second["testrunuid"] == nodes.testrunuid
    assert first["workercount"] == 2
    nodes.replica_event(handle(FakeReplica("r0")), protocol.WORKEROUTPUT, {})  # r0's lease ends
    assert nodes.workerinput("r2", 2)["workerid"] == "gw0"
    # A later lease of a replica that is still up ends its previous one first.
    assert nodes.workerinput("r1", 2)["workerid"] == "gw1"


def test_given_testrunuid_is_every_replicas(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    config = pytester.parseconfigure(
        "-p", "no:randomly", "-p", "no:cov", "-p", "no:asyncio", "--testrunuid=abc"
    )
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    assert nodes.workerinput("r0", 1)["testrunuid"] == "abc"


def test_hooks_see_each_lease_configured_ready_and_down(config: pytest.Config) -> None:
    recorder = Recorder()
    config.pluginmanager.register(recorder)
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    replica = FakeReplica("g-1", persistent=True)
    workerinput = nodes.workerinput(replica.id, 1)
    assert workerinput["recorded_seed"] == 7  # what plugins put in travels to the replica
    nodes.replica_event(handle(replica), protocol.READY, {})
    nodes.replica_event(handle(replica), protocol.READY, {})  # a second READY is no second node
    nodes.end_leases(
        [handle(replica)],
        pump=lambda timeout: nodes.replica_event(handle(replica), protocol.WORKEROUTPUT, {"k": 1}),
        wait=1.0,
    )
    assert replica.sent == protocol.end_lease()
    assert recorder.calls == [
        ("configure", "gw0", None),
        ("ready", "gw0", None),
        ("down", "gw0", ({"k": 1}, None)),
    ]
    nodes.finish()  # nothing is down twice
    assert len(recorder.calls) == 3


def test_a_replica_that_ends_unasked_goes_down_with_an_error(config: pytest.Config) -> None:
    recorder = Recorder()
    config.pluginmanager.register(recorder)
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    replica = FakeReplica("r0")
    nodes.workerinput(replica.id, 1)
    nodes.replica_event(handle(replica), protocol.READY, {})
    nodes.replica_event(handle(replica), protocol.CHANNEL_CLOSED, None)
    assert recorder.calls[-1] == ("down", "gw0", ({}, "replica r0 ended unexpectedly"))


def test_loop_owner_is_a_plugin_with_its_own_test_loop(config: pytest.Config) -> None:
    assert loop_owner(config) is None

    class OwnLoop:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtestloop(self, session: pytest.Session) -> Any:
            yield

    config.pluginmanager.register(OwnLoop(), "own-loop")
    assert loop_owner(config) == "own-loop"
