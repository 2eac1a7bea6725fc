"""A replica as other plugins see it: an xdist worker, lease after lease.

Plugins written for pytest-xdist tell a worker by ``config.workerinput`` and read there what
their controller-side ``pytest_configure_node`` put in (pytest-randomly's seed,
pytest-rerunfailures' status server, pytest-cov's controller host); they send results home in
``config.workeroutput``, which the controller hands to ``pytest_testnodedown``. A replica gets
its ``workerinput`` in START, and a new one in every ATTACH (a later run: new run uid, seed,
server port); this plugin applies the new one to what plugins took from the old one at
configure time, and builds the ``workeroutput`` of each lease when the run is done with it.

Coverage (pytest-cov): what the replica measured while it imported and collected is kept as a
baseline; every lease reports the baseline plus what ran during the lease, in memory (never a
data file a later run could pick up), through pytest-cov's own xdist path
(``cov_worker_data``), so a warm replica's import-time lines count in every run as they do in
plain pytest. Baseline lines of a file changed since they were measured are dropped.

Imports only the standard library and pytest; the plugins it adapts are imported lazily, only
when they are loaded.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import socket
import sys
import traceback
import types
from typing import Any, Final, final

import pytest

from pytest_reuse_env.role import REPLICA_KEY

#: Session fixtures that read ``workerinput`` (pytest-xdist's); rebuilt when a lease changes it.
WORKERINPUT_FIXTURES: Final = {"worker_id": "workerid", "testrun_uid": "testrunuid"}


def apply_environment(workerinput: dict[str, Any]) -> None:
    """The environment variables an xdist worker has (``PYTEST_XDIST_WORKER`` and co.)."""
    if "workerid" in workerinput:
        os.environ["PYTEST_XDIST_WORKER"] = str(workerinput["workerid"])
    if "testrunuid" in workerinput:
        os.environ["PYTEST_XDIST_TESTRUNUID"] = str(workerinput["testrunuid"])
    if "workercount" in workerinput:
        os.environ["PYTEST_XDIST_WORKER_COUNT"] = str(workerinput["workercount"])


@final
class WorkerSide:
    """The replica's pytest plugin for ``workerinput``/``workeroutput``, lease by lease."""

    def __init__(self) -> None:
        self.config: pytest.Config | None = None
        self.session: pytest.Session | None = None
        self.coverage: LeaseCoverage | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        _rerunfailures_without_xdist(config)
        _rerunfailures_nodelay(config)

    @pytest.hookimpl(trylast=True)  # after pytest-cov started its worker-side measurement
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        self.coverage = LeaseCoverage.take_over(session.config)
        if self.coverage is not None:  # around every setup: only with pytest-cov
            session.config.pluginmanager.register(
                CoverageSetups(self.coverage), "reuse_coverage_setups"
            )

    # -- called by the serve loop ------------------------------------------------------------

    def ready(self) -> None:
        """Collected and pre-warmed, before the first READY: keep that as the baseline."""
        if self.coverage is not None:
            self.coverage.keep_baseline()

    def new_lease(self, workerinput: dict[str, Any] | None) -> None:
        """A run attached: its ``workerinput`` replaces the previous run's."""
        if self.coverage is not None:
            self.coverage.discard()  # measured for a client that left without asking for it
        if not workerinput or self.config is None:
            return
        config = self.config
        current: dict[str, Any] = config.workerinput  # type: ignore[attr-defined]
        changed = {
            name
            for name, key in WORKERINPUT_FIXTURES.items()
            if current.get(key) != workerinput.get(key)
        }
        current.clear()
        current.update(workerinput)
        current[REPLICA_KEY] = True
        apply_environment(current)
        _randomly_lease(config, current)
        _rerunfailures_lease(config, current)
        if changed and self.session is not None:
            _rebuild_fixtures(self.session, sorted(changed))

    def lease_output(self, *, final: bool = False) -> dict[str, Any]:
        """``workeroutput`` of the lease that ends now (``final``: the session ended too)."""
        output: dict[str, Any] = {}
        config = self.config
        if final and config is not None:
            output.update(getattr(config, "workeroutput", {}))
        if self.coverage is not None and config is not None:
            output.update(self.coverage.lease_output(config, restart=not final))
        return output


# -- pytest-cov --------------------------------------------------------------------------------


