"""Reports and warnings the controller makes up or rebuilds from a replica's words, and their
replay through pytest's own hooks (so the terminal, junitxml, ``-x`` and ``--lf`` see ordinary
reports)."""

from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.errors import record_warning

if TYPE_CHECKING:
    from pytest_reuse_env.controller.replica import Replica


def synthetic_report(
    item: pytest.Item, when: str, outcome: str, message: str | None
) -> pytest.TestReport:
    """A report for a phase no replica reported: a crash, a test no replica could run."""
    now = time.time()
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={name: 1 for name in item.keywords},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=message,
        when=when,  # type: ignore[arg-type]
        sections=[],
        duration=0.0,
        start=now,
        stop=now,
        user_properties=[],
    )


def _teardown_message(replica_id: str, after: str, text: str) -> str:
    """A finalizer's failure in a replica between tests, after the test ``after``."""
    return (
        f"fixture teardown failed in replica {replica_id} after {after}, when its module or "
        f"class was torn down (between tests):\n{text}"
    )


def warning_from_payload(payload: protocol.WarningPayload) -> warnings.WarningMessage:
    """Rebuild a replica's warning so pytest's warnings summary shows it as its own."""
    category: type[Warning] = UserWarning
    try:
        found = importlib.import_module(payload["category_module"])
        for part in payload["category_name"].split("."):
            found = getattr(found, part)
        if isinstance(found, type) and issubclass(found, Warning):
            category = found
    except (ImportError, AttributeError):
        pass
    return warnings.WarningMessage(
        payload["message"], category, payload["filename"], payload["lineno"]
    )


def log_excerpt(replica: Replica) -> str:
    """The end of the replica's log (or the start of its faulthandler dump), for a report."""
    tail = replica.log_tail()
    if not tail:
        return ""
    return f"\nlast lines of the replica's log {replica.log_path}:\n{tail}"


#: What ended a replica's session, by StoppedEarlyPayload kind.
_STOP_CAUSES = {
    "interrupt": "the test raised KeyboardInterrupt; the run is interrupted, as plain pytest's",
    "exit": "pytest.exit() was called; the run ends, as plain pytest's",
    "error": "an error inside pytest ended the replica's session; its other tests run elsewhere",
}


def stopped_early_message(
    replica: Replica, payload: protocol.StoppedEarlyPayload, nodeid: str
) -> str:
    others = [n for n in payload["nodeids"] if n != nodeid]
    together = f" (running concurrently with {', '.join(others)})" if others else ""
    cause = _STOP_CAUSES.get(payload["kind"], _STOP_CAUSES["error"])
    return (
        f"replica {replica.id} (pid {replica.pid}) stopped while running {nodeid}{together}: "
        f"{cause}\n{payload['traceback'].rstrip()}"
    )


def start_log_note(replica: Replica, start_failure: str | None) -> str:
    """Where the log of a replica that could not start is kept, and its end when the replica
    sent no traceback of its own (``start_failure``)."""
    if start_failure is None:
        return log_excerpt(replica)
    if replica.log_path is None or not os.path.exists(replica.log_path):
        return ""
    return f"\nthe replica's log is kept: {replica.log_path}"


def not_collected_message(replica: Replica, nodeid: str) -> str:
    lines = [
        f"replica {replica.id} (pid {replica.pid}) did not collect {nodeid}; "
        "its collection differs from this process's"
    ]
    lines += replica.collect_errors
    return "\n".join(lines)


#: Not looked up yet (None means: no short progress output).
_UNKNOWN: Final = object()


