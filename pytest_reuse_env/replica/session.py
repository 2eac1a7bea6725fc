"""The replica's pytest session as a plugin: the serve loop and the controller's messages.

Runs inside a replica, on its main thread. ``ReplicaSession`` is the plugin the replica's pytest
session is built with (``bootstrap.py`` builds it): it collects once, keeps ``{nodeid: item}``,
sends READY, then runs the items it is sent, keeping session, package, module and class fixtures
set up between them, and handles every other message (DRAIN, CANCEL, ATTACH, SHUTDOWN...).
How its reports and warnings travel is ``reports.py``'s; running async tests at once is
``asyncbatch/serve.py``'s.

This module imports only the standard library, pytest and the replica side (``protocol``,
``hygiene``, ``reports``, ``asyncbatch``, ``prewarm``, ``abort``...): the replica must be able to
import the project's tests anyway, and they may import this package.

Threading: execnet delivers messages on its receiver thread; the callback only enqueues them.
Every pytest call happens on the main thread, in ``ReplicaSession.serve``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import queue
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, final

import pytest

import pytest_reuse_env
from pytest_reuse_env import collection_check, protocol
from pytest_reuse_env.replica import hygiene, perrun
from pytest_reuse_env.replica.abort import ClientGone, not_running
from pytest_reuse_env.replica.asyncbatch import serve as serve_batch
from pytest_reuse_env.replica.held import HeldResults
from pytest_reuse_env.replica.logfile import _log_fd, _log_line
from pytest_reuse_env.replica.outbox import TestOutbox
from pytest_reuse_env.replica.prewarm import prewarm
from pytest_reuse_env.replica.reports import PLAIN_REPORT_KEYS, full_report, warning_entry
from pytest_reuse_env.replica.worker import WorkerSide

#: Frames of the exception that ended a session early quoted in the test's report.
STOP_FRAMES: Final = 6
#: How long one wait for the next message lasts before the loop looks around again.
POLL_SECONDS: Final = 1.0
#: How long a replica started with ``collect_later`` waits for COLLECT (the controller sends
#: it once its own collection is done) before it collects the run's arguments instead.
COLLECT_WAIT_SECONDS: Final = 3600.0


def load_conftests(config: pytest.Config, conftests: list[str]) -> bool:
    """Load, in order, every conftest.py the controller loaded (pytest's own loader, as its
    collection of a directory does), before the replica collects only some files: a conftest
    beside other files runs session-wide hooks in plain pytest too. False when that cannot be
    done (pytest's private loader changed, a conftest failed to load): then the replica
    collects the run's arguments, where pytest reports such a failure as the controller did."""
    manager = config.pluginmanager
    try:
        for conftest in conftests:
            manager._loadconftestmodules(  # private: what pytest's collection calls
                Path(conftest).parent,
                config.getoption("importmode"),
                rootpath=config.rootpath,
                consider_namespace_packages=config.getini("consider_namespace_packages"),
            )
    except Exception as exc:  # any failure: collect as without a list
        _log_line(f"loading the controller's conftests failed ({exc!r}): collecting in full")
        return False
    return True


class UnknownMessage(Exception):
    """The controller sent a message name this replica does not know."""


@final
class KeepCollectors:
    """Stands in for "the next item" when it is not known yet.

    pytest tears the setup stack down to the collectors the next item shares. With this
    stand-in only the finished item's own (function-scope) state goes; module, class and session
    fixtures stay up until an item that does not share them arrives.
    """

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list[Any]:
        return self._chain


@final
class ReplicaSession:
    """The pytest plugin that turns a pytest session into a replica's serve loop."""

    def __init__(
        self,
        channel: Any,
        inbox: queue.SimpleQueue[Any],
        start: protocol.StartPayload,
        *,
        persistent: bool = False,
        on_idle: Callable[[], bool] | None = None,
        refresh: Callable[[], protocol.ReloadPayload] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        #: Persistent (scope="global"): losing the client means going idle, not exiting.
        self.persistent = persistent
        #: Asked while idle with no client: True means "retire now" (idle_ttl, scaledown).
        self._on_idle = on_idle
        #: Catches up with edited files before answering an ATTACH (replica/reload.py).
        self._refresh = refresh
        #: More plugins for the replica's pytest session (the reloader).
        self.plugins: list[object] = []
        #: Called once collection and pre-warming are done (the import snapshot is taken).
        self._on_ready = on_ready
        #: True while a test runs: a disconnect then aborts it with ClientGone.
        self.running = False
        self.prewarm_errors: list[str] = []
        self.ready_at: float | None = None
        self.first_setup_seconds = 0.0
        #: Leak checks between tests and recycling (a plugin of the replica's session too).
        self.leaks = hygiene.LeakWatch(
            start["replica_id"], start["hygiene"], start["policy"], self.send
        )
        #: workerinput/workeroutput lease by lease, for plugins written for xdist workers.
        self.worker = WorkerSide()
        #: Other plugins' per-run state (syrupy, doctests, junitxml records, --setup-show).
        self.perrun = perrun.PerRun(start["replica_id"])
        #: Running one test by itself (not a batch): its end waits for its warnings.
        self._one_at_a_time = False
        self._held_finish: str | None = None
        #: The running test's messages: one TEST when it ends, unless it runs long.
        self.outbox = TestOutbox(self.send, self.send_quiet_pass)
        #: Quiet passes held back and sent together (a local run-scoped replica only).
        self.held = HeldResults(start.get("held"), lambda message: self.channel.send(message))
        #: Channel sends come from the main thread and the watchdog's announcements.
        self._send_lock = threading.Lock()
        #: Reports may travel compact: nothing but pytest serializes them here (set at ready).
        self._compact = False
        #: Each item's keyword count before its first run: a marker added at runtime shows.
        self._keyword_counts: dict[str, int] = {}
        #: When the running test's teardown began (time.monotonic), for the teardown watchdog.
        self.teardown_started: float | None = None
        self.inbox = inbox
        self.start = start
        #: The controller's messages, by name; any other name is an error (``UnknownMessage``).
        self._handlers: dict[str, Callable[[Any], None]] = {
            protocol.RUN: self._on_run,
            protocol.NEXT: self._on_next,
            protocol.DRAIN: self._on_drain,
            protocol.CANCEL: self._on_cancel,
            protocol.STEAL: self._on_steal,
            protocol.SHUTDOWN: self._on_shutdown,
            protocol.ATTACH: self._on_attach,
            protocol.END_LEASE: self._on_end_lease,
            protocol.CHANNEL_CLOSED: self._on_client_gone,
            # Only after COLLECT_WAIT_SECONDS without it: the run's arguments were collected.
            protocol.COLLECT: lambda files: None,
        }
        #: Messages that came while waiting for COLLECT, handled once serving.
        self._held: list[tuple[str, Any]] = []
        #: The list this replica collected instead of the run's arguments, with what the
        #: controller collected for it (checked once, in the first READY).
        self._collected_by_file: protocol.CollectPayload | None = None
        self.replica_id = start["replica_id"]
        #: This replica's process: a child a test forks and lets return into pytest is not it.
        self.pid = os.getpid()
        #: The client's lease (START, then each ATTACH), and the one the running test came in.
        self.lease = start.get("lease", "")
        self.test_lease = self.lease
        #: What runs now, named if the session ends unasked (STOPPED_EARLY).
        self.running_nodeids: list[str] = []
        #: Tests that already had a report replaced because it could not be encoded.
        self.unsendable: set[str] = set()
        self.items: dict[str, pytest.Item] = {}
        self.collect_errors: list[str] = []
        #: Tracebacks of pytest's INTERNALERRORs here (a hook that raised before serving).
        self.internal_errors: list[str] = []
        self.ready_sent = False
        self.tests_run = 0
        self.pending: deque[str] = deque()
        self.final = False  # DRAIN or SHUTDOWN seen: do not hold the last item back
        #: NEXT: the session's test after the last one queued here, when tests come one at
        #: a time (it may run elsewhere); used once, as that test's next item.
        self.next_hint: str | None = None
        self.shutting_down = False
        self.session: pytest.Session | None = None
        #: The working directory every test starts in (a test's os.chdir does not outlive it).
        self.cwd = ""

    # -- pytest hooks ------------------------------------------------------------------------

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid or '<session>'}: {report.longreprtext}")

    def pytest_internalerror(self, excrepr: object) -> None:
        # pytest prints it to the replica's terminal, which nobody reads: keep it for the
        # controller (START_FAILED) as well.
        self.internal_errors.append(str(excrepr))

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        files = None
        wanted = self._files_to_collect()
        if (
            wanted is not None
            and not wanted.get("whole_run")
            and load_conftests(session.config, wanted["conftests"])
        ):
            files = wanted["files"]
            self._collected_by_file = wanted
            # pytest's own collection (the next hook) takes them as it would the run's
            # arguments: nodeids are relative to the rootdir either way (but for a file
            # outside it; the first READY says so, with any other difference it finds).
            session.config.args = files
        what = "the run's arguments" if files is None else f"{len(files)} test files"
        _log_line(f"replica {self.replica_id}: collecting {what}")

    def _files_to_collect(self) -> protocol.CollectPayload | None:
        """What START or a later COLLECT says to collect (None: the run's arguments).
        Waiting for COLLECT ends early when the controller says shut down or goes away (then
        nothing is collected) and, at the latest, after COLLECT_WAIT_SECONDS (then the run's
        arguments are collected, as without a list)."""
        if not self.start.get("collect_later"):
            return self.start.get("collect")
        deadline = time.monotonic() + COLLECT_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                name, payload = self.inbox.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if name == protocol.COLLECT:
                wanted: protocol.CollectPayload = payload
                return wanted
            self._held.append((name, payload))  # handled once serving
            if name in (protocol.SHUTDOWN, protocol.CHANNEL_CLOSED):
                return {"files": [], "conftests": []}
        return None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = {item.nodeid: item for item in session.items}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        self.session = session
        self.cwd = os.getcwd()
        self.prewarm_errors = prewarm(session, self.items, self.start["policy"]["prewarm"])
        self.worker.ready()
        if self._on_ready is not None:
            self._on_ready()
        self._send_ready()
        self.ready_sent = True
        try:
            for message in self._held:
                self._handle(message)
            self._held.clear()
            self.serve(session)
        except BaseException as exc:  # the session ends unasked: say so before its teardown
            self._send_stopped_early(exc)
            raise
        return True

    def _send_stopped_early(self, exc: BaseException) -> None:
        """STOPPED_EARLY: what ends the session (KeyboardInterrupt, pytest.exit, an error
        inside pytest) and the tests it interrupts, so none of them is silently lost."""
        kind, returncode = "error", None
        if isinstance(exc, KeyboardInterrupt):
            kind = "interrupt"
        elif isinstance(exc, pytest.exit.Exception):
            kind, returncode = "exit", exc.returncode
        payload: protocol.StoppedEarlyPayload = {
            "nodeids": list(self.running_nodeids),
            "kind": kind,
            "returncode": returncode,
            "message": str(getattr(exc, "msg", exc)) or type(exc).__name__,
            # The innermost frames: the test's or the hook's, not pytest's and pluggy's.
            "traceback": "".join(traceback.format_exception(exc, limit=-STOP_FRAMES)),
            "lease": self.test_lease,
        }
        with contextlib.suppress(Exception):  # a closed channel: nobody left to tell
            self.outbox.announce()  # the test's phases so far: the controller fails the right one
            self.send(protocol.stopped_early(payload))

    def _send_ready(self) -> None:
        """READY: to the first client after collection, and to every client that attaches."""
        serializers = self._config().hook.pytest_report_to_serializable.get_hookimpls()
        self._compact = all(
            getattr(impl.plugin, "__name__", "").startswith("_pytest.") for impl in serializers
        )
        # Catch up with edited files first: the nodeids are those collected after it.
        reload = self._refresh() if self.ready_sent and self._refresh is not None else None
        differs = None
        if not self.ready_sent and self._collected_by_file is not None:
            differs = collection_check.difference(
                json.loads(self._collected_by_file.get("expect") or "{}"),
                self._collected_by_file.get("modules", {}),
                self.items,
                str(self._config().rootpath),
            )
        # A warm replica's tests were collected by an earlier run: what a collection hook or a
        # skipif condition decided then, the controller compares with its own collection.
        digests = json.dumps(collection_check.digests(self.items.values())) if reload else None
        self.send(
            protocol.ready(
                pid=os.getpid(),
                nodeids=list(self.items),
                collect_errors=self.collect_errors,
                setup_seconds=self.setup_cost(),
                prewarm_errors=[] if self.ready_sent else self.prewarm_errors,
                tests_run=self.tests_run,
                changed_files=[],
                lease=self.lease,
                reload=reload,
                collection_differs=differs,
                digests=digests,
            )
        )

    def setup_cost(self) -> float:
        """Seconds from the package's first import in this process (imports, collection,
        pre-warming) to ready, plus the setup phase of the first test."""
        if self.ready_at is None:
            # Not psutil's create_time: it is derived from a boot time in whole seconds.
            self.ready_at = time.monotonic() - pytest_reuse_env.STARTED
        return self.ready_at + self.first_setup_seconds

    def send(self, message: protocol.Message) -> None:
        """Send ``message`` after the quiet passes held before it (the order they happened)."""
        with self._sending():
            self.held.flush()
            self.channel.send(message)

    def send_quiet_pass(self, message: protocol.Message) -> None:
        """A test that passed quietly: held back (``held.py``) while enough tests are queued
        behind it, else sent."""
        with self._sending():
            if not self.held.hold(message[1], len(self.pending)):
                self.held.flush()
                self.channel.send(message)

    def flush_held(self, *, stale_only: bool = False) -> None:
        """Send the passes held back: before waiting for work, and from the watchdog
        (``stale_only``: only once the oldest has waited ``held.FLUSH_SECONDS``)."""
        with self._sending():
            if stale_only:
                self.held.flush_stale()
            else:
                self.held.flush()

    def drop_held(self) -> None:
        """Forget the passes held for a client that is gone (``held.py``)."""
        with self._sending():
            self.held.drop()

    @contextlib.contextmanager
    def _sending(self) -> Iterator[None]:
        self.exit_if_forked()
        try:
            with self._send_lock:
                yield
        except (OSError, EOFError, ValueError):
            if not self.persistent:
                raise
            # The client is gone; its close event is in the inbox. Nobody to tell.

    def exit_if_forked(self) -> None:
        """A child a test forked that returned into pytest is not this replica: its reports
        would double the test's and it would serve on. It ends here, without a word."""
        if os.getpid() == self.pid:
            return
        with contextlib.suppress(OSError):
            os.write(
                _log_fd(),
                f"pid {os.getpid()}, forked from replica {self.replica_id} (pid {self.pid}) by "
                "a test, returned into pytest: exiting without reporting\n".encode(),
            )
        os._exit(0)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        # Watched by _teardown_watchdog: a teardown that hangs leaves every thread's stack in
        # the log before the controller kills us, so the report can name the finalizer.
        self.teardown_started = time.monotonic()
        try:
            return (yield)
        finally:
            self.teardown_started = None

    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int, str]) -> None:
        if nodeid not in self._keyword_counts and nodeid in self.items:
            self._keyword_counts[nodeid] = len(self.items[nodeid].keywords)
        self.outbox.start(nodeid, location, self.test_lease, warm=self.tests_run > 0)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.tests_run == 0 and report.when == "setup":
            self.first_setup_seconds = report.duration
        if (
            self._compact
            and report.outcome == "passed"
            and report.longrepr is None
            and not report.sections
            and not report.user_properties
            and report.__dict__.keys() == PLAIN_REPORT_KEYS
            and len(report.keywords) == self._keyword_counts.get(report.nodeid)
            and not self.perrun.has_extras()
        ):
            self.outbox.add(
                [protocol.PASSED, report.when, report.duration, report.start, report.stop]
            )
        else:
            self.outbox.add([protocol.FULL_REPORT, full_report(self, self._config(), report)])

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int, str]) -> None:
        if self._one_at_a_time:
            # pytest's warnings plugin records the test's warnings after this hook: hold the
            # end of the test back until _run_next has added them (see there).
            self._held_finish = nodeid
        else:
            self.outbox.finish(nodeid)  # a concurrent batch calls this after the warnings

    def pytest_warning_recorded(
        self,
        warning_message: warnings.WarningMessage,
        when: str,
        nodeid: str,
        location: tuple[str, int, str] | None,
    ) -> None:
        # Config and collection warnings are the controller's own to report: it saw the same.
        if when != "runtest":
            return
        self.outbox.add(warning_entry(warning_message, nodeid, location, self.test_lease))

    # -- serve loop --------------------------------------------------------------------------

    def serve(self, session: pytest.Session) -> None:
        """Run what the controller sends until it says shut down or goes away."""
        while True:
            self.exit_if_forked()
            self._take_messages(block=False)
            if self.pending and (len(self.pending) >= 2 or self.final):
                batch = serve_batch.next_batch(self)
                if batch:
                    serve_batch.run_batch(self, session, batch)
                else:
                    self._run_next(session)
                continue
            if self.shutting_down and not self.pending:
                break
            if not self._take_messages(block=True) and self._idle_expired():
                self.final = self.shutting_down = True
        self._teardown_all(session)
        with contextlib.suppress(OSError, EOFError, ValueError):  # nobody left to tell
            self.send(protocol.workeroutput(self._lease_output(final=True)))

    def restore_cwd(self) -> None:
        """Back to the session's working directory after each test, whatever ``reuse_leaks``
        says (the leak check warns of the change first): the next test, or the next run, must
        not start where this one left the process."""
        try:
            current = os.getcwd()
        except OSError:  # the directory was removed under us (a test's tmp_path)
            current = ""
        if self.cwd and current != self.cwd:
            with contextlib.suppress(OSError):
                os.chdir(self.cwd)
            self.leaks.forget_baseline()  # the change was this test's, reported with it

    def _idle_expired(self) -> bool:
        return bool(self._on_idle is not None and not self.pending and self._on_idle())

    def _take_messages(self, *, block: bool) -> bool:
        """Handle waiting messages (waiting up to POLL_SECONDS for one if ``block``);
        False when there were none."""
        if block:
            self.flush_held()  # nothing to run until a message comes: the controller waits too
        try:
            message = self.inbox.get(timeout=POLL_SECONDS) if block else self.inbox.get_nowait()
        except queue.Empty:
            return False
        while True:
            self._handle(message)
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return True

    def _handle(self, message: tuple[str, Any]) -> None:
        name, payload = message
        handler = self._handlers.get(name)
        if handler is None:
            # The two sides speak different protocols: end the session saying why
            # (STOPPED_EARLY), rather than drop what the controller asked for.
            raise UnknownMessage(
                f"replica {self.replica_id} got a message it does not know: {name!r}"
            )
        handler(payload)

    def _on_run(self, payload: str) -> None:
        nodeids = protocol.split_nodeids(payload)
        if self.leaks.recycling:  # sent before the controller read RECYCLE: hand it back
            self.send(protocol.returned(nodeids))
            return
        self.pending.extend(nodeids)
        self.final = False

    def _on_next(self, nodeid: str) -> None:
        self.next_hint = nodeid

    def _on_drain(self, payload: None) -> None:
        self.final = True

    def _on_cancel(self, payload: None) -> None:
        self.pending.clear()

    def _on_steal(self, count: int) -> None:
        """Another replica ran dry: hand back up to ``count`` of the tests not started, from
        the end (messages are handled between tests, so none of them has begun)."""
        taken = [self.pending.pop() for _ in range(min(count, len(self.pending)))]
        taken.reverse()
        self.send(protocol.returned(taken))

    def _on_shutdown(self, payload: None) -> None:
        self.final = self.shutting_down = True

    def _on_attach(self, payload: protocol.AttachPayload) -> None:
        self.drop_held()  # an earlier client's, if any
        self.next_hint = None
        self.lease = self.test_lease = payload.get("lease", "")
        self.leaks.forget_baseline()
        self.pending.clear()
        self.final = False
        self.worker.new_lease(payload.get("workerinput"))
        self._send_ready()

    def _on_end_lease(self, payload: None) -> None:
        self.send(protocol.workeroutput(self._lease_output()))

    def _on_client_gone(self, payload: None) -> None:
        """The link's end marker (``protocol.END``): nobody will read results, so run nothing
        more for that client."""
        self.pending.clear()
        self.drop_held()
        self.perrun.end(self._session())
        if self.persistent:
            self.final = False  # idle, warm, waiting for the next client
        else:
            self.final = self.shutting_down = True

    def _run_next(self, session: pytest.Session) -> None:
        nodeid = self.pending.popleft()
        item = self.items.get(nodeid)
        self.test_lease = self.lease
        if item is None:
            self.send(protocol.unknown_nodeid(nodeid, self.test_lease))
            return
        nextitem: Any
        hint, self.next_hint = self.next_hint, None
        if self.pending and self.pending[0] in self.items:
            nextitem = self.items[self.pending[0]]
        elif self.shutting_down and not self.pending:
            nextitem = None  # the last item tears everything down and reports its errors
        elif not self.pending and hint in self.items:
            # One test at a time: the session's next test (here or elsewhere) is known, so
            # this one's teardown leaves what that one shares, as in plain pytest, and what
            # fails there is this test's error.
            nextitem = self.items[hint]
        else:
            nextitem = KeepCollectors(item)
        self.running_nodeids = [nodeid]
        self.teardown_to(session, item)
        # Running the same item object again must not accumulate the previous run's state.
        item._report_sections = []
        item.user_properties = []
        self.begin_test(session, item)
        try:
            self.running = True
            self._one_at_a_time = True
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        except ClientGone:
            pass  # the client went away between phases: the test is abandoned, not reported
        finally:
            not_running(self)
            self._one_at_a_time = False
            held, self._held_finish = self._held_finish, None
            if held is not None:
                self.outbox.finish(held)  # after the test's warnings: none comes after its end
        self.running_nodeids = []
        self.restore_cwd()
        self.tests_run += 1
        self.leaks.after_test(nodeid, self.tests_run, self.pending)

    def teardown_to(self, session: pytest.Session, item: pytest.Item | None) -> None:
        """Tear down collectors the item does not share (kept up by KeepCollectors)."""
        stack = session._setupstate.stack
        if item is not None and list(stack) == item.listchain()[: len(stack)]:
            return  # the item shares every collector set up: nothing to tear down
        self.leaks.forget_baseline()  # finalizers are about to run: not the test's doing
        try:
            session._setupstate.teardown_exact(item)
        except Exception:
            # A finalizer's failure must not end the replica: report it and keep serving.
            self.send(protocol.teardown_error(os.getpid(), traceback.format_exc()))

    def _teardown_all(self, session: pytest.Session) -> None:
        # If a finalizer hangs, the controller kills us after teardown_timeout: leave the
        # stacks in the log first so it can say which one.
        faulthandler.dump_traceback_later(
            max(0.5, self.start["teardown_timeout"] * 0.8), exit=False, file=_log_fd()
        )
        self.teardown_to(session, None)

    def begin_test(self, session: pytest.Session, item: pytest.Item) -> None:
        if not self.perrun.open:
            self.perrun.begin(session)
        self.perrun.before_test(item)

    def _lease_output(self, *, final: bool = False) -> dict[str, Any]:
        """WORKEROUTPUT: the lease's ``config.workeroutput``, with other plugins' per-run data
        (``perrun.py``) ended first, so what they publish there is theirs to hand over."""
        ended = self.perrun.end(self._session()) if self.session is not None else {}
        output = self.worker.lease_output(final=final)
        if ended:
            output[protocol.PERRUN_KEY] = ended
        return output

    def _config(self) -> pytest.Config:
        return self._session().config

    def _session(self) -> pytest.Session:
        assert self.session is not None
        return self.session
