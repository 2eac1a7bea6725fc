"""Warm through edits: before a warm replica serves a run, bring it up to date with the files.

Runs inside a replica (a pytest plugin of the replica's session, driven by the daemon); imports
the standard library, pytest, and the package's ``fingerprint`` and ``replica`` modules
(``modgraph``, ``fixturedeps``, ``conftests``, ``sameness``, ``fixtureregistry``), never
``controller/``.

At every attach :meth:`Reloader.refresh` compares the watched files (``modgraph``, plus every
conftest pytest loaded) and the test directories with what the replica imported and collected,
and then either:

- finds nothing changed: the replica is warm as it is;
- names a reason the replica cannot be brought up to date (``stale``): a conftest with hooks, a
  plugin, an installed distribution, an extension module, a test package's ``__init__.py``, a
  file matching ``reuse_reload_exclude``, a new test directory or an added or removed conftest,
  ``reuse_reload = off``, or a module or conftest that raises when it is re-imported. The
  controller then starts a fresh replica; this one stays stale for good (its state may be half
  brought up to date);
- or re-imports: the changed modules and every module that depends on them (``modgraph``) leave
  ``sys.modules``; the test modules among them are collected again in place (their old items,
  fixture definitions and module-level setup go; pytest's own collection imports them anew, so
  assertion rewriting applies); other modules that collection had imported are imported again at
  once, so one that raises on re-import means a fresh replica rather than a failed test; an
  edited conftest, or one depending on an invalidated module, is re-registered in place
  (``conftests``).
  Warm fixtures that depended on what changed are torn down (their finalizers run) and set up
  again when a test needs them (``fixturedeps``); those of a re-registered conftest stay only
  where its new code provably does the same (``sameness``). Every other fixture stays.

Collection errors need no help: the controller collects every run itself and reports them as
plain pytest does; a test module whose collection failed here is collected again at every
attach until it succeeds.
"""

from __future__ import annotations

import fnmatch
import importlib
import linecache
import os
import sys
import time
import traceback
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, Final, Protocol, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica import conftests, datareads, fixtureregistry, modgraph, sameness
from pytest_reuse_env.replica.fixturedeps import WarmFixtures
from pytest_reuse_env.replica.modgraph import ModuleGraph
from pytest_reuse_env.replica.testtree import CollectedTree, TreeChanged

__all__ = ["RELOAD_EXCLUDE_INI", "RELOAD_INI", "RefreshResult", "Reloader", "Stale"]

RELOAD_INI: Final = "reuse_reload"
RELOAD_EXCLUDE_INI: Final = "reuse_reload_exclude"


class ReplicaLike(Protocol):
    """What the reloader needs of the replica's session (``replica.session``)."""

    session: pytest.Session | None
    items: dict[str, pytest.Item]
    collect_errors: list[str]


class Stale(Exception):
    """The replica cannot be brought up to date; the message says why (for ``-v``)."""