@final
class LeaseCoverage:
    """pytest-cov's worker-side measurement, cut at every lease's end.

    pytest-cov's ``DistWorker`` measures into a data file of its own; here measurement goes
    to a fresh in-memory ``Coverage`` per lease, which the ``DistWorker`` uses in its stead
    (for ``no_cover`` and contexts), and each lease's data travels in its ``workeroutput``.

    The baseline (reported with every lease) is what ran while the replica imported and
    collected, plus what ran in tests' setup phases (session and module fixtures a warm replica
    keeps, and the imports they made), recorded under a dynamic context of its own.
    """

    def __init__(self, controller: Any, *, track_setup: bool) -> None:
        self.controller = controller
        self.track_setup = track_setup
        self.baseline: Any = None
        #: ``{file: st_mtime_ns}`` of the baseline's files when they were measured.
        self.baseline_stats: dict[str, int | None] = {}

    @classmethod
    def take_over(cls, config: pytest.Config) -> LeaseCoverage | None:
        plugin = config.pluginmanager.get_plugin("_cov")
        controller = getattr(plugin, "cov_controller", None)
        if controller is None or type(controller).__name__ != "DistWorker":
            return None
        # --cov-context=test switches contexts itself: then setups are not told apart.
        taken = cls(controller, track_setup=getattr(config.option, "cov_context", None) is None)
        controller.cov.stop()  # nothing flushed yet: it leaves no data file behind
        taken._start_new()
        return taken

    def _start_new(self) -> None:
        import coverage

        controller = self.controller
        cov = coverage.Coverage(
            source=controller.cov_source,
            branch=controller.cov_branch,
            config_file=controller.cov_config,
            data_file=None,  # in memory: no data file a later combine could take
        )
        cov._warn_unimported_source = False
        cov._warn_no_data = False
        cov.start()
        controller.cov = cov

    def _stop(self) -> Any:
        """Stop measuring; the data measured since the last cut."""
        cov = self.controller.cov
        cov.stop()
        return cov.get_data()

    def setup_started(self) -> None:
        if self.track_setup and self.controller.cov._started:
            self.controller.cov.switch_context(SETUP_CONTEXT)

    def setup_finished(self) -> None:
        if self.track_setup and self.controller.cov._started:
            self.controller.cov.switch_context("")

    def keep_baseline(self) -> None:
        if self.baseline is not None:
            return
        self._add_to_baseline(_flat(self._stop()))
        self._start_new()

    def _add_to_baseline(self, data: Any) -> None:
        from coverage import CoverageData

        if self.baseline is None:
            self.baseline = CoverageData(no_disk=True)
        # A file edited and re-imported since: its old lines give way to the new ones.
        edited = {
            p
            for p in data.measured_files()
            if p in self.baseline_stats and self.baseline_stats[p] != _mtime(p)
        }
        if edited:
            kept = set(self.baseline_stats) - edited
            self.baseline = _flat(self.baseline, only=kept)
            for path in edited:
                del self.baseline_stats[path]
        for path in data.measured_files():
            self.baseline_stats.setdefault(path, _mtime(path))
        self.baseline.update(data)

    def discard(self) -> None:
        self._stop()
        self._start_new()

    def lease_output(self, config: pytest.Config, *, restart: bool) -> dict[str, Any]:
        from coverage import CoverageData

        lease = self._stop()
        if self.track_setup:
            self._add_to_baseline(_flat(lease, SETUP_CONTEXT))
        # A module imported by a test body runs its top level once per replica, not per run.
        self._add_to_baseline(_import_time(lease))
        combined = CoverageData(no_disk=True)
        if self.baseline is not None:
            combined.update(self._current_baseline())
        combined.update(_flat(lease) if self.track_setup else lease)
        if restart:
            self._start_new()
        else:
            # pytest-cov's own finish comes next: it must neither combine data files lying
            # around (it would when not collocated) nor report what was just sent.
            self.controller.is_collocated = True
        workerinput = getattr(config, "workerinput", {})
        return {
            "cov_worker_node_id": workerinput.get("workerid", "replica"),
            "cov_worker_path": self.controller.topdir,
            "cov_worker_data": combined.dumps(),
        }

    def _current_baseline(self) -> Any:
        """The baseline less the files edited since it was measured (their lines moved)."""
        keep = {p for p, stat in self.baseline_stats.items() if _mtime(p) == stat}
        if len(keep) == len(self.baseline_stats):
            return self.baseline
        return _flat(self.baseline, only=keep)


#: The dynamic context of lines run in tests' setup phases (kept in a warm replica's baseline).
SETUP_CONTEXT: Final = "reuse-env-setup"


def _flat(data: Any, context: str | None = None, only: set[str] | None = None) -> Any:
    """``data``'s lines (or arcs) without contexts, of one context or all, of some files."""
    from coverage import CoverageData

    flat = CoverageData(no_disk=True)
    data.set_query_contexts([context] if context is not None else None)
    try:
        files = [p for p in data.measured_files() if only is None or p in only]
        if data.has_arcs():
            arcs = {p: data.arcs(p) for p in files}
            flat.add_arcs({p: a for p, a in arcs.items() if a})
        else:
            lines = {p: data.lines(p) for p in files}
            flat.add_lines({p: found for p, found in lines.items() if found})
    finally:
        data.set_query_contexts(None)
    return flat


