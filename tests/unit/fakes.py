"""Fakes for unit tests of the controller: a clock, a link, pytest items and config, and a
harness that wires the real ``Environment``, ``Replica``, ``ReplicaEvents`` and
``ReportReplayer`` to them, so a test plays the replica's side message by message."""

from __future__ import annotations

import queue
from typing import Any, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller import outcomes
from pytest_reuse_env.controller.dispatch import ReplicaEvents
from pytest_reuse_env.controller.environment import Environment
from pytest_reuse_env.controller.launch.base import Deliver
from pytest_reuse_env.controller.replica import Replica
from pytest_reuse_env.controller.reporting import ReportReplayer
from pytest_reuse_env.policy import ReusePolicy


@final
class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@final
class FakeLink:
    """A link to no process: records what the controller sends and does."""

    def __init__(self, pid: int) -> None:
        self.pid: int | None = pid
        self.from_spare = False
        self.sent: list[protocol.Message] = []
        self.deliver: Deliver | None = None
        self.killed = False
        self.terminated = False
        self.released = False
        self.let_go = False
        self.exit = "signal SIGKILL (9)"

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        self.sent.append(first)
        self.deliver = deliver

    def send(self, message: protocol.Message) -> bool:
        self.sent.append(message)
        return True

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def exit_description(self, wait: float) -> str:
        return self.exit

    def kill(self) -> None:
        self.killed = True

    def let_exit(self) -> None:
        self.let_go = True

    def terminate(self, wait: float) -> None:
        self.terminated = True

    def release(self) -> None:
        self.released = True


@final
class Hook:
    """What pytest's hooks were called with, in order: (hook name, nodeid, report)."""

    def __init__(self, calls: list[tuple[str, str, Any]]) -> None:
        self._calls = calls
        #: (hook name, location) of every logstart and logfinish.
        self.locations: list[tuple[str, object]] = []

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self._calls.append(("logstart", nodeid, None))
        self.locations.append(("logstart", location))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._calls.append(("logreport", report.nodeid, report))

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self._calls.append(("logfinish", nodeid, None))
        self.locations.append(("logfinish", location))


@final
class FakeItem:
    def __init__(self, nodeid: str, hook: Hook) -> None:
        self.nodeid = nodeid
        self.location = (nodeid.partition("::")[0], 1, nodeid.partition("::")[2])
        self.keywords = {nodeid.partition("::")[2]: 1}
        self.ihook = hook


@final
class Historic:
    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._calls = calls

    def call_historic(self, kwargs: dict[str, Any]) -> None:
        self._calls.append(kwargs)


@final
class ConfigHook:
    def __init__(self, warnings: list[dict[str, Any]]) -> None:
        self.pytest_warning_recorded = Historic(warnings)

    def pytest_report_from_serializable(self, config: object, data: dict[str, Any]) -> Any:
        return pytest.TestReport._from_json(data)


@final
class Option:
    capture = "fd"


@final
class NoPlugins:
    """A plugin manager with no terminal reporter: replays write nothing themselves."""

    def get_plugin(self, name: str) -> None:
        return None


class FakeConfig:
    def __init__(self, warnings: list[dict[str, Any]]) -> None:
        self.hook = ConfigHook(warnings)
        self.option = Option()
        self.pluginmanager = NoPlugins()


def phase(nodeid: str, when: str, outcome: str = "passed", *, warm: bool = False) -> Any:
    """A replica's REPORT message for one phase of a test."""
    report = pytest.TestReport(
        nodeid=nodeid,
        location=(nodeid.partition("::")[0], 1, nodeid.partition("::")[2]),
        keywords={},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=None if outcome == "passed" else "assert False",
        when=when,  # type: ignore[arg-type]
        duration=0.25,
    )
    data = report._to_json()
    data[protocol.REPORT_WARM] = warm
    return protocol.report(data)


def ready(nodeids: list[str], *, setup_seconds: float = 2.0, pid: int = 4242) -> Any:
    return protocol.ready(
        pid=pid,
        nodeids=nodeids,
        collect_errors=[],
        setup_seconds=setup_seconds,
        prewarm_errors=[],
        tests_run=0,
        changed_files=[],
    )


