"""What each warm fixture depended on when it was set up, and tearing down those that must go.

Runs inside a replica (``reload.py`` owns one ``WarmFixtures``); imports the standard library,
pytest and the package's ``replica.modgraph`` and ``replica.fixtureregistry``; never
``controller/``.

A fixture wider than a function is *warm*: its value outlives the test that set it up. While it
is set up, the module graph records the project modules imported (``ModuleGraph.recordings``),
and the fixtures it requested are noted (its arguments, and what its body asks
``request.getfixturevalue`` for). A warm fixture is invalid when it was defined in a
re-collected module, when a module it depends on was invalidated (its function's module, the
modules imported during its setup, those whose objects its value holds), or when a fixture it
requested is invalid; those of a conftest being re-registered are judged by their code instead
of their module (``conftests.py``). Teardown runs their finalizers, latest set up first.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, final

import pytest

from pytest_reuse_env.replica import fixtureregistry, modgraph
from pytest_reuse_env.replica.modgraph import ModuleGraph

__all__ = ["FixtureRecord", "WarmFixtures"]


@dataclass
class FixtureRecord:
    """One warm fixture's setup: its request, when and how long, and what it depended on."""

    request: Any
    order: int
    seconds: float = 0.0
    modules: set[str] = field(default_factory=set)
    requested: list[Any] = field(default_factory=list)


@final
class _Chain:
    """A stand-in next item whose chain is ``nodes``: teardown_exact keeps just those."""

    def __init__(self, nodes: list[Any]) -> None:
        self._nodes = nodes

    def listchain(self) -> list[Any]:
        return self._nodes


def _note_dynamic_requests(request: Any, active: dict[str, Any], requested: list[Any]) -> bool:
    """While a fixture is set up, add what its body asks ``request.getfixturevalue`` for to
    ``requested`` (pytest links only declared arguments to the requester's teardown). False if
    the request cannot be wrapped."""
    original = getattr(request, "getfixturevalue", None)
    if original is None:
        return False

    def getfixturevalue(argname: str) -> Any:
        value = original(argname)
        found = active.get(argname)
        if found is not None and found not in requested:
            requested.append(found)
        return value

    try:
        request.getfixturevalue = getfixturevalue
    except (AttributeError, TypeError):
        return False
    return True


@final
class WarmFixtures:
    """The records of the replica's warm fixtures (see the module docstring)."""

    def __init__(self, graph: ModuleGraph) -> None:
        self.graph = graph
        self.records: dict[Any, FixtureRecord] = {}
        self._setups = 0

    @contextlib.contextmanager
    def recording(self, fixturedef: Any, request: Any) -> Iterator[None]:
        """Around one fixture's setup (``pytest_fixture_setup``)."""
        record = FixtureRecord(request=request, order=-1)
        active = getattr(request, "_fixture_defs", {})
        record.requested = [active[name] for name in fixturedef.argnames if name in active]
        hooked = _note_dynamic_requests(request, active, record.requested)
        self.graph.recordings.append(record.modules)
        started = time.perf_counter()
        try:
            yield
        finally:
            record.seconds = time.perf_counter() - started
            # Completion order: one asked for inside this setup finishes first and is torn
            # down after this one, as pytest orders finalizers.
            record.order = self._setups
            self._setups += 1
            self.graph.recordings.remove(record.modules)
            if hooked:
                with contextlib.suppress(AttributeError):
                    del request.getfixturevalue
            if fixturedef.scope != "function":
                self.records[fixturedef] = record

    def cached(self, session: pytest.Session) -> list[Any]:
        """The definitions whose value is set up now."""
        manager = session._fixturemanager
        return [d for d in fixtureregistry.all_fixture_defs(manager) if d.cached_result is not None]

    def kept(self, session: pytest.Session) -> tuple[list[str], float]:
        """The project's warm fixtures set up now (names) and the setup seconds they had cost.
        pytest's and installed plugins' own (tmp_path_factory, event_loop_policy) are left out:
        an edit never concerns them, and listing them hid the project's in ``-v``."""
        warm = [d for d in self.cached(session) if d in self.records and self._of_project(d)]
        return sorted({d.argname for d in warm}), sum(self.records[d].seconds for d in warm)

    def _of_project(self, fixturedef: Any) -> bool:
        func = getattr(fixturedef, "func", None)
        try:  # a plugin's wrapper (pytest-asyncio's) keeps the project's function in __wrapped__
            code = inspect.unwrap(func).__code__ if func is not None else None
        except (AttributeError, ValueError):
            return True
        if code is None:
            return True
        return not self.graph.outside_project(os.path.realpath(code.co_filename))

    def invalid(
        self,
        session: pytest.Session,
        closure: set[str],
        prefixes: list[str],
        deferred: set[Any],
        describe: Callable[[str], str],
    ) -> dict[Any, str]:
        """Warm definitions to tear down, with why: those defined under ``prefixes`` (nodeids of
        re-collected files), those depending on a module in ``closure`` (``describe`` names
        it), and what requested them. ``deferred`` ones are not judged by their module."""
        invalid: dict[Any, str] = {}
        for fixturedef in self.cached(session):
            if fixtureregistry.under(fixtureregistry.defined_at(fixturedef), prefixes):
                invalid[fixturedef] = "defined in a re-collected module"
                continue
            record = self.records.get(fixturedef)
            if record is None:
                invalid[fixturedef] = "set up before its dependencies were recorded"
                continue
            depends = set(record.modules)
            if fixturedef not in deferred:
                depends.add(getattr(fixturedef.func, "__module__", "") or "")
            depends.update(modgraph.referenced_modules(fixturedef.cached_result[0]))
            hit = sorted(depends & closure)
            if hit:
                invalid[fixturedef] = f"depends on {describe(hit[0])}"
        self.requesters(session, invalid)
        return invalid

    def requesters(
        self,
        session: pytest.Session,
        invalid: dict[Any, str],
        exclude: dict[Any, str] | None = None,
    ) -> None:
        """Add to ``invalid`` the warm fixtures that requested one in it, transitively
        (``exclude``: torn down already)."""
        cached = self.cached(session)
        changed = True
        while changed:
            changed = False
            for fixturedef in cached:
                record = self.records.get(fixturedef)
                if fixturedef in invalid or record is None or (exclude and fixturedef in exclude):
                    continue
                for requested in record.requested:
                    if requested in invalid:
                        invalid[fixturedef] = f"requests {requested.argname}"
                        changed = True
                        break

    def teardown(
        self, session: pytest.Session, replaced: list[Any], invalid: dict[Any, str]
    ) -> list[str]:
        """Tear down the setup stack below ``replaced`` file nodes, then the ``invalid``
        fixtures, latest set up first; returns the tracebacks of finalizers that raised."""
        errors: list[str] = []
        stack = list(session._setupstate.stack)
        keep = len(stack)
        for index, node in enumerate(stack):
            if any(node is old or old in node.listchain() for old in replaced):
                keep = index
                break
        try:
            session._setupstate.teardown_exact(_Chain(stack[:keep]))  # type: ignore[arg-type]
        except Exception:
            errors.append(traceback.format_exc())
        for fixturedef in sorted(invalid, key=lambda d: -self._order(d)):
            record = self.records.pop(fixturedef, None)
            if fixturedef.cached_result is None or record is None:
                fixturedef.cached_result = None
                continue
            try:
                fixturedef.finish(record.request)
            except Exception:
                errors.append(traceback.format_exc())
        return errors

    def _order(self, fixturedef: Any) -> int:
        record = self.records.get(fixturedef)
        return record.order if record is not None else -1
