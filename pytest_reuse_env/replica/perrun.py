"""Other plugins' per-run state inside a replica, whose pytest session outlives many runs.

A replica's session lasts as long as the replica, but some plugins keep state for one pytest
run, begun in ``pytest_sessionstart`` and ended in ``pytest_sessionfinish``. This plugin of the
replica's session gives them a run of their own around every run the replica serves (from its
first test to the lease's end: ``END_LEASE`` or the replica's end) and hands what they
produced to the controller:

- **syrupy**: a fresh ``SnapshotSession`` per run (snapshot files are read afresh), finished at
  the run's end as an xdist worker finishes: it writes its snapshots and publishes its report,
  which the controller merges as syrupy's xdist controller does (``controller/perrun.py``);
- **doctests**: pytest's doctest runner clears a doctest's globals after running it; they are
  put back before the same item runs again;
- **junitxml**: ``record_xml_attribute`` and ``record_testsuite_property`` are recorded here
  (the replica writes no XML) and ride on the reports to the controller's junitxml;
- **--setup-show**: the SETUP/TEARDOWN lines ride on the reports to the controller's terminal.

Other plugins with per-run session state are listed in README ("Works with"); pytest-benchmark
and pytest-dependency tests run in the controller instead (``controller/ordering.py``).

Imports only the standard library and pytest (see ``replica/__init__.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Generator, Iterator
from typing import Any, final

import pytest

from pytest_reuse_env import protocol


@final
class XmlRecorder:
    """Stands in for junitxml's ``LogXML`` in ``config.stash`` (the replica writes no XML): what
    ``record_xml_attribute`` and ``record_testsuite_property`` record, for the controller."""

    def __init__(self, family: str, fixture_scopes: list[str]) -> None:
        self.family = family
        self._scopes = fixture_scopes
        self.attributes: list[list[str]] = []
        self.properties: list[list[Any]] = []
        #: Recorded by a fixture wider than function: plain pytest records it once per run, so
        #: it is sent again in every run this replica serves (the fixture stays up, warm).
        self.sticky: list[list[Any]] = []

    def node_reporter(self, nodeid: str) -> XmlRecorder:
        return self

    def add_attribute(self, name: str, value: object) -> None:
        self.attributes.append([str(name), str(value)])

    def add_global_property(self, name: str, value: object) -> None:
        sticky = bool(self._scopes) and self._scopes[-1] != "function"
        entry = [str(name), str(value), sticky]
        self.properties.append(entry)
        if sticky and entry not in self.sticky:
            self.sticky.append(entry)


@final
class PerRun:
    """A plugin of the replica's session: other plugins' state, run by run."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        #: A run is open from its first test to the lease's end (or the replica's end).
        self.open = False
        self.fixture_scopes: list[str] = []
        self._xml: XmlRecorder | None = None
        self._terminal: io.StringIO | None = None
        self._config: pytest.Config | None = None

    # -- the replica's own session -----------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self._config = config
        # The controller writes the XML: the replica's xmlpath is overridden to None, so look
        # at what the run asked for.
        if getattr(config.known_args_namespace, "xmlpath", None):
            from _pytest.junitxml import xml_key

            self._xml = XmlRecorder(str(config.getini("junit_family")), self.fixture_scopes)
            config.stash[xml_key] = self._xml  # type: ignore[misc]
        if config.getoption("setupshow", False):
            self._terminal = io.StringIO()
            _capture_show_test_item(self)
        # Around every fixture: only what something needs (a hook a fixture).
        if self._xml is not None:
            config.pluginmanager.register(FixtureScopes(self), "reuse_fixture_scopes")
        if self._terminal is not None:
            config.pluginmanager.register(FixtureOutput(self), "reuse_fixture_output")
        benchmark = getattr(config, "_benchmarksession", None)
        if benchmark is not None:
            # Its tests run in the controller; a replica must never write results of its own.
            benchmark.json = benchmark.save = None
            benchmark.autosave = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._xml is not None:  # junitxml's unconfigure would unregister it as its LogXML
            from _pytest.junitxml import xml_key

            del config.stash[xml_key]
            self._xml = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # What syrupy saw at the replica's start is no run's: a run starts with its first test.
        self._syrupy_blank(session)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, Any, Any]:
        # Runs before syrupy's own finish: the last run was handed over already; the blank
        # session left must neither write nor delete snapshots.
        self._syrupy_blank(session)
        if hasattr(session.config.option, "disable_unused_snapshots"):
            session.config.option.disable_unused_snapshots = True
        return (yield)

    # -- run by run --------------------------------------------------------------------------

    def begin(self, session: pytest.Session) -> None:
        """Before the first test of a run."""
        self.open = True
        syrupy = _syrupy_module(session.config)
        if syrupy is not None:
            _clear_snapshot_caches()
            syrupy.pytest_sessionstart(session)
            snapshots = session.config._syrupy  # type: ignore[attr-defined]
            for path in sorted({item.path for item in session.items}):
                snapshots.collect_module(path)
            snapshots.collect_items(session.items)
            snapshots.select_items(session.items)
        if self._xml is not None:
            self._xml.properties = [list(p) for p in self._xml.sticky]

    def end(self, session: pytest.Session) -> dict[str, Any]:
        """After the last test of a run: what the controller merges (protocol.PERRUN_KEY)."""
        output: dict[str, Any] = {}
        if not self.open:
            return output
        self.open = False
        config = session.config
        snapshots = getattr(config, "_syrupy", None)
        if snapshots is not None and _syrupy_module(config) is not None:
            workeroutput: dict[str, Any] = getattr(config, "workeroutput", {})
            with _posing_as_xdist_worker(self.replica_id):
                snapshots.finish()
            output[protocol.PERRUN_SYRUPY] = {
                "report": workeroutput.pop("syrupy_report", None),
                "sidecars": workeroutput.pop("syrupy_write_sidecars", []),
            }
            self._syrupy_blank(session)
        return output

    def before_test(self, item: pytest.Item) -> None:
        """Before every test: undo what running the same item object last time left."""
        dtest = getattr(item, "dtest", None)
        if dtest is not None and isinstance(getattr(dtest, "globs", None), dict):
            # doctest's runner clears the globals after a run (clear_globs); kept on the
            # DocTest itself, so a re-collected item starts from its own.
            saved = dtest.__dict__.setdefault("_reuse_globs", dict(dtest.globs))
            dtest.globs.clear()
            dtest.globs.update(saved)

    def has_extras(self) -> bool:
        """Whether the next report carries something of this module's (it must travel full)."""
        xml = self._xml
        terminal = self._terminal
        return bool(
            (xml is not None and (xml.attributes or xml.properties))
            or (terminal is not None and terminal.tell())
        )

    def report_extras(self) -> dict[str, Any]:
        """Keys for the next report sent: what was recorded since the last one."""
        extras: dict[str, Any] = {}
        if self._xml is not None:
            if self._xml.attributes:
                extras[protocol.REPORT_XML_ATTRIBUTES], self._xml.attributes = (
                    self._xml.attributes,
                    [],
                )
            if self._xml.properties:
                extras[protocol.REPORT_XML_PROPERTIES], self._xml.properties = (
                    self._xml.properties,
                    [],
                )
        if self._terminal is not None and self._terminal.tell():
            extras[protocol.REPORT_TERMINAL] = self._terminal.getvalue()
            self._terminal.seek(0)
            self._terminal.truncate()
        return extras

    @contextlib.contextmanager
    def terminal(self) -> Iterator[None]:
        """``--setup-show``: what pytest writes to the terminal meanwhile goes to the reports."""
        config = self._config
        reporter = config.pluginmanager.get_plugin("terminalreporter") if config else None
        if self._terminal is None or reporter is None:
            yield
            return
        saved = reporter._tw
        from _pytest._io import TerminalWriter

        writer = TerminalWriter(self._terminal)
        writer.hasmarkup = saved.hasmarkup
        writer.fullwidth = saved.fullwidth
        reporter._tw = writer
        try:
            yield
        finally:
            reporter._tw = saved

    def _syrupy_blank(self, session: pytest.Session) -> None:
        syrupy = _syrupy_module(session.config)
        if syrupy is not None:
            syrupy.pytest_sessionstart(session)