def start_payload(replica_id: str) -> protocol.StartPayload:
    return {
        "replica_id": replica_id,
        "args": [],
        "invocation_dir": "/nowhere",
        "sys_path": [],
        "main": {"spec": None, "file": None, "argv": []},
        "basetemp": "/nowhere/tmp",
        "log_path": "/nowhere/replica.log",
        "policy": ReusePolicy(replicas=1).payload(),
        "hygiene": {"leaks": "off", "ignore": [], "memory_mib": 0.0},
        "teardown_timeout": 30.0,
        "option_overrides": {},
    }


@final
class Run:
    """One environment of a controller, its replicas on fake links, driven by hand."""

    def __init__(
        self,
        nodeids: list[str],
        policy: ReusePolicy | None = None,
        *,
        max_restarts: int = 4,
        closing: bool = True,
        start_timeout: float = 60.0,
        teardown_timeout: float = 30.0,
        replica_limit: int | None = None,
        watching: bool = False,
    ) -> None:
        self.nodeids = nodeids
        self.clock = FakeClock()
        self.events: queue.SimpleQueue[tuple[Replica, protocol.Message]] = queue.SimpleQueue()
        self.calls: list[tuple[str, str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.said: list[str] = []
        hook = Hook(self.calls)
        items: dict[str, Any] = {nodeid: FakeItem(nodeid, hook) for nodeid in nodeids}
        self.reports = ReportReplayer(FakeConfig(self.warnings), items, labels=True)  # type: ignore[arg-type]
        self.replicas: list[Replica] = []
        self.start_timeout = start_timeout
        self.teardown_timeout = teardown_timeout
        self.environment = Environment(
            "default",
            policy or ReusePolicy(replicas=1, scope="run"),
            self._launch,
            max_restarts=max_restarts,
            closing=closing,
            clock=self.clock,
            replica_limit=replica_limit,
            watching=watching,
        )
        self.dispatcher = ReplicaEvents(
            lambda: [self.environment],
            self.reports,
            self.clock,
            wanted=lambda env: list(nodeids),
            stale=lambda replica, payload, wanted: None,
            host_failed=lambda replica, reason: None,
            say=self.said.append,
        )

    def _launch(self, environment: Environment) -> Replica:
        replica_id = f"r{len(self.replicas)}"
        replica = Replica(
            replica_id, environment.name, self.events, FakeLink(100 + len(self.replicas))
        )
        replica.start(start_payload(replica_id))
        self.replicas.append(replica)
        return replica

    def link(self, replica: Replica) -> FakeLink:
        assert isinstance(replica.link, FakeLink)
        return replica.link

    def say(self, replica: Replica, *messages: protocol.Message) -> None:
        """The replica sends ``messages`` (on its link's reader thread), then the controller's
        loop handles every waiting event, as ``ReuseController._pump`` does."""
        deliver = self.link(replica).deliver
        assert deliver is not None
        for message in messages:
            deliver(message)
        self.pump()

    def pump(self) -> None:
        while True:
            try:
                replica, message = self.events.get_nowait()
            except queue.Empty:
                break
            self.dispatcher.dispatch(replica, message)
        outcomes.enforce_deadlines(
            self.environment,
            self.clock.monotonic(),
            start_timeout=self.start_timeout,
            teardown_timeout=self.teardown_timeout,
        )
        self.environment.pump()

    def run_test(self, replica: Replica, nodeid: str, *, warm: bool = False) -> None:
        location = (nodeid.partition("::")[0], 1, nodeid.partition("::")[2])
        self.say(
            replica,
            protocol.logstart(nodeid, location),
            phase(nodeid, "setup", warm=warm),
            phase(nodeid, "call", warm=warm),
            phase(nodeid, "teardown", warm=warm),
            protocol.logfinish(nodeid, location),
        )

    def reports_of(self, nodeid: str) -> list[pytest.TestReport]:
        return [report for hook, n, report in self.calls if hook == "logreport" and n == nodeid]

    def failed(self, nodeid: str) -> list[pytest.TestReport]:
        return [report for report in self.reports_of(nodeid) if report.failed]

    def sent_runs(self, replica: Replica) -> list[str]:
        """Every nodeid the controller sent the replica, in order."""
        return [
            n
            for name, payload in self.link(replica).sent
            if name == protocol.RUN
            for n in protocol.split_nodeids(payload)
        ]


def started_run(nodeids: list[str], **kwargs: Any) -> Run:
    """A run with every test queued and its first replica READY (``Run``'s other arguments
    pass through)."""
    run = Run(nodeids, **kwargs)
    run.environment.submit(nodeids)
    run.say(run.replicas[0], ready(nodeids))
    return run