def _import_time(data: Any) -> Any:
    """The part of ``data`` that ran at import time: module and class bodies (``def`` lines,
    constants, decorators), found in each file's syntax tree."""
    from coverage import CoverageData

    flat = CoverageData(no_disk=True)
    arcs: dict[str, list[tuple[int, int]]] = {}
    lines: dict[str, list[int]] = {}
    for path in data.measured_files():
        top = _top_level_lines(path, _mtime(path))
        if not top:
            continue
        if data.has_arcs():
            found = [a for a in data.arcs(path) or [] if abs(a[0]) in top and abs(a[1]) in top]
            if found:
                arcs[path] = found
        else:
            executed = [n for n in data.lines(path) or [] if n in top]
            if executed:
                lines[path] = executed
    if arcs:
        flat.add_arcs(arcs)
    if lines:
        flat.add_lines(lines)
    return flat


@functools.lru_cache(maxsize=4096)
def _top_level_lines(path: str, mtime: int | None) -> frozenset[int]:
    """Lines of ``path`` that run when it is imported (empty if it is not Python source)."""
    try:
        with open(path, "rb") as source:
            tree = ast.parse(source.read())
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    found: set[int] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            found.add(node.lineno)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.update(d.lineno for d in node.decorator_list)
                if isinstance(node, ast.ClassDef):
                    visit(node.body)
                continue
            if not isinstance(getattr(node, "body", None), list):  # a simple statement
                found.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            for field in ("body", "orelse", "finalbody"):
                child = getattr(node, field, None)
                if isinstance(child, list) and child and isinstance(child[0], ast.stmt):
                    visit(child)
            for handler in getattr(node, "handlers", []) or []:
                visit(handler.body)
            for case in getattr(node, "cases", []) or []:
                visit(case.body)

    visit(tree.body)
    return frozenset(found)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


# -- plugins that read workerinput at configure time -----------------------------------------


def _randomly_lease(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """pytest-randomly takes its seed from ``workerinput`` once, in ``pytest_configure``."""
    if "randomly_seed" in workerinput and hasattr(config.option, "randomly_seed"):
        config.option.randomly_seed = workerinput["randomly_seed"]


def _rerunfailures_lease(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """pytest-rerunfailures connects to its controller's status server once, at configure:
    a later run's server is another one."""
    db = getattr(config, "failures_db", None)
    if "sock_port" not in workerinput or type(db).__name__ != "ClientStatusDB":
        return
    module = sys.modules.get("pytest_rerunfailures")
    if module is None:
        return
    try:
        fresh = module.ClientStatusDB(workerinput["sock_port"], workerinput["statusdb_token"])
    except OSError:
        return  # the old connection stays; reruns then count as in the earlier run
    old_socket = getattr(db, "sock", None)
    if old_socket is not None:
        old_socket.close()
    config.failures_db = fresh  # type: ignore[attr-defined]
    _rerunfailures_nodelay(config)


def _rerunfailures_nodelay(config: pytest.Config) -> None:
    """pytest-rerunfailures' worker side sends a "set" its server does not answer, then a
    "get": with Nagle's algorithm the second waits for the first's acknowledgement, which the
    server's kernel delays, 40 ms a test (measured: 60 quick tests with ``--reruns 2`` took
    3.5 s in one replica, against 0.5 s in plain pytest; ``pytest -n 2`` pays it too). The
    messages are a few bytes each: sent at once, with ``TCP_NODELAY``."""
    sock = getattr(getattr(config, "failures_db", None), "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _rerunfailures_without_xdist(config: pytest.Config) -> None:
    """Without pytest-xdist installed, pytest-rerunfailures on a worker holds back the reports
    of failed attempts (it guards against xdist < 1.20); a replica forwards every report."""
    module = sys.modules.get("pytest_rerunfailures")
    if module is None or not config.pluginmanager.hasplugin("rerunfailures"):
        return
    if getattr(module, "works_with_current_xdist", None) is None:
        return
    if module.works_with_current_xdist() is None:
        module.works_with_current_xdist = lambda: True  # type: ignore[attr-defined]


def _rebuild_fixtures(session: pytest.Session, names: list[str]) -> None:
    """Finish the cached values of fixtures whose ``workerinput`` changed, and whatever was
    built on them, so the next test that asks gets this run's."""
    # What finish() reads of its request: the node the fixture's errors are reported for.
    request = types.SimpleNamespace(node=session, config=session.config)
    finished: set[int] = set()
    for item in session.items:
        info = getattr(item, "_fixtureinfo", None)
        for name in names:
            for fixturedef in info.name2fixturedefs.get(name, ()) if info else ():
                if id(fixturedef) in finished or fixturedef.cached_result is None:
                    continue
                finished.add(id(fixturedef))
                try:
                    fixturedef.finish(request)
                except Exception:  # a finalizer's error: its fixture is rebuilt all the same
                    traceback.print_exc()


@final
class CoverageSetups:
    """Around each test's setup phase, for ``LeaseCoverage``: registered only with pytest-cov."""

    def __init__(self, coverage: LeaseCoverage) -> None:
        self.coverage = coverage

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self) -> Any:
        self.coverage.setup_started()
        try:
            return (yield)
        finally:
            self.coverage.setup_finished()
