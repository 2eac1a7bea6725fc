"""xdist's node hooks around replica leases (controller/nodes.py), with a fake replica."""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.nodes import (
    COV_PLUGIN,
    ReplicaNodes,
    WorkerNode,
    loop_owner,
    replica_args,
)
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


# -- pytest-cov --------------------------------------------------------------------------------


class FakeCentral:
    """pytest-cov's central controller where ``DistMaster.testnodedown`` looks (no node
    methods: the run is not distributed)."""

    def __init__(self, topdir: str) -> None:
        self.topdir = topdir
        self.failed_workers: list[Any] = []
        self.node_descs: set[str] = set()
        self.cov = types.SimpleNamespace(config=types.SimpleNamespace(paths={}))

    @staticmethod
    def get_node_desc(platform: str, version_info: tuple[int, ...]) -> str:
        return f"platform {platform}, python {version_info[:2]}"


class FakeCovPlugin:
    def __init__(self, controller: FakeCentral, disabled: bool = False) -> None:
        self.cov_controller = controller
        self._disabled = disabled


@pytest.fixture
def central(config: pytest.Config, tmp_path: Path) -> FakeCentral:
    pytest.importorskip("pytest_cov")
    controller = FakeCentral(str(tmp_path))
    config.pluginmanager.register(FakeCovPlugin(controller), COV_PLUGIN)
    return controller


def test_a_replica_that_never_served_is_no_failed_coverage_worker(
    config: pytest.Config, central: FakeCentral
) -> None:
    """Still starting when the run's tests were done, its start fails while the run waits for
    the serving replica's data: it ran nothing, so pytest-cov must not list it as a worker that
    failed to return data; other plugins still see it go down."""
    recorder = Recorder()
    config.pluginmanager.register(recorder)
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    served = FakeReplica("r0", state=ReplicaState.STOPPING)
    starting = FakeReplica("r1", state=ReplicaState.STARTING)
    nodes.workerinput(served.id, 2)
    nodes.workerinput(starting.id, 2)
    nodes.replica_event(handle(served), protocol.READY, {})

    def pump(timeout: float) -> None:
        nodes.replica_event(handle(starting), protocol.CHANNEL_CLOSED, None)
        nodes.replica_event(handle(served), protocol.WORKEROUTPUT, {"cov_worker_node_id": "gw0"})

    nodes.end_leases([handle(served), handle(starting)], pump=pump, wait=1.0)
    assert central.failed_workers == []
    assert central.node_descs  # the served replica's lease was combined
    assert ("down", "gw1", ({}, "replica r1 ended unexpectedly")) in recorder.calls


def test_a_replica_that_served_and_crashed_is_a_failed_coverage_worker(
    config: pytest.Config, central: FakeCentral
) -> None:
    nodes = ReplicaNodes(config, Role.CONTROLLER)
    replica = FakeReplica("r0")
    nodes.workerinput(replica.id, 1)
    nodes.replica_event(handle(replica), protocol.READY, {})
    nodes.replica_event(handle(replica), protocol.CHANNEL_CLOSED, None)
    assert [n.replica_id for n in central.failed_workers] == ["r0"]


def test_replicas_append_to_coverage_data_never_erase_it(
    config: pytest.Config, tmp_path: Path
) -> None:
    """A replica's pytest-cov starts centrally (it erases ``.coverage`` unless appending)
    before it learns it is a worker: a replica still starting while the run combines would
    delete the run's data."""
    assert replica_args(config) == []  # no pytest-cov measuring: nothing to add
    controller = FakeCentral(str(tmp_path))
    config.pluginmanager.register(FakeCovPlugin(controller, disabled=True), COV_PLUGIN)
    assert replica_args(config) == []  # --no-cov: the replica's is off too
    config.pluginmanager.unregister(name=COV_PLUGIN)
    config.pluginmanager.register(FakeCovPlugin(controller), COV_PLUGIN)
    assert replica_args(config) == ["--cov-append"]
