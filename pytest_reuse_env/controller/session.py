"""The controller: routes marked tests to environments and replays what replicas report.

It runs in the pytest process the user started. Unmarked tests run here as usual; marked tests go
to their environment's replicas by nodeid, and every report that comes back is replayed through
pytest's own hooks (``pytest_runtest_logstart/logreport/logfinish``), so the terminal, junitxml,
``-x`` and ``--lf`` see ordinary reports.

Two ways to drive it:

- plain pytest: the controller owns ``pytest_runtestloop``; all marked tests are queued at once
  and replicas work in parallel while the unmarked tests run here;
- a pytest-xdist worker: xdist owns the loop and hands out one item at a time, so the controller
  answers ``pytest_runtest_protocol`` for marked items and waits for that one item.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Final, final

import execnet
import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.commands import stop_all
from pytest_reuse_env.controller.environment import Environment
from pytest_reuse_env.controller.launcher import ReplicaLauncher, stale_reason
from pytest_reuse_env.controller.replica import CHANNEL_CLOSED, Replica, ReplicaState
from pytest_reuse_env.controller.reporting import (
    ReportReplayer,
    log_excerpt,
    not_collected_message,
    warning_from_payload,
)
from pytest_reuse_env.controller.summary import (
    ReuseSummary,
    closing_line,
    environment_notes,
)
from pytest_reuse_env.controller.verify import ColdVerifier
from pytest_reuse_env.options import ReuseSettings
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.role import Role, role_of

#: How much longer than its timeout an async test of a concurrent batch may run before the
#: controller kills its replica (the replica cancels it itself first).
TIMEOUT_GRACE_SECONDS: Final = 5.0
#: The longest one wait for replica events lasts before the loop checks its deadlines.
POLL_SECONDS: Final = 0.5


@final
class ReuseController:
    """The pytest plugin object that exists when reuse is on, in the process that runs tests."""

    def __init__(
        self, config: pytest.Config, settings: ReuseSettings, summary: ReuseSummary | None
    ) -> None:
        self.config = config
        self.settings = settings
        self.summary = summary
        self.events: queue.Queue[tuple[Replica, protocol.Message]] = queue.Queue()
        self.group = execnet.Group()
        self.environments: dict[ReusePolicy, Environment] = {}
        self.routes: dict[str, Environment] = {}
        self.items: dict[str, pytest.Item] = {}
        # Labels ([r0 warm]) ride on report.node, which xdist sets and serializes itself.
        self.reports = ReportReplayer(config, self.items, labels=role_of(config) is Role.CONTROLLER)
        self.completed = self.reports.completed
        self.prewarm_errors: set[str] = set()
        self._cancelled = False
        self.launcher = ReplicaLauncher(config, self.events, self.group, settings=settings)
        self.verifier = (
            ColdVerifier(self.launcher)
            if config.getoption("reuse_verify_cold") and role_of(config) is Role.CONTROLLER
            else None
        )
        #: Persistent replicas released warm at the end of the run, for the closing line.
        self.kept_warm: list[Replica] = []
        # Inside an xdist worker, xdist owns the loop and gives one test at a time.
        self.feeding_one_at_a_time = role_of(config) is Role.XDIST_WORKER

    # -- collection --------------------------------------------------------------------------

    def collection_finished(
        self, session: pytest.Session, policies: dict[str, ReusePolicy]
    ) -> None:
        """Called by the plugin's router once collection is done and a test is routed."""
        if self.config.getoption("reuse_fresh") and not self.feeding_one_at_a_time:
            for line in stop_all(self.launcher.registry):
                self._verbose(f"reuse: {line}")
        if self.config.option.collectonly or not policies:
            return
        self.launcher.hosts.set_test_files(sorted({item.path for item in session.items}))
        for item in session.items:
            policy = policies.get(item.nodeid)
            if policy is not None:
                self.routes[item.nodeid] = self._environment(policy)
                self.items[item.nodeid] = item
        for environment in self.environments.values():
            if self.feeding_one_at_a_time:
                environment.warm_up(1)
            else:
                environment.submit(n for n, e in self.routes.items() if e is environment)

    def _environment(self, policy: ReusePolicy) -> Environment:
        environment = self.environments.get(policy)
        if environment is None:
            name = self._environment_name(policy)
            max_restarts = self.settings.max_restarts
            if max_restarts is None:
                max_restarts = 4 * policy.max_replicas
            key = None
            if policy.scope == "global" and not self.launcher.on_hosts(policy):
                if self.launcher.registry is not None:
                    key = self.launcher.environment_key(policy)
                else:
                    self.reports.warn(
                        f"scope=global is unavailable, so environment {name!r} ends with this "
                        f"run: {self.launcher.registry_problem}"
                    )
            environment = Environment(
                name,
                policy,
                self._launch,
                max_restarts=max_restarts,
                # A run's whole work is known up front unless xdist hands it out piecemeal;
                # persistent replicas are drained, never shut down, when it is done.
                closing=not self.feeding_one_at_a_time and key is None,
                serial=self.feeding_one_at_a_time,
                key=key,
            )
            self.environments[policy] = environment
        return environment

    def _environment_name(self, policy: ReusePolicy) -> str:
        if policy == self.settings.default_policy:
            return "default"
        for name, named in self.settings.named.items():
            if named == policy:
                return name
        return f"env{len(self.environments)}"

    def _launch(self, environment: Environment) -> Replica | None:
        return self.launcher.launch(environment.name, environment.policy, environment.key)

    # -- running -----------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if not self.routes or self.feeding_one_at_a_time:
            return None
        if session.testsfailed and not session.config.option.continue_on_collection_errors:
            raise session.Interrupted(
                f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''}"
                " during collection"
            )
        local = [item for item in session.items if item.nodeid not in self.routes]
        for index, item in enumerate(local):
            # A local test blocks this loop, so replicas get no new work while it runs: keep
            # ready replicas fed first; use the time replicas spend starting for local tests.
            while any(env.starved for env in self.environments.values()):
                self._pump(timeout=POLL_SECONDS)
                self._stop_if_asked(session)
            nextitem = local[index + 1] if index + 1 < len(local) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            self._pump(timeout=0)
            self._stop_if_asked(session)
        while not all(env.done for env in self.environments.values()):
            self._pump(timeout=POLL_SECONDS)
            self._stop_if_asked(session)
        self._stop_if_asked(session)
        if self.verifier is not None:
            self.verifier.run(self.config.pluginmanager.get_plugin("terminalreporter"))
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        environment = self.routes.get(item.nodeid)
        if environment is None:
            return None
        if environment.stop_reason is not None:  # it gave up earlier in this session
            self.reports.fail_unrun(item.nodeid, environment.stop_reason)
            return True
        environment.submit([item.nodeid])
        while item.nodeid not in self.completed:
            self._pump(timeout=POLL_SECONDS)
        if environment.key is not None and self.launcher.others_waiting(environment.key):
            # Another xdist worker (or run) waits for this environment's capacity: share it
            # test by test rather than hold it for the whole session.
            for replica in environment.hand_back():
                self.launcher.release(replica)
        return True

    def _stop_if_asked(self, session: pytest.Session) -> None:
        """``-x`` / ``--maxfail``: send nothing more, let in-flight tests finish, then stop."""
        if not (session.shouldfail or session.shouldstop):
            return
        if not self._cancelled:
            self._cancelled = True
            for environment in self.environments.values():
                environment.cancel()
        while not all(env.done for env in self.environments.values()):
            self._pump(timeout=POLL_SECONDS)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        raise session.Interrupted(session.shouldstop)

    def _pump(self, timeout: float) -> None:
        """Handle every event that is waiting (waiting at most ``timeout`` for the first)."""
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            event = None
        while event is not None:
            replica, (name, payload) = event
            self._handle(replica, name, payload)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        self._check_deadlines()
        for environment in self.environments.values():
            environment.pump()

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for environment in self.environments.values():
            timeout = self.settings.start_timeout
            if environment.key is not None:
                since = environment.waiting_since
                self.launcher.mark_waiting(environment.key, since is not None)
                if since is not None and not environment.live and now - since > timeout:
                    self._no_capacity(environment, timeout)
            for replica in environment.replicas:
                if replica.state is ReplicaState.STARTING and now - replica.started_at > timeout:
                    replica.start_failure = (
                        f"replica {replica.id} did not finish starting within {timeout:g} s"
                        " (reuse_start_timeout); killed"
                    )
                    replica.kill()
            for replica in environment.replicas:
                since = replica.teardown_since
                limit = self.settings.teardown_timeout
                if since is not None and now - since > limit and replica.crash_reason is None:
                    replica.crash_reason = (
                        f"teardown did not finish within {limit:g} s (reuse_teardown_timeout); "
                        "replica killed"
                    )
                    replica.kill()
            test_timeout = environment.policy.timeout
            if not test_timeout:
                continue
            # With concurrency the replica cancels an overrunning async test itself; the
            # controller steps in only if that did not happen (a blocked event loop).
            limit = test_timeout + (
                TIMEOUT_GRACE_SECONDS if environment.policy.concurrency > 1 else 0.0
            )
            for replica in environment.replicas:
                overran = [n for n, since in replica.running.items() if now - since > limit]
                if overran and replica.crash_reason is None:
                    replica.timed_out = overran[0]
                    replica.crash_reason = (
                        f"timed out after {test_timeout:g} s (reuse_timeout); replica killed"
                    )
                    replica.kill()

    def _no_capacity(self, environment: Environment, waited: float) -> None:
        """No replica could be had in time: max is held by other runs. Fail, do not hang."""
        registry = self.launcher.registry
        owners = sorted(
            {
                r.lease_owner
                for r in (registry.records() if registry else [])
                if r.environment == environment.key and r.lease_owner is not None
            }
        )
        reason = (
            f"no replica of environment {environment.name!r} became free within {waited:g} s "
            f"(reuse_start_timeout): its {environment.policy.max_replicas} replicas (max) are "
            f"leased by other pytest runs (pids {', '.join(map(str, owners)) or 'unknown'}); "
            "raise replicas or wait for those runs"
        )
        environment.waiting_since = None
        for nodeid in environment.give_up(reason):
            self.reports.fail_unrun(nodeid, reason)

    # -- replica events ----------------------------------------------------------------------

    def _handle(self, replica: Replica, name: str, payload: Any) -> None:
        if replica.state is ReplicaState.DEAD:
            return  # a replica this run let go (released, retired, killed): its last words
        environment = self._environment_of(replica)
        if name == protocol.READY:
            replica.mark_ready(payload)
            wanted = [n for n, env in self.routes.items() if env is environment]
            stale = stale_reason(replica, payload, wanted)
            if stale is not None:
                self._verbose(f"reuse: replica {replica.id} is stale ({stale}); starting afresh")
                environment.retire(replica, f"stale: {stale}")
                return
            for error in payload["prewarm_errors"]:
                if error not in self.prewarm_errors:
                    self.prewarm_errors.add(error)
                    self.reports.warn(f"replica {replica.id}: {error}")
            for nodeid in environment.replica_ready(replica):
                self.reports.fail_unrun(nodeid, not_collected_message(replica, nodeid))
        elif name == protocol.STARTED:
            replica.batch_test_started(payload["nodeid"])
            environment.test_started(replica)
        elif name == protocol.LOGSTART:
            replica.test_started(payload["nodeid"], tuple(payload["location"]))
            environment.test_started(replica)
            item = self.items[payload["nodeid"]]
            item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        elif name == protocol.REPORT:
            self._replay_report(replica, protocol.decode_report(payload))
        elif name == protocol.LOGFINISH:
            nodeid = payload["nodeid"]
            item = self.items[nodeid]
            item.ihook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
            environment.test_finished(replica, nodeid, warm=replica.current_warm)
            self.completed.add(nodeid)
        elif name == protocol.WARNING:
            self.config.hook.pytest_warning_recorded.call_historic(
                kwargs={
                    "warning_message": warning_from_payload(payload),
                    "when": "runtest",
                    "nodeid": payload["nodeid"],
                    "location": payload["location"],
                }
            )
        elif name == protocol.UNKNOWN_NODEID:
            nodeid = payload["nodeid"]
            replica.test_finished(nodeid)
            self.reports.fail_unrun(nodeid, not_collected_message(replica, nodeid))
        elif name == protocol.TEARDOWN_ERROR:
            self.reports.teardown_error(replica, payload["traceback"])
        elif name == protocol.RECYCLE:
            self._verbose(
                f"reuse: recycling replica {replica.id} after {payload['nodeid']}: "
                f"{payload['detail']}"
            )
            environment.take_back(replica)
            environment.retire(replica, f"recycle ({payload['kind']})")
        elif name == protocol.RETURNED:
            environment.take_back(replica)  # already requeued at RECYCLE: nothing left
        elif name == protocol.START_FAILED:
            replica.start_failure = payload["traceback"]
        elif name == protocol.FINISHED:
            replica.finished = True
        elif name == CHANNEL_CLOSED:
            self._replica_closed(environment, replica)

    def _verbose(self, line: str) -> None:
        """A line for ``-v`` users: why a replica was retired or started."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.option.verbose > 0:
            reporter.ensure_newline()
            reporter.write_line(line)

    def _environment_of(self, replica: Replica) -> Environment:
        for environment in self.environments.values():
            if replica in environment.replicas:
                return environment
        raise LookupError(replica)

    def _replay_report(self, replica: Replica, data: dict[str, Any]) -> None:
        report = self.reports.rebuild(data)
        if self.verifier is not None:
            self.verifier.record(report, replica, self._environment_of(replica).policy)
        replica.current_phases.append(report.when or "")
        if report.when == "call" or (report.when == "setup" and not report.passed):
            replica.teardown_since = time.monotonic()  # its teardown phase starts now
        replica.current_warm = bool(data.get(protocol.REPORT_WARM))
        if report.when == "setup" and not replica.current_warm and replica.setup_seconds:
            replica.setup_seconds += report.duration  # a cold replica's first fixture setup
        self.reports.replay(report, replica)

    def _replica_closed(self, environment: Environment, replica: Replica) -> None:
        if replica.state is ReplicaState.DEAD:
            return
        if replica.finished:
            replica.terminate()
            environment.replica_retired(replica)
            return
        was_ready = replica.ready_at is not None
        if replica.attached and not was_ready and replica.start_failure is None:
            # A warm replica dropped the connection before answering (another client held it
            # a moment longer, or it retired meanwhile): not a failure, lease again.
            replica.mark_dead()
            environment.replicas.remove(replica)
            return
        if replica.start_failure is not None:
            # It said why it failed and may still be running: end it, then say how it ended.
            replica.terminate(wait=2.0)
            how = replica.exit_description(wait=0)
        else:
            how = replica.exit_description()
            replica.terminate(wait=0.5)
        current = replica.current
        phases = list(replica.current_phases)
        environment.replica_gone(replica, started=was_ready)
        if not was_ready:
            reason = (
                f"replica {replica.id} (pid {replica.pid}) could not start ({how}):\n"
                f"{replica.start_failure or 'no traceback: the process ended early'}"
                f"{log_excerpt(replica)}"
            )
            environment.last_start_failure = reason
            dropped = self.launcher.host_failed(replica, replica.start_failure or how)
            if dropped is not None:  # a configured host: the others take its share
                self.reports.warn(dropped[0])
                if dropped[1]:
                    return
            if not environment.ever_ready or environment.crash_loop or dropped is not None:
                for nodeid in environment.give_up(reason):
                    self.reports.fail_unrun(nodeid, reason)
            return
        running = list(replica.running)
        if current is not None and current not in running:
            running.insert(0, current)
        for nodeid in running:
            why = replica.crash_reason or how
            if replica.timed_out not in (None, nodeid):
                why = f"{replica.timed_out} {why}"
            others = [n for n in running if n != nodeid]
            together = f" (running concurrently with {', '.join(others)})" if others else ""
            message = (
                f"replica {replica.id} (pid {replica.pid}) crashed while running "
                f"{nodeid}{together}: {why}{log_excerpt(replica)}"
            )
            if nodeid == current:
                self.reports.crash(nodeid, phases, message, replica, logged_start=True)
            else:  # a concurrent test: announced, not yet logged
                self.reports.crash(nodeid, ["setup"], message, replica, logged_start=False)
        if environment.crash_loop:
            reason = (
                f"not run: environment {environment.name!r} stopped after "
                f"{environment.restarts} replica crashes (limit reuse_max_restarts="
                f"{environment.max_restarts})"
            )
            for nodeid in environment.give_up(reason):
                self.reports.fail_unrun(nodeid, reason)

    # -- the end -----------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if interrupted:
            self.shutdown(2.0, interrupted=True)
        else:
            self.shutdown(self.settings.teardown_timeout)
        snapshots = [
            env.snapshot(
                environment_notes(
                    env,
                    [self.items[n] for n, e in self.routes.items() if e is env],
                    feeders=None if self.feeding_one_at_a_time else 1,
                    on_hosts=self.launcher.on_hosts(env.policy),
                )
            )
            for env in self.environments.values()
        ]
        if self.feeding_one_at_a_time:
            workeroutput = self.config.workeroutput  # type: ignore[attr-defined]
            workeroutput[protocol.WORKEROUTPUT_KEY] = snapshots
        elif self.summary is not None:
            self.summary.add_snapshots(snapshots)

    def shutdown(self, wait: float, *, interrupted: bool = False) -> None:
        """Ask every replica to finish, wait (bounded) for them, then kill what is left;
        persistent replicas are released warm instead."""
        for environment in self.environments.values():
            for replica in environment.shutdown():
                self.launcher.release(replica)
                self.kept_warm.append(replica)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(
            r.state is not ReplicaState.DEAD
            for env in self.environments.values()
            for r in env.replicas
        ):
            try:
                replica, (name, payload) = self.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if replica.state is ReplicaState.DEAD:
                continue  # released warm (its close is our own disconnect) or already ended
            if name == CHANNEL_CLOSED:
                replica.terminate()
                self._environment_of(replica).replica_retired(replica)
            else:
                # Late reports, warnings and teardown errors are replayed like any other.
                self._handle(replica, name, payload)
        for environment in self.environments.values():
            for replica in environment.replicas:
                if replica.state is not ReplicaState.DEAD:
                    replica.terminate(wait=1.0)
                    if not interrupted:
                        self.reports.warn(
                            f"replica {replica.id} (pid {replica.pid}) did not finish tearing "
                            f"down its fixtures within {wait:g} s (reuse_teardown_timeout); "
                            f"killed{log_excerpt(replica)}"
                        )

    def pytest_unconfigure(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.kept_warm and reporter is not None:
            # After pytest's own last line: what stays running, for how long, how to stop it.
            reporter.write_line(closing_line(self.kept_warm, list(self.environments.values())))
        # Ctrl-C or an internal error may skip sessionfinish: never leave a process behind.
        for environment in self.environments.values():
            for replica in environment.replicas:
                if replica.state is not ReplicaState.DEAD:
                    replica.terminate(wait=1.0)
