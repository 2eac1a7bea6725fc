"""The pytest plugin ``reuse_env``: options, the marker, and a router that loads the controller
only once a test is routed to reuse.

A run that routes nothing (reuse off, or no test marked and no ``reuse_all``) imports this
module, ``options``, ``settings``, ``markers``, ``policy``, ``role``, ``protocol``, ``prestart``
and ``warm`` only: never ``controller/`` nor ``replica/`` (unless a spare was started for it,
``prestart.py``: then the command routed tests last time).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, final

import pytest

from pytest_reuse_env import prestart, protocol
from pytest_reuse_env.markers import resolve_item_policy, resolve_policies
from pytest_reuse_env.options import MARKER_HELP, register_options
from pytest_reuse_env.role import Role, role_of
from pytest_reuse_env.settings import ReuseSettings

if TYPE_CHECKING:
    from pytest_reuse_env.controller.session import ReuseController
    from pytest_reuse_env.controller.summary import ReuseSummary
    from pytest_reuse_env.policy import ReusePolicy


def pytest_addoption(parser: pytest.Parser) -> None:
    register_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--reuse-status`` and ``--reuse-stop`` do their job and end the run."""
    if config.getoption("reuse_status") or config.getoption("reuse_stop"):
        from _pytest.main import wrap_session

        from pytest_reuse_env.controller.commands import run_command

        return wrap_session(config, run_command)
    return None


def pytest_plugin_registered(plugin: object) -> None:
    """pytest replays earlier registrations to a plugin it registers, its own ``Config``'s
    among them: the earliest moment that knows the command and where its cache is. The spare
    replicas this command's hint asks for start there (``prestart.py``)."""
    if isinstance(plugin, pytest.Config):
        prestart.start_spares(plugin)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, object, object]:
    """Before pytest captures output or loads a conftest (outermost of this hook's wrappers):
    the spares this command's hint asks for are forked (``prestart.fork_spares``), and
    ``--reuse-watch`` starts recording imports, so a later edit can be traced to the tests
    (and conftests) it affects."""
    prestart.fork_spares(early_config)
    if getattr(early_config.known_args_namespace, "reuse_watch", False) and not os.environ.get(
        protocol.REPLICA_ENV_VAR
    ):
        from pytest_reuse_env.controller.watch import record_imports

        record_imports(early_config)
    return (yield)