@final
class FixtureScopes:
    """Around each fixture's setup, for ``PerRun``'s junitxml: the scope of the fixture being
    set up (``record_property`` from a wider fixture is sticky). Registered only with
    junitxml."""

    def __init__(self, perrun: PerRun) -> None:
        self.scopes = perrun.fixture_scopes

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, Any, Any]:
        self.scopes.append(str(fixturedef.scope))
        try:
            return (yield)
        finally:
            self.scopes.pop()


@final
class FixtureOutput:
    """Around each fixture's setup and finalizer: ``--setup-show``'s lines go to the reports
    (``PerRun.terminal``). Registered only with ``--setup-show``."""

    def __init__(self, perrun: PerRun) -> None:
        self.perrun = perrun

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(self) -> Generator[None, Any, Any]:
        with self.perrun.terminal():
            return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_post_finalizer(self) -> Iterator[None]:
        with self.perrun.terminal():
            return (yield)


def _syrupy_module(config: pytest.Config) -> Any:
    """syrupy's plugin module when it is active (and new enough to finish as a worker)."""
    plugin = config.pluginmanager.get_plugin("syrupy")
    if plugin is None or not hasattr(plugin, "pytest_sessionstart"):
        return None
    return plugin


def _clear_snapshot_caches() -> None:
    """syrupy caches snapshot files it read by session id: a new run reads them afresh."""
    try:
        from syrupy.extensions.base import AbstractSyrupyExtension
    except ImportError:
        return
    pending: list[type] = [AbstractSyrupyExtension]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for value in vars(cls).values():
            cached = getattr(value, "__func__", value)
            clear = getattr(cached, "cache_clear", None)
            if callable(clear):
                clear()


@contextlib.contextmanager
def _posing_as_xdist_worker(replica_id: str) -> Iterator[None]:
    """syrupy finishes as an xdist worker (publishes, deletes nothing) when this is set."""
    name = "PYTEST_XDIST_WORKER"
    saved = os.environ.get(name)
    os.environ[name] = saved or replica_id
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def _capture_show_test_item(perrun: PerRun) -> None:
    """``--setup-show`` writes the test's line between setup and call, outside any hook."""
    from _pytest import runner

    original = runner.show_test_item
    if getattr(original, "reuse_captured", False):
        return

    def show_test_item(*args: Any, **kwargs: Any) -> None:
        with perrun.terminal():
            original(*args, **kwargs)

    show_test_item.reuse_captured = True  # type: ignore[attr-defined]
    runner.show_test_item = show_test_item
