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

import json
import queue
from typing import Final, final

import execnet
import pytest

from pytest_reuse_env import collection_check, prestart, protocol
from pytest_reuse_env.controller import ordering, outcomes
from pytest_reuse_env.controller.clock import SYSTEM_CLOCK, Clock
from pytest_reuse_env.controller.dispatch import ReplicaEvents
from pytest_reuse_env.controller.environment import Environment
from pytest_reuse_env.controller.launch.collect import (
    by_file_only,
    files_of,
    loaded_conftests,
)
from pytest_reuse_env.controller.launcher import ReplicaLauncher, stale_reason
from pytest_reuse_env.controller.nodes import ReplicaNodes
from pytest_reuse_env.controller.perrun import RunOutputs
from pytest_reuse_env.controller.progress import SlowStarts
from pytest_reuse_env.controller.replica import Ending, EndKind, Replica, ReplicaState
from pytest_reuse_env.controller.reporting import LastLocalTeardown, ReportReplayer, log_excerpt
from pytest_reuse_env.controller.summary import (
    ReuseSummary,
    closing_line,
    environment_notes,
)
from pytest_reuse_env.controller.verify import ColdVerifier
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.registry import RegistryError
from pytest_reuse_env.role import Role, role_of
from pytest_reuse_env.settings import ReuseSettings, machine_cores

#: The longest one wait for replica events lasts before the loop checks its deadlines.
POLL_SECONDS: Final = 0.5
#: After Ctrl-C, how long replicas get to finish before they are killed (all at once).
INTERRUPT_WAIT_SECONDS: Final = 0.5