def _may_start_early(options: Any) -> bool:
    """Not a run that starts no replica of its own, or none before collection is done (nor
    --reuse-status or --reuse-stop, which would find the replica leased to itself)."""
    return not (
        options.collectonly or options.reuse_fresh or options.reuse_status or options.reuse_stop
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    prestart.start_pending(config)
    config.addinivalue_line("markers", MARKER_HELP)
    role = role_of(config)
    if role is Role.REPLICA:
        return
    if config.getoption("reuse_watch"):
        from pytest_reuse_env.controller.watch import start_watching

        start_watching(config, role)
    # Validated in xdist's controller too: a bad ini value is one clean usage error, not one
    # per worker.
    settings = ReuseSettings.from_config(config)
    if not settings.enabled:
        if role is not Role.XDIST_WORKER:
            config.pluginmanager.register(OffNote(), "reuse_off_note")
        return
    if role is Role.XDIST_CONTROLLER and config.getoption("reuse_verify_cold"):
        from pytest_reuse_env.errors import ReuseEnvWarning

        # xdist's controller prints the reports; nothing can annotate them afterwards.
        config.issue_config_time_warning(
            ReuseEnvWarning(
                "--reuse-verify-cold has no effect under pytest -n (xdist): run the failing "
                "tests without -n to check whether they fail only in a warm replica"
            ),
            stacklevel=2,
        )
    config.pluginmanager.register(Router(config, settings, role), "reuse_router")


@final
class OffNote:
    """``--reuse=off``: warm replicas of the project may still hold ports or files this plain
    run needs; the header says so once, with how to stop them (a file check, no controller)."""

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        from pytest_reuse_env.warm import registry_directory, warm_replicas_note

        return warm_replicas_note(registry_directory(config))


@final
class Router:
    """Decides, once collection is done, whether this run uses reuse at all.

    Only then are the controller (which starts replicas) and the summary (which reports on
    them) imported and set up; until then the plugin costs its options and this object.
    """

    def __init__(self, config: pytest.Config, settings: ReuseSettings, role: Role) -> None:
        self.config = config
        self.settings = settings
        self.role = role
        self.summary: ReuseSummary | None = None
        self.controller: ReuseController | None = None
        #: The spares and the command's hint are settled (first collection).
        self.settled = False
        #: Cold start: a replica may start while this process still collects (once a test
        #: is known to be routed), in a plain run (not an xdist worker).
        self._start_early = role is Role.CONTROLLER and _may_start_early(config.option)
        #: xdist's controller: a worker's replicas had a fixture teardown fail between tests.
        self._worker_teardown_failed = False

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self) -> None:
        """``reuse_all``: every test is routed, so its replica starts now, before collection.
        So do the environments that had a routed test in every file of this command's last
        run (``prestart.every_file``): their replicas collect the run's arguments alongside
        this process, rather than after it, waiting for the list of their files."""
        if not self._start_early:
            return
        if self.settings.apply_all is not None:
            self._early_replica(self.settings.apply_all, every_test=True)
            return
        hinted = prestart.every_file(self.config)
        if hinted and self._loop_owner() is None:
            from pytest_reuse_env.policy import PolicyError, ReusePolicy

            for described in hinted:
                try:
                    policy = ReusePolicy.parse(described)
                except PolicyError:  # written by another version of the plugin: no hint
                    continue
                # The first routed test still starts its own environment, if another.
                self._controller().start_hinted(policy)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """The first routed test collected: its environment's replica starts now, while the
        rest is collected (the replica collects at the same time)."""
        if not self._start_early:
            return
        for node in report.result:
            if isinstance(node, pytest.Item):
                try:
                    policy = resolve_item_policy(node, self.settings)
                except pytest.UsageError:  # reported once collection is done
                    self._start_early = False
                    return
                if policy is not None:
                    self._early_replica(policy, every_test=False)
                    return

    def _early_replica(self, policy: ReusePolicy, *, every_test: bool) -> None:
        self._start_early = False
        if self._loop_owner() is None:  # else reuse is off for this run (see below)
            self._controller().start_early(policy, every_test=every_test)

    def _loop_owner(self) -> str | None:
        from pytest_reuse_env.controller.nodes import loop_owner

        return loop_owner(self.config)

    def _controller(self) -> ReuseController:
        if self.controller is None:
            from pytest_reuse_env.controller.session import ReuseController

            # xdist workers hand their figures to xdist's controller, which summarizes.
            summary = self._summary() if self.role is Role.CONTROLLER else None
            self.controller = ReuseController(self.config, self.settings, summary)
            self.config.pluginmanager.register(self.controller, "reuse_controller")
        return self.controller

    def _summary(self) -> ReuseSummary:
        if self.summary is None:
            from pytest_reuse_env.controller.summary import ReuseSummary

            self.summary = ReuseSummary(self.config, self.config.getoption("reuse_report"))
        return self.summary

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.role.runs_tests:
            return
        self._start_early = False
        try:
            self._collection_finished(session)
        finally:
            self._settle_spares()

    def _collection_finished(self, session: pytest.Session) -> None:
        policies = resolve_policies(session.items, self.settings)
        if not policies and not self.config.getoption("reuse_fresh") and self.controller is None:
            return
        owner = self._loop_owner()
        if owner is not None:
            self._warn(
                f"reuse is off for this run: plugin {owner!r} runs the tests itself "
                "(pytest_runtestloop), so tests routed to replicas would run twice; "
                f"every test runs here instead (disable it with -p no:{owner} to use reuse)"
            )
            return
        self._controller().collection_finished(session, policies)

    def _settle_spares(self) -> None:
        """Replicas have started: spares none took are killed, and the command's hint becomes
        the number of run-scoped replicas it started (prestart.py). A run that routed nothing
        and had no hint does nothing here."""
        if self.role is not Role.CONTROLLER or self.settled:
            return
        self.settled = True  # watch mode collects again each round: once
        spares = self.config.stash.get(prestart.SPARES, None)
        if spares is not None:
            spares.release()
        controller = self.controller
        started = controller.started_for_tests() if controller is not None else 0
        if started != (spares.count if spares is not None else 0):
            prestart.remember(self.config, started)
        if started:
            prestart.remember_every_file(self.config, controller.every_file if controller else [])

    def _warn(self, message: str) -> None:
        """A line in pytest's warnings summary (a warning raised now would meet the user's
        ``filterwarnings = error`` inside collection)."""
        from pytest_reuse_env.errors import record_warning

        record_warning(self.config, message, when="config")

    # The summary's sources, forwarded once it exists (or once a routed report shows up).

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.role.is_worker:
            return
        if self.summary is not None or getattr(report, protocol.REPORT_REPLICA, None):
            self._summary().pytest_runtest_logreport(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        if output.get(protocol.WORKEROUTPUT_KEY):
            self._summary().pytest_testnodedown(node, error)
        if output.get(protocol.WORKEROUTPUT_TEARDOWN_FAILED):
            self._worker_teardown_failed = True

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.summary is not None:
            self.summary.pytest_terminal_summary(terminalreporter)

    @pytest.hookimpl(trylast=True)  # after the controller has added its figures
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self._worker_teardown_failed and session.exitstatus == pytest.ExitCode.OK:
            # The worker's note (in the summary) says why; xdist counts only reports.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.summary is not None:
            self.summary.pytest_sessionfinish()