@final
class ReportReplayer:
    """Replays reports into the controller's pytest session and makes up the ones no replica
    could send (a crash, a test no replica could run)."""

    def __init__(
        self,
        config: pytest.Config,
        items: dict[str, pytest.Item],
        *,
        labels: bool,
        current_test_only: bool = False,
    ):
        self.config = config
        self.items = items
        #: An xdist worker: every report must be of the test it is running.
        self.current_test_only = current_test_only
        #: Teardown errors from between tests waiting for the replica's next teardown report
        #: (``current_test_only``), by replica id: (the test it came after, the traceback).
        self._pending_teardown: dict[str, list[tuple[str, str]]] = {}
        #: The session's last test, fed one at a time (``ReuseController._before_last_test``):
        #: its teardown takes every replica's pending teardown errors.
        self.last_test: str | None = None
        #: Give reports the xdist-style ``node`` (the "[r0 warm]" prefix); not inside an xdist
        #: worker, where xdist sets its own and serializes it.
        self.labels = labels
        #: Nodeids whose logfinish has been replayed.
        self.completed: set[str] = set()
        self.teardown_errors: list[tuple[str, str]] = []
        #: Running tests' locations as their replicas sent them (until their logfinish).
        self._locations: dict[str, tuple[str, int | None, str]] = {}
        #: Each started test's hooks (``item.ihook`` looks its file's conftests up on every
        #: call; five calls a test), from its logstart to its logfinish.
        self._hooks: dict[str, Any] = {}
        #: Each routed item's report keywords, built once (compact reports reuse them).
        self._keywords: dict[str, dict[str, Literal[1]]] = {}
        #: Suite properties recorded by a replica's wide fixture: each replica sends them in
        #: every run; plain pytest records them once.
        self._sticky_properties: set[tuple[str, str]] = set()
        #: The terminal reporter when it writes a line of letters per file (looked up once).
        self._progress: Any = _UNKNOWN
        #: A test file's path as the terminal reporter names it, by the nodeid's file part.
        self._fspaths: dict[str, Path] = {}

    def rebuild(self, data: dict[str, Any]) -> pytest.TestReport:
        report: pytest.TestReport = self.config.hook.pytest_report_from_serializable(
            config=self.config, data=data
        )
        return report

    def expand(
        self, nodeid: str, compact: list[Any], replica_id: str, warm: bool, lease: str
    ) -> pytest.TestReport:
        """The ``TestReport`` a compact one stands for (see ``protocol.PASSED``): what
        ``pytest_report_from_serializable`` would have rebuilt from the full one."""
        _, when, duration, start, stop = compact[:5]
        keywords = self._keywords.get(nodeid)
        if keywords is None:
            keywords = self._keywords[nodeid] = dict.fromkeys(self.items[nodeid].keywords, 1)
        return pytest.TestReport(
            nodeid,
            self._location(nodeid),
            dict(keywords),
            "passed",
            None,
            when,
            [],
            duration,
            start,
            stop,
            [],
            **{
                protocol.REPORT_REPLICA: replica_id,
                protocol.REPORT_WARM: warm,
                protocol.REPORT_LEASE: lease,
            },
        )

    def logfinish(self, nodeid: str) -> None:
        self._ihook(nodeid).pytest_runtest_logfinish(nodeid=nodeid, location=self._location(nodeid))
        self.completed.add(nodeid)
        self._locations.pop(nodeid, None)
        self._hooks.pop(nodeid, None)

    def collected_again(self) -> None:
        """Watch mode's next round collected the tests again: what was kept of each test's
        item (its keywords, its hooks) may have changed with an edit."""
        self._keywords.clear()
        self._hooks.clear()

    def _ihook(self, nodeid: str) -> Any:
        hook = self._hooks.get(nodeid)
        if hook is None:
            hook = self._hooks[nodeid] = self.items[nodeid].ihook
        return hook

    def _location(self, nodeid: str) -> tuple[str, int | None, str]:
        """The item's location: as the replica sent it with the test, else computed here
        (``Item.location`` costs a ``reportinfo`` and a relative path, on each process)."""
        location = self._locations.get(nodeid)
        return location if location is not None else self.items[nodeid].location

    def replica_warning(self, payload: protocol.WarningPayload) -> None:
        """A warning a test recorded in a replica, in pytest's warnings summary as its own."""
        self.config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": warning_from_payload(payload),
                "when": "runtest",
                "nodeid": payload["nodeid"],
                "location": payload["location"],
            }
        )

    def replay(self, report: pytest.TestReport, replica: Replica) -> None:
        self.label(report, replica)
        if self._pending_teardown:
            self._carry_teardown_error(report, replica.id)
        extras = report.__dict__
        terminal = extras.pop(protocol.REPORT_TERMINAL, None)
        self._record_xml(
            report,
            extras.pop(protocol.REPORT_XML_ATTRIBUTES, None),
            extras.pop(protocol.REPORT_XML_PROPERTIES, None),
        )
        if self.config.option.capture == "no":
            self._show_output(report)
        reporter = self._short_progress()
        if (
            reporter is not None
            and reporter.currentfspath != self._fspath(report.nodeid)
            and (terminal or self._has_letter(report))
        ):
            # Replicas' reports interleave: a result goes under its own file's header.
            reporter.write_fspath_result(report.nodeid, "")
        if terminal:
            writer = self.config.get_terminal_writer()
            writer.write(terminal)
            writer.flush()
        self._ihook(report.nodeid).pytest_runtest_logreport(report=report)

    def logstart(self, nodeid: str, location: tuple[str, int | None, str] | None = None) -> None:
        """A routed test began (``location``: the item's, from the replica). Its file's header
        waits for its first result: replicas start tests of several files at once, and a
        header written now could sit above another file's results."""
        item = self.items[nodeid]
        if location is not None and location[0]:  # not a rerun's placeholder
            self._locations[nodeid] = location
        location = self._location(nodeid)
        reporter = self._short_progress()
        hook = self._ihook(nodeid)
        if reporter is None:
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=location)
            return
        shown = reporter.currentfspath
        reporter.currentfspath = self._fspath(item.nodeid)
        try:
            hook.pytest_runtest_logstart(nodeid=item.nodeid, location=location)
        finally:
            reporter.currentfspath = shown

    def _short_progress(self) -> Any:
        """The terminal reporter when it writes one line of result letters per file."""
        if self._progress is _UNKNOWN:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            short = reporter is not None and reporter.showfspath and not reporter.showlongtestinfo
            self._progress = reporter if short else None
        return self._progress

    def _fspath(self, nodeid: str) -> Path:
        """What ``write_fspath_result`` compares with its ``currentfspath``."""
        file = nodeid.split("::")[0]
        path = self._fspaths.get(file)
        if path is None:
            path = self._fspaths[file] = self.config.rootpath / file
        return path

    def _has_letter(self, report: pytest.TestReport) -> bool:
        status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        return bool(status and status[1])

    def _record_xml(self, report: pytest.TestReport, attributes: Any, properties: Any) -> None:
        """junitxml's ``record_xml_attribute`` and ``record_testsuite_property`` from a replica."""
        if not attributes and not properties:
            return
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        if attributes:
            node = xml.node_reporter(report)
            for name, value in attributes:
                node.add_attribute(name, value)
        for name, value, sticky in properties or ():
            if sticky:
                if (name, value) in self._sticky_properties:
                    continue
                self._sticky_properties.add((name, value))
            xml.add_global_property(name, value)

    def _show_output(self, report: pytest.TestReport) -> None:
        """``-s``: a replica captures anyway (its stdout is no terminal); print what the test
        wrote as its report arrives, and drop the sections, as plain ``-s`` has none."""
        captured = [
            (name, content)
            for name, content in report.sections
            if name.startswith(("Captured stdout", "Captured stderr"))
        ]
        # A phase's report repeats the earlier phases' sections: print its own only.
        for name, content in captured:
            if name.endswith(f" {report.when}"):
                stream = sys.stderr if "stderr" in name else sys.stdout
                stream.write(content)
                stream.flush()
        if captured:
            report.sections = [s for s in report.sections if s not in captured]

    def label(self, report: pytest.TestReport, replica: Replica) -> None:
        """``report.node`` gives the "[r0 warm]" prefix in ``-v`` output and keys junitxml."""
        setattr(report, protocol.REPORT_ENVIRONMENT, replica.environment_name)
        if self.labels:
            warm = getattr(report, protocol.REPORT_WARM, False)
            report.node = replica.node_warm if warm else replica.node_cold  # type: ignore[attr-defined]

    def crash(
        self,
        nodeid: str,
        phases: list[str],
        message: str,
        replica: Replica,
        *,
        logged_start: bool,
    ) -> None:
        """Reports for a test its replica died running: the phase it was in fails."""
        when = (
            "setup" if "setup" not in phases else ("call" if "call" not in phases else "teardown")
        )
        item = self.items[nodeid]
        if not logged_start:
            item.ihook.pytest_runtest_logstart(nodeid=nodeid, location=item.location)
        sequence = [(when, "failed")]
        if when == "call" and "setup" not in phases:
            sequence.insert(0, ("setup", "passed"))
        if when != "teardown":
            sequence.append(("teardown", "passed"))
        for phase, outcome in sequence:
            report = synthetic_report(
                item, phase, outcome, message if outcome == "failed" else None
            )
            setattr(report, protocol.REPORT_REPLICA, replica.id)
            setattr(report, protocol.REPORT_WARM, replica.current_warm)
            self.label(report, replica)
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
        self.completed.add(nodeid)

    def fail_unrun(self, nodeid: str, message: str) -> None:
        """A test no replica could run: an error at setup, so no result is lost."""
        item = self.items[nodeid]
        item.ihook.pytest_runtest_logstart(nodeid=nodeid, location=item.location)
        for phase, outcome in (("setup", "failed"), ("teardown", "passed")):
            report = synthetic_report(
                item, phase, outcome, message if outcome == "failed" else None
            )
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
        self.completed.add(nodeid)

    def teardown_error(self, replica: Replica, text: str) -> None:
        """A fixture's finalizer failed in ``replica`` between tests (its next test came, or
        the run ended): plain pytest reports it at the teardown of the test it ran after, so
        that test gets a teardown error now, after its own reports (a second teardown report:
        junitxml lists the test twice). In an xdist worker, which reports only the test it
        runs, the error goes with the next test's teardown from that replica instead (the
        message names the test it came after). With no such test of this run (a warm
        replica's module left from the last run it served, the end of the run in an xdist
        worker), a warning. Either way the run exits 1 (``teardown_errors``)."""
        self.teardown_errors.append((replica.id, text))
        item = self.items.get(replica.last_finished or "")
        if item is None or item.nodeid not in self.completed:
            self.warn(f"fixture teardown failed in replica {replica.id} between tests:\n{text}")
        elif self.current_test_only:
            self._pending_teardown.setdefault(replica.id, []).append((item.nodeid, text))
        else:
            report = synthetic_report(
                item, "teardown", "failed", _teardown_message(replica.id, item.nodeid, text)
            )
            self.label(report, replica)
            item.ihook.pytest_runtest_logreport(report=report)

    @property
    def pending_teardown_errors(self) -> bool:
        return bool(self._pending_teardown)

    def _carry_teardown_error(self, report: pytest.TestReport, replica_id: str | None) -> None:
        """In an xdist worker: a teardown error from between tests becomes the error of this
        passed teardown (the next test the replica ``replica_id`` ran; the session's last
        test, here or in a replica, takes every replica's, ``last_test``)."""
        if report.when != "teardown" or not report.passed:
            return
        if report.nodeid == self.last_test:
            ids = list(self._pending_teardown)
        else:
            ids = [replica_id] if replica_id is not None else []
        pending = [(rid, entry) for rid in ids for entry in self._pending_teardown.pop(rid, [])]
        if pending:
            report.outcome = "failed"
            report.longrepr = "\n\n".join(
                _teardown_message(rid, after, text) for rid, (after, text) in pending
            )

    def carry_into_local(self, report: pytest.TestReport) -> None:
        """The session's last test ran here (``LastLocalTeardown``): its teardown report takes
        the replicas' pending teardown errors."""
        self._carry_teardown_error(report, None)

    def warn_pending(self) -> None:
        """End of the run: teardown errors no later test could carry are warnings."""
        for replica_id, pending in self._pending_teardown.items():
            for after, text in pending:
                self.warn(_teardown_message(replica_id, after, text))
        self._pending_teardown.clear()

    def warn(self, message: str) -> None:
        """A warning in pytest's warnings summary, about replicas rather than one test."""
        record_warning(self.config, message, when="runtest")


@final
class LastLocalTeardown:
    """The session's last test, fed one at a time, runs in the pytest process (it is not
    routed) while replicas hold teardown errors no test of theirs could carry (an xdist
    worker reports only the test it runs): its teardown report takes them, as that test's
    teardown tears everything down in plain pytest. Registered only then
    (``ReuseController._before_last_test``)."""

    def __init__(self, reports: ReportReplayer) -> None:
        self.reports = reports

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        if item.nodeid == self.reports.last_test:
            self.reports.carry_into_local(report)
        return report