@final
class ReuseController:
    """The pytest plugin object that exists when reuse is on, in the process that runs tests."""

    def __init__(
        self,
        config: pytest.Config,
        settings: ReuseSettings,
        summary: ReuseSummary | None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = config
        self.clock = clock
        self.settings = settings
        self.summary = summary
        self.events: queue.SimpleQueue[tuple[Replica, protocol.Message]] = queue.SimpleQueue()
        self.group = execnet.Group()
        self.environments: dict[ReusePolicy, Environment] = {}
        self.routes: dict[str, Environment] = {}
        self.items: dict[str, pytest.Item] = {}
        self._marker_digests: dict[str, str] | None = None
        # Labels ([r0 warm]) ride on report.node, which xdist sets and serializes itself.
        self.reports = ReportReplayer(
            config,
            self.items,
            labels=role_of(config) is Role.CONTROLLER,
            current_test_only=role_of(config) is Role.XDIST_WORKER,
        )
        self.completed = self.reports.completed
        self._cancelled = False
        self.session: pytest.Session | None = None
        self.launcher = ReplicaLauncher(config, self.events, self.group, settings=settings)
        self.launcher.popen.spares = config.stash.get(prestart.SPARES, None)
        self.verifier = (
            ColdVerifier(self.launcher, clock)
            if config.getoption("reuse_verify_cold") and role_of(config) is Role.CONTROLLER
            else None
        )
        self.dispatcher = ReplicaEvents(
            self.environments.values,
            self.reports,
            clock,
            wanted=lambda env: [n for n, e in self.routes.items() if e is env],
            stale=self._stale,
            host_failed=self.launcher.host_failed,
            say=self._verbose,
            report_seen=self.verifier.record if self.verifier is not None else None,
        )
        #: xdist's node hooks around every lease, for plugins written for xdist workers.
        self.nodes = ReplicaNodes(config, role_of(config))
        self.launcher.workerinput = self.nodes.workerinput
        #: Other plugins' per-run data the replicas hand over with their leases (syrupy's).
        self.run_outputs = RunOutputs(config)
        #: Persistent replicas released warm at the end of the run, for the closing line.
        self.kept_warm: list[Replica] = []
        #: Run-scoped replicas that served everything and are ending their pytest session
        #: while this run reports: reaped in ``pytest_unconfigure``.
        self.exiting: list[Replica] = []
        #: Names a replica still starting after a few seconds, with its log's last line.
        self.slow_starts = SlowStarts(self._progress)
        self.in_xdist_worker = role_of(config) is Role.XDIST_WORKER
        # Inside an xdist worker, xdist owns the loop and gives one test at a time; so does
        # pytest's own loop when the order of tests matters (see ordering.py).
        self.feeding_one_at_a_time = self.in_xdist_worker
        #: Run-level notes for the reuse section (tests kept here, order kept).
        self.notes: list[str] = []
        #: ``--reuse-watch``: rounds in one session; replicas stay leased between them.
        self.watching = bool(config.getoption("reuse_watch", False))
        self.launcher.watching = self.watching
        self.launcher.files.enabled = not self.watching and by_file_only(config.args, config.option)
        if self.launcher.files.enabled:
            self.launcher.files.remembered(prestart.whole_run(config))
        self._collections = 0
        #: ``_every_file``, from the first collection (the plugin writes it in the hint).
        self.every_file: list[str] = []
        #: Environments started on the hint (``start_hinted``), and those of them no test was
        #: routed to (known once collected).
        self._hinted: list[Environment] = []
        self.unused: list[Environment] = []

    # -- collection --------------------------------------------------------------------------

    def collection_finished(
        self, session: pytest.Session, policies: dict[str, ReusePolicy]
    ) -> None:
        """Called by the plugin's router once collection is done and a test is routed (in
        watch mode, again for every round's items)."""
        self._collections += 1
        self.routes.clear()
        self.items.clear()
        self.reports.collected_again()
        self._marker_digests = None
        first = self._collections == 1
        if first and self.config.getoption("reuse_fresh") and not self.feeding_one_at_a_time:
            try:
                from pytest_reuse_env.controller.commands import stop_all  # --reuse-fresh only

                for line in stop_all(self.launcher.registry):
                    self._verbose(f"reuse: {line}")
            except RegistryError as exc:
                self.launcher.registry_access.give_up(exc)
        self.session = session
        if self.config.option.collectonly or not policies:
            self.launcher.files.known({}, [], self.clock.monotonic())
            if first:
                self.unused = list(self._hinted)
            return
        routed = (item for item in session.items if item.nodeid in policies)
        placement = ordering.keep_local(self.config, routed, xdist_worker=self.in_xdist_worker)
        if placement.note is not None:
            policies = {n: p for n, p in policies.items() if n not in placement.local}
            self._note(placement.note)
        in_order = ordering.in_order_reason(self.config, session.items)
        if in_order is not None and policies and not self.feeding_one_at_a_time:
            self.feeding_one_at_a_time = True
            self._note(ordering.in_order_note(in_order))
        self.launcher.hosts.set_test_files(sorted({item.path for item in session.items}))
        routed_to: dict[Environment, list[str]] = {}
        # Tests in a row mostly share one policy object: hashing it (a dataclass) for every
        # test was most of this loop.
        last_policy: ReusePolicy | None = None
        environment: Environment | None = None
        for item in session.items:
            policy = policies.get(item.nodeid)
            if policy is not None:
                if policy is not last_policy or environment is None:
                    last_policy, environment = policy, self._environment(policy)
                self.routes[item.nodeid] = environment
                routed_to.setdefault(environment, []).append(item.nodeid)
                self.items[item.nodeid] = item
        hint = first and not self.in_xdist_worker  # what the command's next run is told
        # Each environment's test files: for the lists and the hint only (an xdist worker or a
        # watch session's later round has no use for them).
        files = (
            {
                environment: files_of(self.items[n] for n in nodeids)
                for environment, nodeids in routed_to.items()
            }
            if hint or self.launcher.files.wants_lists
            else {}
        )
        if hint:
            self.every_file = self._every_file(files, session.items)
            self.unused = [env for env in self._hinted if env not in routed_to]
        if self.launcher.files.wants_lists:
            by_list = [e for e in routed_to if self.launcher.files.gets_list(e.name)]
            digests = self._digests() if by_list else {}
            self.launcher.files.known(
                {environment.name: listed for environment, listed in files.items()},
                loaded_conftests(self.config),
                self.clock.monotonic(),
                # Only for replicas that collect a list (not those collecting the whole run):
                # a digest of every test's markers costs this process before any test runs.
                expect={
                    environment.name: {n: digests[n] for n in routed_to[environment]}
                    for environment in by_list
                },
                modules=collection_check.project_modules(str(self.config.rootpath))
                if by_list
                else {},
            )
        for environment in self.environments.values():
            if self.feeding_one_at_a_time:
                environment.one_at_a_time()  # made while collecting, before this was known
                environment.warm_up(1)
            else:
                environment.submit(routed_to.get(environment, []))

    def _every_file(
        self, files: dict[Environment, list[str] | None], items: list[pytest.Item]
    ) -> list[str]:
        """The run-scoped environments on this machine with a routed test in every file this
        run collected (``ReusePolicy.describe``): the command's next run starts them at
        session start (``prestart.every_file``)."""
        candidates = [
            (environment, listed)
            for environment, listed in files.items()
            if listed
            and environment.policy.scope == "run"
            and not self.launcher.on_hosts(environment.policy)
        ]
        if not candidates:
            return []
        collected = files_of(items)
        return [e.policy.describe() for e, listed in candidates if listed == collected]

    def started_for_tests(self) -> int:
        """Run-scoped replicas started on this machine by the end of collection, but for
        those of a hinted environment no test was routed to (the command's next hint)."""
        unused = sum(len(env.history) for env in self.unused)
        return max(0, self.launcher.popen.launched - unused)

    def start_hinted(self, policy: ReusePolicy) -> None:
        """``start_early`` for an environment this command's last run had a routed test in
        every file of (``prestart.every_file``): its replicas collect the run's arguments. If
        no test is routed to it this time, it is left out of the summary and the next hint,
        like a spare nothing took (its replicas end as the environment is done)."""
        environment = self._environment(policy)
        self.start_early(policy, every_test=True)
        self._hinted.append(environment)

    def start_early(self, policy: ReusePolicy, *, every_test: bool = False) -> None:
        """Start (or, ``scope="global"``, attach) the replicas ``policy`` asks for at least (its
        minimum, within the machine's limit) while this process is still collecting, so they
        are ready (or nearly) when the tests are; on this machine only. Their READY waits in
        the event queue until collection is done, where it is checked against the collected
        tests like any other (a stale warm replica is replaced then). ``every_test``
        (``reuse_all``): every test is routed, so they collect the run's arguments at once,
        alongside this process, rather than wait for the list of their files."""
        if self.feeding_one_at_a_time or self.launcher.on_hosts(policy):
            return
        environment = self._environment(policy)
        if every_test:
            self.launcher.files.every_test(environment.name)
        # -x, --maxfail, --sw: the run will go one test at a time, on one replica (ordering.py).
        one = ordering.in_order_reason(self.config, ()) is not None
        environment.warm_up(1 if one else max(1, policy.min_replicas))

    def _stale(
        self, replica: Replica, ready: protocol.ReadyPayload, wanted: list[str]
    ) -> str | None:
        """Why a replica that answered READY may not serve (``stale_reason``), or how its
        collection of only its environment's files differs from this process's: then its
        environment's replicas collect the run's arguments from now on."""
        differs = ready.get("collection_differs")
        if differs is None:
            stale = stale_reason(replica, ready, wanted)
            if stale is None and "digests" in ready:  # a warm replica: marked as collected here?
                digests = self._digests()
                stale = collection_check.marked_otherwise(
                    {n: digests[n] for n in wanted if n in digests}, json.loads(ready["digests"])
                )
            return stale
        self.launcher.files.fall_back(
            replica.environment_name,
            f"one that collected only the files of its tests saw them otherwise ({differs})",
        )
        return f"its collection of only its tests' files differs: {differs}"

    def _digests(self) -> dict[str, str]:
        """Each routed test's marker digest (``collection_check.digests``), computed once per
        collection however many replicas and environments compare with it."""
        if self._marker_digests is None:
            self._marker_digests = collection_check.digests(self.items.values())
        return self._marker_digests

    def _note(self, note: str) -> None:
        if note not in self.notes:  # watch mode collects again each round
            self.notes.append(note)

    def _environment(self, policy: ReusePolicy) -> Environment:
        environment = self.environments.get(policy)
        if environment is None:
            name = self._environment_name(policy)
            on_hosts = self.launcher.on_hosts(policy)
            # Replicas on this machine: never more than it has cores (or reuse_replica_limit).
            limit = None if on_hosts else (self.settings.replica_limit or machine_cores())
            max_restarts = self.settings.max_restarts
            if max_restarts is None:
                max_restarts = 4 * min(policy.max_replicas, limit or policy.max_replicas)
            key = None
            if policy.scope == "global" and not on_hosts:
                if self.launcher.registry is not None:
                    key = self.launcher.environment_key(policy)
                self._warn_registry_problem()
            environment = Environment(
                name,
                policy,
                self._launch,
                max_restarts=max_restarts,
                # A run's whole work is known up front unless xdist hands it out piecemeal
                # or a watch session's next round may come; persistent replicas are drained,
                # never shut down, when it is done.
                closing=not self.feeding_one_at_a_time and key is None and not self.watching,
                serial=self.feeding_one_at_a_time,
                key=key,
                clock=self.clock,
                replica_limit=limit,
                watching=self.watching,
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
        replica = self.launcher.launch(environment.name, environment.policy, environment.key)
        self._warn_registry_problem()
        return replica

    def _warn_registry_problem(self) -> None:
        """Once a run does without the registry, say so once, with the path and the fix."""
        warning = self.launcher.registry_access.take_warning()
        if warning is not None:
            self.reports.warn(warning)

    # -- watch mode (controller/watch.py drives the rounds) ------------------------------------

    def begin_round(self) -> None:
        """A new round: forget the last one's stops and results, let replicas still starting
        finish (they may have imported files edited since), then ask every idle replica to
        catch up with the edits; the round's collection routes and submits its tests."""
        self._cancelled = False
        self.dispatcher.stopped_by = None
        self.completed.clear()
        while any(
            r.state is ReplicaState.STARTING
            for env in self.environments.values()
            for r in env.replicas
        ):
            self._pump(timeout=POLL_SECONDS)  # bounded: start deadlines are enforced there
        for environment in self.environments.values():
            environment.begin_round()

    def end_watch(self) -> None:
        """The watch session quits: run-scoped replicas finish as at the end of a run, and
        every lease ends (plugins such as pytest-cov get each replica's data)."""
        self._end_leases()

    def _end_leases(self) -> None:
        """The run's tests are done: every environment stops (``Environment.stop``: run-scoped
        replicas asked to finish, even one fed a test at a time that was never told the run was
        done), and every lease ends with its ``workeroutput`` (``nodes.end_leases``)."""
        for environment in self.environments.values():
            environment.stop()
        self.nodes.end_leases(self._replicas(), self._pump, self.settings.teardown_timeout)

    def between_rounds(self, timeout: float) -> None:
        """Handle replica events while the watcher waits (a crash, a late warning), without
        scaling: the replicas stay as the last round left them."""
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self.dispatcher.dispatch(*event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        self._check_deadlines()

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
        if not self.watching:  # a watch session's leases end when it quits (end_watch)
            self._end_leases()
        if self.verifier is not None:
            self.verifier.run(self.config.pluginmanager.get_plugin("terminalreporter"))
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> bool | None:
        environment = self.routes.get(item.nodeid)
        if environment is None:
            if nextitem is None and self.feeding_one_at_a_time and not self.watching:
                self._before_last_test(None, item.nodeid)  # the last test runs here
            return None
        if environment.stop_reason is not None:  # it gave up earlier in this session
            self.reports.fail_unrun(item.nodeid, environment.stop_reason)
            return True
        if nextitem is None and not self.watching:  # a watch session's rounds go on
            self._before_last_test(environment, item.nodeid)
        # One test at a time (pytest runs this hook for each): the replica is told which test
        # comes next, so this one's teardown leaves only what that one shares, as in plain
        # pytest, and an error there is this test's.
        environment.submit(
            [item.nodeid],
            then=nextitem.nodeid if nextitem is not None and self.feeding_one_at_a_time else None,
        )
        while item.nodeid not in self.completed:
            self._pump(timeout=POLL_SECONDS)
        self._raise_if_stopped_by_a_test()
        if environment.key is not None and self.launcher.others_waiting(environment.key):
            # Another xdist worker (or run) waits for this environment's capacity: share it
            # test by test rather than hold it for the whole session.
            for replica in environment.hand_back():
                self.launcher.release(replica)
        return True

    def _before_last_test(self, environment: Environment | None, nodeid: str) -> None:
        """The session's last test, fed one at a time (an xdist worker's last, or the last of
        a run that keeps its order): in plain pytest its teardown tears everything down and
        reports what fails there. The other run-scoped environments' replicas finish first
        (bounded by reuse_teardown_timeout), so that a finalizer of theirs that fails goes
        with this test's teardown; this test's replica runs it as its last
        (``Environment.last_test``), and one that runs here (``environment`` None) takes the
        errors in its own teardown report (``LastLocalTeardown``). In an xdist worker such an
        error had no test to go with and the run could end green."""
        others = [e for e in self.environments.values() if e is not environment]
        for other in others:
            other.last_test()
            other.pump()  # idle and not persistent: told to finish now
        deadline = self.clock.monotonic() + self.settings.teardown_timeout
        # Until each has torn down: its last word (WORKEROUTPUT) comes after any error.
        while self.clock.monotonic() < deadline and any(
            r.state is ReplicaState.STOPPING and not r.only_exiting
            for e in others
            for r in e.replicas
        ):
            self._pump(timeout=POLL_SECONDS)
        self.reports.last_test = nodeid
        if environment is not None:
            environment.last_test()
        elif self.reports.pending_teardown_errors:
            self.config.pluginmanager.register(
                LastLocalTeardown(self.reports), "reuse_last_local_teardown"
            )

    def _stop_if_asked(self, session: pytest.Session) -> None:
        """``-x`` / ``--maxfail``, or a test that interrupted its replica: send nothing more,
        let in-flight tests finish, then stop."""
        if not self._cancel_if_asked(session):
            return
        while not all(env.done for env in self.environments.values()):
            self._pump(timeout=POLL_SECONDS)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        self._raise_if_stopped_by_a_test()

    def _raise_if_stopped_by_a_test(self) -> None:
        """The run ends as plain pytest's would after a test's KeyboardInterrupt or
        pytest.exit in a replica, with the same exit code."""
        if self.dispatcher.stopped_by is None:
            return
        stopped, reason = self.dispatcher.stopped_by
        if stopped["kind"] == "exit":
            pytest.exit(reason, stopped["returncode"])
        raise KeyboardInterrupt(reason)

    def _cancel_if_asked(self, session: pytest.Session | None) -> bool:
        """Once the run should stop, hand out nothing more and drop what replicas hold and
        have not announced; True once stopping."""
        if session is None or not (
            session.shouldfail or session.shouldstop or self.dispatcher.stopped_by
        ):
            return False
        if not self._cancelled:
            self._cancelled = True
            for environment in self.environments.values():
                environment.cancel()
        return True

    def _pump(self, timeout: float) -> None:
        """Handle every event that is waiting (waiting at most ``timeout`` for the first)."""
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            event = None
        while event is not None:
            replica, message = event
            self._dispatch(replica, message)
            if not self._cancelled and not self.feeding_one_at_a_time:
                # At once (-x): a test queued behind the failure in this batch is not shown.
                self._cancel_if_asked(self.session)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        self._check_deadlines()
        for environment in self.environments.values():
            environment.pump()

    def _dispatch(self, replica: Replica, message: protocol.Message) -> None:
        if replica.state is not ReplicaState.ENDED:
            self.nodes.replica_event(replica, *message)  # xdist's node hooks see it first
            self.run_outputs.replica_event(replica, *message)
        self.dispatcher.dispatch(replica, message)

    def _replicas(self) -> list[Replica]:
        return [r for env in self.environments.values() for r in env.replicas]

    def _check_deadlines(self) -> None:
        now = self.clock.monotonic()
        for environment in self.environments.values():
            self.slow_starts.check(environment.replicas, now)
            timeout = self.settings.start_timeout
            if environment.key is not None:
                since = environment.waiting_since
                self.launcher.mark_waiting(environment.key, since is not None)
                if since is not None and not environment.live and now - since > timeout:
                    self._no_capacity(environment, timeout)
            outcomes.enforce_deadlines(
                environment,
                now,
                start_timeout=timeout,
                teardown_timeout=self.settings.teardown_timeout,
            )

    def _progress(self, line: str) -> None:
        """A progress line on the terminal (not an error, not a warning)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)

    def _no_capacity(self, environment: Environment, waited: float) -> None:
        """No replica could be had in time: max is held by other runs. Fail, do not hang."""
        registry = self.launcher.registry
        try:
            records = registry.records() if registry else []
        except RegistryError:
            records = []  # only for naming the holders
        owners = sorted(
            {
                r.lease_owner
                for r in records
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

    def _verbose(self, line: str) -> None:
        """A line for ``-v`` users: why a replica was retired or started."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and self.config.option.verbose > 0:
            reporter.ensure_newline()
            reporter.write_line(line)

    # -- the end -----------------------------------------------------------------------------

    # Before other plugins finish their session (syrupy, junitxml, the cache): late reports,
    # teardown errors and per-run plugin data from the replicas must reach them first.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        if self.feeding_one_at_a_time and not interrupted:  # xdist owned the loop
            self._end_leases()
        if interrupted:  # Ctrl-C: half a second for finalizers, then all are killed
            self.shutdown(INTERRUPT_WAIT_SECONDS, interrupted=True)
        else:
            self.shutdown(self.settings.teardown_timeout)
        self.nodes.finish()
        self.reports.warn_pending()
        if self.reports.teardown_errors and session.exitstatus == pytest.ExitCode.OK:
            # A finalizer that failed between tests (run one at a time, -x, a test's module
            # torn down when the next came, or at the end): plain pytest reports it as an
            # error of the test it ran after, so its run is never green.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            self._note(
                "exit status 1: a fixture's teardown failed in a replica between tests (see "
                "above), which plain pytest reports as an error"
            )
        ran = [r for env in self.environments.values() for r in env.history]
        self.run_outputs.merge(ran, self.reports.warn)
        figures = [
            env.figures(
                environment_notes(
                    env,
                    [self.items[n] for n, e in self.routes.items() if e is env],
                    feeders=self._feeders(),
                    on_hosts=self.launcher.on_hosts(env.policy),
                )
            )
            for env in self.environments.values()
            if env not in self.unused
        ]
        for note in self.launcher.files.notes:
            self._note(note)
        if self.launcher.files.fell_back and not self.in_xdist_worker:
            prestart.remember_whole_run(self.config, self.launcher.files.fell_back)
        if figures and self.notes:  # run-level notes travel with the first environment
            figures[0]["notes"] = [*self.notes, *figures[0]["notes"]]
        if self.in_xdist_worker:
            workeroutput = self.config.workeroutput  # type: ignore[attr-defined]
            workeroutput[protocol.WORKEROUTPUT_KEY] = figures
            if self.reports.teardown_errors:
                workeroutput[protocol.WORKEROUTPUT_TEARDOWN_FAILED] = True
        elif self.summary is not None:
            self.summary.add_figures(figures)
            if self.kept_warm:
                self.summary.closing = closing_line(
                    self.kept_warm, list(self.environments.values())
                )

    def _feeders(self) -> int:
        """How many pytest processes feed each environment: xdist's workers, or this one."""
        if self.in_xdist_worker:
            workerinput = self.config.workerinput  # type: ignore[attr-defined]
            return int(workerinput.get("workercount", 1))
        return 1

    def shutdown(self, wait: float, *, interrupted: bool = False) -> None:
        """Ask every replica to finish, wait (bounded) for them, then kill what is left;
        persistent replicas are released warm instead."""
        for environment in self.environments.values():
            for replica in environment.shutdown():
                if replica.ready_at is None and environment.stats.start_failures:
                    # Its environment's replicas fail to start: it would not become warm.
                    environment.retire(replica, "end of run")
                    continue
                self.launcher.release(replica)
                self.kept_warm.append(replica)
        # Late reports, warnings and teardown errors are replayed like any other; a link that
        # closes now is a replica that did as asked.
        self.dispatcher.closing = True
        deadline = self.clock.monotonic() + wait
        while self.clock.monotonic() < deadline and any(
            r.state is not ReplicaState.ENDED and not r.only_exiting
            for env in self.environments.values()
            for r in env.replicas
        ):
            left = deadline - self.clock.monotonic()
            try:
                replica, message = self.events.get(timeout=max(0.01, min(POLL_SECONDS, left)))
            except queue.Empty:
                continue
            self._dispatch(replica, message)
        for environment in self.environments.values():
            self.exiting.extend(environment.let_served_exit())
            for replica in list(environment.replicas):
                if replica.state is not ReplicaState.ENDED:
                    replica.terminate(wait=0.0 if interrupted else 1.0)
                    environment.replica_ended(
                        replica, Ending(EndKind.ABANDONED, "did not finish tearing down in time")
                    )
                    if not interrupted:
                        self.reports.warn(
                            f"replica {replica.id} (pid {replica.pid}) did not finish tearing "
                            f"down its fixtures within {wait:g} s (reuse_teardown_timeout); "
                            f"killed{log_excerpt(replica)}"
                        )

    def pytest_unconfigure(self) -> None:
        for replica in self.exiting:  # ask, wait, kill: it was asked in shutdown
            replica.terminate(wait=self.settings.teardown_timeout)
        self.exiting.clear()
        # Ctrl-C or an internal error may skip sessionfinish: never leave a process behind.
        for environment in self.environments.values():
            for replica in list(environment.replicas):
                if replica.state is not ReplicaState.ENDED:
                    replica.terminate(wait=1.0)
                    environment.replica_ended(
                        replica, Ending(EndKind.ABANDONED, "the run ended before it did")
                    )
