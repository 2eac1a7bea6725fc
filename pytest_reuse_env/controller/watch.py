"""``pytest --reuse-watch``: one pytest session that runs the selection, then a round per save.

Design: the pytest process, its replicas and their warm fixtures live for the whole watch
session, and a round re-uses pytest's own machinery in that process:

- **Catching up with edits.** The controller keeps a ``replica.reload.Reloader`` of its own
  (import edges recorded from before the first conftest is loaded): at each save it re-imports
  the changed modules and their importers and collects the affected test files again in place,
  exactly as a warm replica does; the test modules it re-collected are the round's *affected*
  tests. What the reload rules refuse (a conftest, the ini file, a plugin, a module that
  raises on re-import) restarts the whole pytest process (``exec``), as a normal run would
  start fresh replicas. Meanwhile every replica, still leased to this process, gets ATTACH
  again and catches up the same way, or is replaced by a fresh one (``stale``).
- **A round.** The affected tests and the last failures first, then the rest of the
  selection (not with ``--reuse-watch-affected``). The round's items go through
  ``pytest_collection_finish`` (routing) and ``pytest_runtestloop`` (the controller's loop
  or pytest's), with the terminal reporter's and the session's counters reset, and end with
  pytest's own terminal summary; the last round's status is the session's exit status.
- **Quitting** (``q``, Ctrl-C, or stdin closing without a terminal) ends the session
  normally: replicas are kept warm or stopped as their scope says.

Imported only in watch mode (the plugin's hooks import it lazily).
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import pytest

from pytest_reuse_env.controller.nodes import loop_owner
from pytest_reuse_env.controller.watch_plan import (
    Filters,
    RoundPlan,
    Trigger,
    header,
    next_failures,
    plan_round,
)
from pytest_reuse_env.replica.reload import Reloader
from pytest_reuse_env.role import Role

if TYPE_CHECKING:
    from pytest_reuse_env.controller.session import ReuseController
    from pytest_reuse_env.controller.watch_input import FileChanges, Keys

_RELOADER: Final = pytest.StashKey[Reloader]()
#: Clears a terminal and moves to its top (between rounds, when stdout is a terminal).
CLEAR_SCREEN: Final = "\x1b[2J\x1b[H"
KEYS_HELP: Final = "keys: Enter re-run all, f failures, p file pattern, k -k expression, q quit"


def record_imports(early_config: pytest.Config) -> None:
    """From ``pytest_load_initial_conftests``: record import edges from now on."""
    reloader = Reloader()
    reloader.graph.install()
    early_config.stash[_RELOADER] = reloader


def start_watching(config: pytest.Config, role: Role) -> None:
    """From ``pytest_configure``: refuse what watch mode cannot do, then set it up."""
    if role is not Role.CONTROLLER:
        raise pytest.UsageError(
            "--reuse-watch runs every round from one pytest process and cannot be combined "
            "with -n/--dist (pytest-xdist); drop -n (replicas already run tests in parallel: "
            "raise reuse_replicas instead)"
        )
    if config.option.collectonly:
        raise pytest.UsageError("--reuse-watch runs tests: it cannot be combined with --co")
    owner = loop_owner(config)
    if owner is not None:  # a normal run warns and runs without replicas; a watch would not
        raise pytest.UsageError(
            f"--reuse-watch needs replicas, but plugin {owner!r} runs the tests itself "
            f"(pytest_runtestloop); disable it with -p no:{owner}"
        )
    try:
        import watchfiles  # noqa: F401
    except ImportError as exc:
        raise pytest.UsageError(
            f"--reuse-watch needs the watchfiles package ({exc}); pip install watchfiles"
        ) from exc
    reloader = config.stash.get(_RELOADER, None)
    if reloader is None:  # the plugin was registered late (pytester, -p): record from now
        reloader = Reloader()
        reloader.graph.install()
    config.pluginmanager.register(reloader, "reuse_watch_reloader")
    config.pluginmanager.register(WatchMode(config, reloader), "reuse_watch")


@final
class ControllerSide:
    """What the reloader needs of a session (``reload.ReplicaLike``), for the controller."""

    def __init__(self) -> None:
        self.session: pytest.Session | None = None
        self.items: dict[str, pytest.Item] = {}
        self.collect_errors: list[str] = []


@final
class WatchMode:
    """The pytest plugin that turns a session into a watch session (see the module doc)."""

    def __init__(self, config: pytest.Config, reloader: Reloader) -> None:
        self.config = config
        self.reloader = reloader
        self.side = ControllerSide()
        reloader.bind(self.side)
        self.affected_only = bool(config.getoption("reuse_watch_affected"))
        self.filters = Filters()
        #: Failed in a round and not passed since: run first in the next round.
        self.failed: set[str] = set()
        self._ran: set[str] = set()
        self._failed_now: set[str] = set()
        #: The whole selection, in collection order (a round runs some of it).
        self.selection: list[pytest.Item] = []
        self._file_rank: dict[Path, int] = {}
        self.rounds = 0
        self._in_round = False
        self.restart_reason: str | None = None

    # -- hooks -------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self._in_round:
            return
        self._ran.add(report.nodeid)
        if report.failed:
            self._failed_now.add(report.nodeid)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        if self._in_round:  # a round's own call (below)
            return (yield)
        self.side.session = session
        self._remember_selection(session.items)
        self.reloader.ready()
        self.rounds = 1
        self._write(header(1, Trigger("all"), RoundPlan(list(session.items), []), self.filters))
        self._in_round = True
        interrupted = False
        try:
            yield
        except (session.Failed, session.Interrupted):
            interrupted = True
        finally:
            self._in_round = False
        self._end_round(session, interrupted)
        self._watch(session)
        return True

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self) -> None:
        if self.restart_reason is not None:
            # After pytest's own cleanup (its capture hands the terminal back): exec then.
            atexit.register(_exec_again)

    # -- the loop ----------------------------------------------------------------------------

    def _watch(self, session: pytest.Session) -> None:
        from pytest_reuse_env.controller.watch_input import FileChanges, Keys

        capture = self.config.pluginmanager.get_plugin("capturemanager")
        ini = self.config.inipath
        data = self.reloader.graph.data.states  # files read at import here (test parameters)
        with FileChanges(
            self.config.rootpath, ini, lambda path: os.path.realpath(path) in data
        ) as changes:
            while True:
                try:
                    with Keys(capture) as keys:
                        self._write(f"reuse watch: waiting for changes; {self._keys_help(keys)}")
                        trigger = self._wait(changes, keys)
                except KeyboardInterrupt:  # Ctrl-C while waiting: quit, as q does
                    trigger = None
                if trigger is None:
                    break
                if trigger.kind == "changes" and ini is not None:
                    if str(ini) in trigger.changed or os.path.realpath(ini) in trigger.changed:
                        self._restart(f"{ini.name} changed")
                        break
                self._round(session, trigger)
                if self.restart_reason is not None:
                    break
        controller = self._controller()
        if controller is not None:
            controller.end_watch()
        # The rounds printed their summaries; pytest's closing one would repeat the last.
        reporter = self._reporter()
        if reporter is not None:
            reporter.summary_stats = lambda: None  # type: ignore[method-assign]
            self.config.option.no_summary = True

    def _keys_help(self, keys: Keys) -> str:
        if keys.tty:
            return KEYS_HELP
        return "Ctrl-C quits (keys need a terminal)"

    def _wait(self, changes: FileChanges, keys: Keys) -> Trigger | None:
        """The next round's trigger; None to quit."""
        from pytest_reuse_env.controller.watch_input import POLL_SECONDS

        controller = self._controller()
        while True:
            if changes.error is not None:
                self._write(f"reuse watch: the file watcher failed: {changes.error!r}")
                return None
            key = keys.read(POLL_SECONDS) if keys.tty else None
            if key is not None:
                trigger = self._key(key, keys)
                if trigger is not None or key == "q":
                    return trigger
            burst = changes.take(0 if keys.tty else POLL_SECONDS)
            if burst:
                root = str(self.config.invocation_params.dir)
                shown = sorted(os.path.relpath(p, root) for p in burst)
                return Trigger("changes", tuple(shown))
            if controller is not None:
                controller.between_rounds(0)

    def _key(self, key: str, keys: Keys) -> Trigger | None:
        if key == "q":
            return None
        if key in ("\n", "\r"):
            return Trigger("all")
        if key == "f":
            return Trigger("failures")
        if key in ("p", "k"):
            what = "file name pattern (regex)" if key == "p" else "-k expression"
            reporter = self._reporter()
            write = reporter.write if reporter is not None else sys.stdout.write
            typed = keys.line(f"\n{what} (empty clears): ", write)
            if key == "p":
                self.filters = Filters(pattern=typed, keyword=self.filters.keyword)
            else:
                self.filters = Filters(pattern=self.filters.pattern, keyword=typed)
            return Trigger("all")
        return None

    # -- one round ---------------------------------------------------------------------------

    def _round(self, session: pytest.Session, trigger: Trigger) -> None:
        reporter = self._reporter()
        self._reset(session)  # before the refresh: its collection errors are this round's
        controller = self._controller()
        if controller is not None:
            controller.begin_round()  # replicas catch up while this process does
        session.items = list(self.selection)
        result = self.reloader.refresh()
        if result.stale is not None:
            self._restart(result.stale)
            return
        self._remember_selection(session.items)
        if trigger.kind == "changes" and not result.reimported:
            self._write(f"reuse watch: {', '.join(trigger.changed)}: no test imports it")
            return
        self.rounds += 1
        if reporter is not None and sys.stdout.isatty():
            reporter.write(CLEAR_SCREEN)
        affected: Callable[[pytest.Item], bool] | None = None
        if trigger.kind == "changes":
            root = self.config.invocation_params.dir
            files = {os.path.realpath(root / rel) for rel in result.reimported}
            # A conftest registered again in place affects every test below it.
            below = tuple(
                os.path.join(os.path.dirname(f), "")
                for f in files
                if os.path.basename(f) == "conftest.py"
            )

            def affected(item: pytest.Item) -> bool:
                path = os.path.realpath(item.path)
                return path in files or path.startswith(below)

        plan = plan_round(
            self.selection,
            nodeid=lambda item: item.nodeid,
            path=lambda item: os.path.relpath(item.path, self.config.invocation_params.dir),
            affected=affected,
            failed=self.failed,
            failures_only=trigger.kind == "failures",
            affected_only=self.affected_only,
            filters=self.filters,
            keyword_match=_keyword_match,
        )
        self._write(header(self.rounds, trigger, plan, self.filters))
        session.items = plan.items
        session.testscollected = len(session.items)
        if reporter is not None:
            reporter._numcollected = len(session.items)
        self._in_round = True
        interrupted = False
        try:
            self.config.hook.pytest_collection_finish(session=session)
            self.config.hook.pytest_runtestloop(session=session)
        except (session.Failed, session.Interrupted):
            interrupted = True
        finally:
            self._in_round = False
        self._end_round(session, interrupted)

    def _reset(self, session: pytest.Session) -> None:
        """The session's and the terminal's counters start again for the round."""
        session.testsfailed = 0
        session.shouldfail = False
        session.shouldstop = False
        self._ran = set()
        self._failed_now = set()
        reporter = self._reporter()
        if reporter is None:
            return
        from _pytest import timing

        reporter.stats = {}
        reporter._numcollected = 0
        reporter._progress_nodeids_reported = set()
        reporter.currentfspath = None
        for name, value in (
            ("_timing_nodeids_reported", set()),
            ("_main_color", None),
            ("_known_types", None),
            ("_already_displayed_warnings", None),
            ("_session_start", timing.Instant()),
        ):
            if hasattr(reporter, name):
                setattr(reporter, name, value)

    def _end_round(self, session: pytest.Session, interrupted: bool) -> None:
        """Tear down what the round left set up, then pytest's own summary for the round."""
        try:
            session._setupstate.teardown_exact(None)
        except Exception as exc:  # a finalizer of a local test's fixture: say so, go on
            self._write(f"reuse watch: a fixture's teardown failed: {exc!r}")
        self.failed = next_failures(self.failed, self._ran, self._failed_now)
        reporter = self._reporter()
        if reporter is None:
            return
        if interrupted:
            status = pytest.ExitCode.INTERRUPTED
        elif session.testsfailed:
            status = pytest.ExitCode.TESTS_FAILED
        elif not session.testscollected:
            status = pytest.ExitCode.NO_TESTS_COLLECTED
        else:
            status = pytest.ExitCode.OK
        reporter.ensure_newline()
        reporter.write_line("")
        # pytest's own sections only: other plugins' summaries (coverage, syrupy, benchmark)
        # read what their sessionfinish prepares, so they come once, when the session ends.
        if status != pytest.ExitCode.NO_TESTS_COLLECTED and not self.config.option.no_summary:
            for section in _SECTIONS:
                getattr(reporter, section, lambda: None)()
        if session.shouldfail:
            reporter.write_sep("!", str(session.shouldfail), red=True)
        elif session.shouldstop:
            reporter.write_sep("!", str(session.shouldstop), red=True)
        reporter.summary_stats()

    # -- helpers -----------------------------------------------------------------------------

    def _remember_selection(self, items: list[pytest.Item]) -> None:
        """The whole selection in collection order: files as first seen, a re-collected
        file's tests where its old ones were."""
        for item in items:
            self._file_rank.setdefault(item.path, len(self._file_rank))
        self.selection = sorted(items, key=lambda item: self._file_rank[item.path])
        self.side.items = {item.nodeid: item for item in self.selection}

    def _restart(self, reason: str) -> None:
        self.restart_reason = reason
        self._write(f"reuse watch: {reason}: restarting pytest (a fresh process, as a new run)")

    def _controller(self) -> ReuseController | None:
        controller: ReuseController | None = self.config.pluginmanager.get_plugin(
            "reuse_controller"
        )
        return controller

    def _reporter(self) -> pytest.TerminalReporter | None:
        reporter: pytest.TerminalReporter | None = self.config.pluginmanager.get_plugin(
            "terminalreporter"
        )
        return reporter

    def _write(self, line: str) -> None:
        reporter = self._reporter()
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line, bold=True)


#: The terminal reporter's own summary sections, in the order its pytest_terminal_summary
#: writes them.
_SECTIONS: Final = (
    "summary_errors",
    "summary_failures",
    "summary_xfailures",
    "summary_warnings",
    "summary_passes",
    "summary_xpasses",
    "short_test_summary",
    "summary_warnings",
)


def _keyword_match(item: pytest.Item, expression: str) -> bool:
    """Whether ``item`` matches a ``-k`` expression, as pytest's own ``-k`` decides."""
    from _pytest.mark import KeywordMatcher
    from _pytest.mark.expression import Expression

    try:
        return Expression.compile(expression).evaluate(KeywordMatcher.from_item(item))
    except Exception:  # a malformed expression selects nothing; the header shows it
        return False


def _exec_again() -> None:
    """Replace this process with the same pytest command (after a conftest edit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