@final
@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did, for the READY message."""

    stale: str | None = None
    #: Files re-imported or collected again (relative to the invocation directory).
    reimported: tuple[str, ...] = ()
    #: Warm fixtures kept, and those torn down with why (``(name, reason)``).
    kept: tuple[str, ...] = ()
    rebuilt: tuple[tuple[str, str], ...] = ()
    #: Setup seconds the kept fixtures had cost.
    kept_seconds: float = 0.0
    teardown_errors: tuple[str, ...] = ()
    seconds: float = 0.0

    def payload(self) -> protocol.ReloadPayload:
        return {
            "stale": self.stale,
            "reimported": list(self.reimported),
            "kept": list(self.kept),
            "rebuilt": [list(entry) for entry in self.rebuilt],
            "kept_seconds": self.kept_seconds,
            "seconds": self.seconds,
        }


@final
class Reloader:
    """The replica's plugin for staying warm through edits (see the module docstring)."""

    def __init__(self, graph: ModuleGraph | None = None) -> None:
        self.graph = graph or ModuleGraph()
        self.graph.floors = _floors()
        self.replica: ReplicaLike | None = None
        self.config: pytest.Config | None = None
        self.enabled = True
        self.exclude: tuple[str, ...] = ()
        self.tree = CollectedTree()
        #: Modules loaded when the replica became ready (re-imported eagerly when invalidated).
        self.collection_modules: set[str] = set()
        self.warm = WarmFixtures(self.graph)
        self._ready = False
        #: Why this replica cannot be brought up to date, once one refresh found out.
        self.stale: str | None = None

    def bind(self, replica: ReplicaLike) -> None:
        self.replica = replica

    # -- pytest hooks -----------------------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.enabled = str(config.getini(RELOAD_INI)).strip().lower() != "off"
            self.exclude = tuple(str(p) for p in config.getini(RELOAD_EXCLUDE_INI))
        except ValueError:  # the keys are not declared (an old plugin on the controller side)
            pass

    def pytest_collectstart(self, collector: pytest.Collector) -> None:
        key = self.tree.started(collector)
        if key is not None:
            # Before its import: an edit after this point shows at the next check.
            self.graph.observe([key])

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        self.tree.reported(collector, report)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
        with self.warm.recording(fixturedef, request):
            return (yield)

    # -- observation points ---------------------------------------------------------------

    def ready(self) -> None:
        """Collection is done (the replica is about to answer READY the first time)."""
        self.observe()
        self.collection_modules = set(sys.modules)
        self._ready = True

    def observe(self) -> None:
        """Record modules imported since the last observation (after each run, too)."""
        # Every conftest pytest loaded: those outside a package share the module name
        # "conftest", so sys.modules holds only the last one.
        self.graph.observe([*self.tree.file_nodes, *self._conftests()])

    def _conftests(self) -> dict[str, ModuleType]:
        if self.config is None:
            return {}
        return conftests.loaded_conftests(self.config.pluginmanager)

    # -- refresh ----------------------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Bring the replica up to date with the files (see the module docstring)."""
        started = time.perf_counter()
        if not self._ready or self.replica is None or self.replica.session is None:
            return RefreshResult()
        if self.stale is not None:  # once given up on, for good: its state may be half done
            return RefreshResult(stale=self.stale)
        self.observe()
        changed = self.graph.changed_files()
        directories = self.tree.changed_directories()
        if not changed and not directories and not self.tree.failed_files:
            return self._result(started, (), {}, [])
        try:
            listings: dict[str, list[Any]] = {}
            added: set[str] = set()
            initial = getattr(self.replica.session, "_initialpaths", None)
            for directory in directories:
                added.update(self.tree.directory_changes(directory, listings, initial))
            if not self.enabled and (changed or added):
                first = sorted([*changed, *added])[0]
                raise Stale(f"{self._rel(first)} changed (reuse_reload = off)")
            if not changed and not added and not self.tree.failed_files:
                return self._result(started, (), {}, [])
            return self._reload(started, changed, added, listings)
        except TreeChanged as change:
            self.stale = change.what.format(self._rel(change.path))
        except Stale as stale:
            self.stale = str(stale)
        except Exception:  # a fault here must cost a fresh replica, never a stale run
            self.stale = "bringing it up to date failed:\n" + traceback.format_exc()
        return RefreshResult(stale=self.stale, seconds=time.perf_counter() - started)

    def _reload(
        self, started: float, changed: list[str], added: set[str], listings: dict[str, list[Any]]
    ) -> RefreshResult:
        assert self.replica is not None
        assert self.replica.session is not None
        session = self.replica.session
        retry = set(self.tree.failed_files) | added
        loaded = self._conftests()
        names: set[str] = set()
        for path in changed:
            self._check_changed_file(path)
            if path in self.tree.file_nodes:
                retry.add(path)
            if path in loaded:
                names.add(loaded[path].__name__)
        for modules in self.graph.modules_of([*changed, *retry]).values():
            names.update(modules)
        self.graph.scan_references()
        closure = self.graph.dependents(names)
        cause = self._rel(changed[0]) if changed else "a test file"
        swaps = self._plan_swaps(closure, changed, loaded, cause)
        retry.update(self._check_closure(closure, cause))

        replaced = [node for path in retry for node in self.tree.file_nodes.get(path, [])]
        deferred = {d for swap in swaps for d in swap.old_defs}
        prefixes = [node.nodeid for node in replaced]
        invalid = self.warm.invalid(session, closure, prefixes, deferred, self._describe)
        errors = self.warm.teardown(session, replaced, invalid)

        files = {
            n: f
            for n in closure
            if (f := self.graph.files.get(n)) is not None and not _is_conftest(f)
        }
        reimported = {self._rel(f) for f in files.values()} | {self._rel(p) for p in retry}
        reimported.update(self._rel(os.path.realpath(swap.name)) for swap in swaps)
        current = sys.modules.get("conftest")
        self.graph.drop(closure)
        for path in changed:
            linecache.cache.pop(path, None)
            self.graph.refresh_state(path)
        for path in retry:
            linecache.cache.pop(path, None)
        self._forget(session, replaced)
        # Code under test first: one that raises on re-import is named, not a test module.
        self._reimport({n: f for n, f in files.items() if f not in self.tree.file_nodes})
        if swaps:
            more, more_errors, more_files = self._swap_conftests(
                session, swaps, closure, invalid, set(changed), retry, cause, current
            )
            invalid.update(more)
            errors += more_errors
            reimported.update(map(self._rel, more_files))
            retry.update(more_files)
        for path in sorted(retry):
            self._collect_file(session, path, listings)
        self.observe()
        return self._result(started, tuple(sorted(reimported)), invalid, errors)

    # -- conftests (replica/conftests.py) ---------------------------------------------------

    def _plan_swaps(
        self, closure: set[str], changed: list[str], loaded: dict[str, ModuleType], cause: str
    ) -> list[conftests.Swap]:
        """The conftests to re-register in place, parents first; Stale if one cannot be."""
        assert self.config is not None
        edited = set(changed)
        swaps: list[conftests.Swap] = []
        for path, module in sorted(loaded.items(), key=lambda e: (e[0].count(os.sep), e[0])):
            if path not in edited and module.__name__ not in closure:
                continue
            rel = self._rel(path)
            try:
                swaps.append(conftests.Swap.prepare(self.config, module, self._conftest_node(path)))
            except conftests.NotInPlace as exc:
                if path in edited:
                    raise Stale(f"{rel} changed ({exc})") from exc
                raise Stale(f"{rel} ({exc}) depends on {cause}") from exc
        return swaps

    def _conftest_node(self, path: str) -> Any:
        """The node a conftest's fixtures are visible under (if it has none yet)."""
        assert self.config is not None
        assert self.replica is not None
        directory = Path(os.path.dirname(path))
        root = _real(self.config.rootpath)
        if directory == root or root not in directory.parents:
            return self.replica.session
        entry = self.tree.directories.get(str(directory))
        return entry[0] if entry is not None else None

    def _swap_conftests(
        self,
        session: pytest.Session,
        swaps: list[conftests.Swap],
        closure: set[str],
        invalid: dict[Any, str],
        edited: set[str],
        retry: set[str],
        cause: str,
        current: ModuleType | None,
    ) -> tuple[dict[Any, str], list[str], set[str]]:
        """Re-register the conftests, then tear down their fixtures not proven unchanged (and
        what requested them); a structural change collects the test files under them again.
        Returns the fixtures torn down (with why), teardown errors, and the files to collect."""
        assert self.config is not None
        for swap in swaps:
            try:
                swap.reregister(self.config, session)
            except conftests.NotInPlace as exc:
                raise Stale(f"{self._rel(os.path.realpath(swap.name))} {exc}") from exc
        for swap in swaps:
            if swap.old is current and swap.new is not None:
                sys.modules["conftest"] = swap.new  # as collection left it
        more: dict[Any, str] = {}
        for swap in swaps:
            path = os.path.realpath(swap.name)
            rel = self._rel(path)
            why = f"changed in {rel}" if path in edited else f"depends on {cause}"
            for old, new in swap.pairs:
                result = old.cached_result
                if result is None or old in invalid:
                    continue
                if result[2] is not None or not sameness.same_function(old.func, new.func, closure):
                    more[old] = why
            for old in swap.removed:
                if old.cached_result is not None and old not in invalid:
                    more[old] = f"redefined or removed in {rel}"
        extra = self._under_swaps([s for s in swaps if s.structural], retry)
        replaced = [node for path in extra for node in self.tree.file_nodes.get(path, [])]
        extra_closure: set[str] = set()
        if extra:
            names = {n for ms in self.graph.modules_of(extra).values() for n in ms}
            extra_closure = self.graph.dependents(names) - closure
            extra.update(self._check_closure(extra_closure, cause))
            replaced = [node for path in extra for node in self.tree.file_nodes.get(path, [])]
            prefixes = [node.nodeid for node in replaced]
            for fixturedef in self.warm.cached(session):
                if fixtureregistry.under(fixtureregistry.defined_at(fixturedef), prefixes):
                    more.setdefault(fixturedef, "defined in a re-collected module")
        self.warm.requesters(session, more, exclude=invalid)
        errors = self.warm.teardown(session, replaced, more)
        for swap in swaps:
            swap.adopt()
        if extra:
            self.graph.drop(extra_closure)
            for path in extra:
                linecache.cache.pop(path, None)
            self._forget(session, replaced)
        return more, errors, extra

    def _under_swaps(self, swaps: list[conftests.Swap], retry: set[str]) -> set[str]:
        """Test files under the structurally changed conftests, not yet to be collected."""
        assert self.replica is not None
        found: set[str] = set()
        for swap in swaps:
            if swap.node is self.replica.session:
                found.update(self.tree.file_nodes)
                continue
            found.update(self.tree.files_under(str(swap.directory)))
        return found - retry

    def _check_changed_file(self, path: str) -> None:
        rel = self._rel(path)
        for pattern in self.exclude:
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path, pattern):
                raise Stale(f"{rel} changed (reuse_reload_exclude: {pattern})")
        if path in self.graph.data.states:
            return  # a data file: what read it is rebuilt
        kind = self.graph.kind_of_file(path)
        if kind == modgraph.KIND_INSTALLED:
            raise Stale(f"{rel} changed (an installed distribution)")
        if kind == modgraph.KIND_EXTENSION and os.path.exists(path):
            raise Stale(f"{rel} changed (an extension module cannot be re-imported)")
        if self.tree.is_test_package_init(path):
            raise Stale(f"{rel} changed (a test package's __init__.py)")

    def _check_closure(self, closure: set[str], cause: str) -> set[str]:
        """Test files among the invalidated modules; Stale if one cannot be re-imported.
        Conftests pytest loaded are re-registered (``_plan_swaps``), not re-imported."""
        assert self.config is not None
        pluginmanager = self.config.pluginmanager
        loaded = {id(module) for module in self._conftests().values()}
        found: set[str] = set()
        for name in closure:
            module = sys.modules.get(name)
            kind = self.graph.kind(name)
            path = self.graph.files.get(name)
            rel = self._rel(path) if path else name
            if module is None or id(module) in loaded:
                continue
            if pluginmanager.is_registered(module):
                raise Stale(f"{rel} (a pytest plugin) depends on {cause}")
            if kind == modgraph.KIND_INSTALLED:
                raise Stale(f"{rel} (an installed distribution) depends on {cause}")
            if kind == modgraph.KIND_EXTENSION and path is not None:
                raise Stale(f"{rel} (an extension module) depends on {cause}")
            if path in self.tree.file_nodes:
                found.add(path)
            elif path is not None and self.tree.is_test_package_init(path):
                raise Stale(f"{rel} (a test package's __init__.py) depends on {cause}")
        return found

    # -- re-collection ----------------------------------------------------------------------

    def _forget(self, session: pytest.Session, replaced: list[Any]) -> None:
        """Drop the replaced file nodes' items and fixture definitions."""
        assert self.replica is not None
        prefixes = [node.nodeid for node in replaced]

        def under(nodeid: str) -> bool:
            return fixtureregistry.under(nodeid, prefixes)

        fixtureregistry.forget_fixture_defs(session._fixturemanager, prefixes)
        for nodeid in [n for n in self.replica.items if under(n)]:
            del self.replica.items[nodeid]
        session.items[:] = [item for item in session.items if not under(item.nodeid)]
        self.replica.collect_errors[:] = [
            e for e in self.replica.collect_errors if not under(e.partition(": ")[0])
        ]

    def _collect_file(
        self, session: pytest.Session, path: str, listings: dict[str, list[Any]]
    ) -> None:
        """Collect one test file again, under its existing directory collector."""
        assert self.replica is not None
        assert self.config is not None
        nodes = self.tree.new_nodes(path, listings)
        if not nodes:
            return  # deleted, or no longer a test file
        items: list[pytest.Item] = []
        for node in nodes:
            items.extend(session.genitems(node))
        self.config.hook.pytest_collection_modifyitems(
            session=session, config=self.config, items=items
        )
        for item in items:
            self.replica.items[item.nodeid] = item
        session.items.extend(items)

    def _reimport(self, files: dict[str, str]) -> None:
        """Import again, now, the invalidated modules (``{name: file}``) collection had
        imported, packages first."""
        again = sorted(
            (n for n in files if n in self.collection_modules),
            key=lambda n: (n.count("."), n),
        )
        for name in again:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except SyntaxError:
                continue  # the edit itself: a fresh import fails alike (a test reports it)
            except BaseException as exc:
                raise Stale(f"{self._rel(files[name])} raised on re-import: {exc!r}") from exc

    # -- helpers ----------------------------------------------------------------------------

    def _result(
        self,
        started: float,
        reimported: tuple[str, ...],
        reasons: dict[Any, str],
        errors: list[str],
    ) -> RefreshResult:
        assert self.replica is not None
        assert self.replica.session is not None
        kept, seconds = self.warm.kept(self.replica.session)
        return RefreshResult(
            reimported=reimported,
            kept=tuple(kept),
            rebuilt=tuple(sorted({(d.argname, why) for d, why in reasons.items()})),
            kept_seconds=seconds,
            teardown_errors=tuple(errors),
            seconds=time.perf_counter() - started,
        )

    def _describe(self, name: str) -> str:
        """A module by its file (relative), or its name when it has none; a data file by its
        path."""
        path = datareads.data_path(name) if datareads.is_data(name) else self.graph.files.get(name)
        return self._rel(path) if path else name

    def _rel(self, path: str) -> str:
        base = str(self.config.invocation_params.dir) if self.config is not None else os.getcwd()
        try:
            rel = os.path.relpath(path, base)
        except ValueError:
            return path
        return path if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def _floors() -> frozenset[CodeType]:
    """The code of pytest's frames that call a fixture's and a test's function (ModuleGraph)."""
    from _pytest import fixtures, python

    found = [
        getattr(f, "__code__", None)
        for f in (
            getattr(fixtures, "call_fixture_func", None),
            getattr(python, "pytest_pyfunc_call", None),
        )
    ]
    return frozenset(code for code in found if isinstance(code, CodeType))


def _is_conftest(path: str) -> bool:
    return os.path.basename(path) == "conftest.py"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))
