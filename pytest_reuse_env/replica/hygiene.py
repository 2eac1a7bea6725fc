"""Leak checks between tests and recycling limits, inside a replica.

A reused process accumulates what tests leave behind. Before and after each test the replica
takes a ``ProcessState`` (environment variables, working directory, ``sys.path``, live threads,
open file descriptors, child processes, pending asyncio tasks, resident memory) and reports
what the test changed and did not restore.

What counts as "before": the state before the test's setup, unless its setup set up fixtures of
a wider scope (a new module, class or session fixture): those legitimately keep threads, files
or memory for later tests, so the baseline is then the state after setup, and only what the
test body and its own function fixtures left behind counts.

Costs are a few dozen microseconds a reading: ``/proc/self`` reads (``procfs.py``, kept-open
files), and a copy of ``os.environ`` only when something set or unset a variable since the
last one (``EnvironWatch``); nothing that scans the whole process table. Linux only for
fds, children and memory (elsewhere those checks are skipped).

``LeakWatch`` is the replica's pytest plugin that runs the checks around each test, acts on
``reuse_leaks`` and asks to be recycled. It runs inside the replica and imports the standard
library, pytest and the package's ``protocol`` module only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import os
import random
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.errors import ReuseLeakWarning
from pytest_reuse_env.replica import procfs

#: pytest's own bookkeeping, set and cleared around every test phase.
_ALWAYS_IGNORED_ENV: Final = frozenset({"PYTEST_CURRENT_TEST"})
MODES: Final = protocol.LEAK_MODES


class ProcessState(NamedTuple):
    """One reading (``read_state``): a tuple, made in half the time of a frozen dataclass,
    twice a test."""

    #: os.environ's raw bytes mapping on POSIX (copying it does not decode every value).
    environ: dict[Any, Any]
    cwd: str
    sys_path: tuple[str, ...]
    threads: frozenset[tuple[int, str]]
    fds: frozenset[int]
    children: frozenset[int]
    tasks: int
    rss: int


#: The /proc files read around every test, kept open (see procfs.py).
_PROC_FILES: Final = procfs.ProcFiles()


def resident_bytes() -> int:
    return procfs.resident_bytes(_PROC_FILES)


def _pending_tasks() -> int:
    """Unfinished tasks of the thread's current (not running, not closed) event loop."""
    # Never get_event_loop(): in the main thread it would create a loop (and two fds) itself.
    local = getattr(asyncio.get_event_loop_policy(), "_local", None)
    loop = getattr(local, "_loop", None)
    if not isinstance(loop, asyncio.AbstractEventLoop):
        return 0
    if loop.is_closed() or loop.is_running():
        return 0
    return sum(1 for task in asyncio.all_tasks(loop) if not task.done())


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # removed while we were in it (a test's tmp_path)
        return "(a removed directory)"


_RAW_IGNORED_ENV: Final = frozenset(
    {*_ALWAYS_IGNORED_ENV, *(os.fsencode(name) for name in _ALWAYS_IGNORED_ENV)}
)


@final
class EnvironWatch:
    """``os.environ`` as the leak checks read it, copied again only when a variable was set or
    unset since the last copy.

    Copying it is the costliest part of a reading right after a test (each key and value is
    touched, out of the processor's caches). Every change ``os.environ`` makes goes through
    ``os.putenv`` or ``os.unsetenv``, looked up in the ``os`` module when called: ``install``
    wraps them to count the changes, pytest's own ``PYTEST_CURRENT_TEST`` (set and unset
    around every phase, never compared) left out. A new ``os.environ`` object (a test that
    replaced it) is copied too. Not seen, as before: a C library's ``setenv``, which
    ``os.environ`` does not show either."""

    def __init__(self) -> None:
        self.changes = 0
        self._copied_at = -1
        self._mapping: object = None
        self._copy: dict[Any, Any] = {}
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        for name in ("putenv", "unsetenv"):
            real = getattr(os, name, None)
            if real is not None:
                setattr(os, name, self._counting(real))

    def _counting(self, real: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(real)
        def counted(key: Any, *args: Any) -> None:
            if key not in _RAW_IGNORED_ENV:
                self.changes += 1
            real(key, *args)

        return counted

    def read(self) -> dict[Any, Any]:
        """The raw mapping's copy (bytes keys on POSIX), without ``PYTEST_CURRENT_TEST``: the
        same object as last time while nothing changed."""
        mapping = getattr(os.environ, "_data", os.environ)
        if not self._installed or self.changes != self._copied_at or mapping is not self._mapping:
            self._copied_at, self._mapping = self.changes, mapping
            copy = dict(mapping)
            for key in _RAW_IGNORED_ENV.intersection(copy):
                del copy[key]
            self._copy = copy
        return self._copy


ENVIRON: Final = EnvironWatch()


def read_state() -> ProcessState:
    """The process's state now, as the leak checks compare it."""
    threads = threading.enumerate()
    return ProcessState(
        environ=ENVIRON.read(),
        cwd=_cwd(),
        sys_path=tuple(sys.path),
        threads=frozenset((t.ident or 0, t.name) for t in threads),
        # The kept /proc files first: one reopened now is listed with the others.
        children=procfs.children(_PROC_FILES, (t.native_id for t in threads)),
        fds=procfs.open_fds(_PROC_FILES),
        tasks=_pending_tasks(),
        rss=resident_bytes(),
    )


@final
@dataclass(frozen=True)
class LeakRules:
    """What to report: ignore patterns like ``env:MY_VAR``, ``env:CACHE_*``, ``thread:pool-*``,
    ``cwd``, ``sys.path``, ``fds``, ``children``, ``tasks``, ``memory``; memory growth counts
    above ``memory_mib``."""

    ignore: tuple[str, ...] = ()
    memory_mib: float = 64.0

    def ignored(self, kind: str, name: str = "") -> bool:
        for pattern in self.ignore:
            pkind, _, pname = pattern.partition(":")
            if pkind == kind and (not pname or fnmatch.fnmatchcase(name, pname)):
                return True
        return False


def _describe_fds(fds: frozenset[int]) -> str:
    parts = []
    for fd in sorted(fds)[:5]:
        try:
            parts.append(f"{fd} -> {os.readlink(f'{procfs.PROC}/fd/{fd}')}")
        except OSError:
            parts.append(str(fd))
    more = f" and {len(fds) - 5} more" if len(fds) > 5 else ""
    return ", ".join(parts) + more


def leaks(
    before: ProcessState | Sequence[ProcessState], after: ProcessState, rules: LeakRules
) -> list[str]:
    """What changed from ``before`` to ``after`` and was not restored, one line each.

    With several baselines (the state before a test's setup, and after it when the setup
    brought up fixtures of a wider scope), only what matches none of them counts: a module
    fixture's variable is in the second, and a variable a function fixture removed during
    setup and restored at teardown is in the first.
    """
    befores = [before] if isinstance(before, ProcessState) else list(before)
    if _unchanged(befores[0], after, rules):
        return []  # nearly every test: a few comparisons in C, nothing listed
    found: list[str] = []
    changed: list[str] = []
    # Nearly always one baseline equals it (a dict comparison in C): no key by key walk.
    if all(b.environ != after.environ for b in befores):
        keys = {k for b in befores for k in b.environ} | set(after.environ)
        differing = (
            os.fsdecode(k) if isinstance(k, bytes) else k
            for k in keys
            if all(b.environ.get(k) != after.environ.get(k) for b in befores)
        )
        changed = sorted(
            name
            for name in differing
            if name not in _ALWAYS_IGNORED_ENV and not rules.ignored("env", name)
        )
    if changed:
        found.append(f"environment variables changed: {', '.join(changed)}")
    first = befores[0]
    if all(b.cwd != after.cwd for b in befores) and not rules.ignored("cwd"):
        found.append(f"working directory changed: {first.cwd} -> {after.cwd}")
    if all(b.sys_path != after.sys_path for b in befores) and not rules.ignored("sys.path"):
        added = [p for p in after.sys_path if p not in first.sys_path]
        removed = [p for p in first.sys_path if p not in after.sys_path]
        detail = (
            "; ".join(
                filter(
                    None,
                    [
                        f"added {added}" if added else "",
                        f"removed {removed}" if removed else "",
                    ],
                )
            )
            or "reordered"
        )
        found.append(f"sys.path changed: {detail}")
    known_threads = frozenset().union(*(b.threads for b in befores))
    threads = sorted(
        name for ident, name in after.threads - known_threads if not rules.ignored("thread", name)
    )
    if threads:
        found.append(f"threads still running: {', '.join(threads)}")
    fds = _not_own(after.fds - frozenset().union(*(b.fds for b in befores)))
    if fds and not rules.ignored("fds"):
        found.append(f"file descriptors left open: {_describe_fds(fds)}")
    children = after.children - frozenset().union(*(b.children for b in befores))
    if children and not rules.ignored("children"):
        found.append(f"child processes left running: pids {', '.join(map(str, sorted(children)))}")
    tasks = after.tasks - max(b.tasks for b in befores)
    if tasks > 0 and not rules.ignored("tasks"):
        found.append(f"asyncio tasks still pending: {tasks}")
    grown = (after.rss - max(b.rss for b in befores)) / 2**20
    if grown > rules.memory_mib and not rules.ignored("memory"):
        found.append(f"resident memory grew by {grown:.0f} MiB")
    return found


def _unchanged(before: ProcessState, after: ProcessState, rules: LeakRules) -> bool:
    """Nothing to report against ``before`` alone: nothing added, nothing changed."""
    return (
        (after.environ is before.environ or after.environ == before.environ)
        and after.cwd == before.cwd
        and after.sys_path == before.sys_path
        and after.threads <= before.threads
        and after.fds <= before.fds
        and after.children <= before.children
        and after.tasks <= before.tasks
        and (after.rss - before.rss) / 2**20 <= rules.memory_mib
    )


#: Descriptors the replica's own machinery holds (a detached replica's listener, its clients'
#: connections): they come and go while tests run and are never a test's leak.
_OWN_FDS: list[Callable[[], Iterable[int]]] = []


def register_own_fds(source: Callable[[], Iterable[int]]) -> None:
    """Declare where the replica's own descriptors can be listed (called by daemon.py)."""
    _OWN_FDS.append(source)


#: A detached replica's accept thread holds a new connection's descriptor a moment before the
#: listener or the relay lists it: a descriptor found open that is not known as the replica's
#: own is looked at again, up to this many times this far apart, before it is called a leak.
_SETTLE_TRIES: Final = 5
_SETTLE_SECONDS: Final = 0.01


def _not_own(fds: frozenset[int]) -> frozenset[int]:
    """Of descriptors opened since the baseline, those still open and not the replica's own
    (a listing can be older than the last close: ``procfs.open_fds``)."""

    def left() -> frozenset[int]:
        own = own_fds()
        return frozenset(fd for fd in fds if fd not in own and procfs.is_open(fd))

    found = left() if fds else fds
    tries = _SETTLE_TRIES if _OWN_FDS else 0  # no other thread opens the replica's own
    while found and tries:
        time.sleep(_SETTLE_SECONDS)
        tries -= 1
        found = left()
    return found


def own_fds() -> frozenset[int]:
    found: set[int] = set(_PROC_FILES.own)
    for source in _OWN_FDS:
        with contextlib.suppress(Exception):  # a closed socket's fileno() raises
            found.update(source())
    return frozenset(found)


@final
class RecycleLimits:
    """When a replica should be replaced between tests: after a number of tests (with jitter, so
    replicas started together do not all recycle together) or past a resident size."""

    def __init__(
        self,
        max_tests: int | None,
        max_memory_mib: float | None,
        *,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self.max_memory_mib = max_memory_mib
        self.max_tests: int | None = None
        if max_tests is not None:
            spread = int(max_tests * jitter)
            self.max_tests = max_tests + (rng or random.Random()).randint(0, spread)

    def reason(self, tests_run: int, rss: int) -> str | None:
        if self.max_tests is not None and tests_run >= self.max_tests:
            return f"max tests ({tests_run} run, limit {self.max_tests})"
        if self.max_memory_mib is not None and rss / 2**20 > self.max_memory_mib:
            return f"max memory ({rss / 2**20:.0f} MiB resident, limit {self.max_memory_mib:g})"
        return None


#: Each item's fixtures of a scope wider than function (its fixture closure is fixed once it
#: is collected; an edit that changes it collects a new item).
_WIDE: Final = pytest.StashKey[tuple[tuple[str, Any], ...]]()


def _wide_fixtures_ready(item: pytest.Item) -> frozenset[str]:
    """The item's fixtures of a scope wider than function that hold a value now."""
    wide = item.stash.get(_WIDE, None)
    if wide is None:
        info = getattr(item, "_fixtureinfo", None)
        defs_by_name = info.name2fixturedefs.items() if info is not None else ()
        wide = item.stash[_WIDE] = tuple(
            (name, defs[-1]) for name, defs in defs_by_name if defs and defs[-1].scope != "function"
        )
    if not wide:
        return frozenset()
    return frozenset(name for name, fixturedef in wide if fixturedef.cached_result is not None)


@final
class LeakWatch:
    """The replica's leak checks and recycle requests, as a plugin of its pytest session."""

    def __init__(
        self,
        replica_id: str,
        settings: protocol.HygienePayload,
        policy: protocol.PolicyPayload,
        send: Callable[[protocol.Message], None],
    ) -> None:
        self.replica_id = replica_id
        self.mode = settings["leaks"]
        if self.mode != "off":
            ENVIRON.install()
        self.rules = LeakRules(tuple(settings["ignore"]), settings["memory_mib"])
        self.limits = RecycleLimits(
            policy["max_tests_per_replica"], policy["max_memory_per_replica"]
        )
        self._send = send
        #: The running test's baselines: before its setup, and after it when the setup brought
        #: up fixtures of a wider scope (see ``leaks``).
        self._before: list[ProcessState] | None = None
        #: A concurrent batch's baseline after its wider fixtures and event loop were set up.
        self._batch_setup: ProcessState | None = None
        #: The state after the last test's teardown: the next test's baseline (None when
        #: something else ran in between: a batch, a client change, a collector teardown).
        self._last_state: ProcessState | None = None
        self._recycle: protocol.RecyclePayload | None = None
        #: Asked to be replaced: runs nothing more, hands back what it is sent.
        self.recycling = False
        #: ``reuse_leaks = fail``: what the running test left behind, for its teardown report.
        self.failing: list[str] = []

    def forget_baseline(self) -> None:
        self._last_state = None

    # -- around one test ---------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        if self.mode == "off":
            return (yield)
        # Nothing runs between two tests here but the serve loop: the state after the
        # previous test's teardown is this test's baseline, with no second reading.
        self._before = [self._last_state or read_state()]
        self._last_state = None
        wide = _wide_fixtures_ready(item)
        stack = item.session._setupstate.stack
        collectors = len(stack)
        try:
            return (yield)
        finally:
            if _wide_fixtures_ready(item) != wide or len(stack) > collectors + 1:
                # Setup brought up fixtures that outlive this test, or collectors (a package's
                # setup imports its __init__.py, which may put its root first on sys.path):
                # what they hold or did is theirs.
                self._before.append(read_state())

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        # After every finalizer of the teardown (ours is the outermost wrapper): one hook
        # call a test, where a report wrapper would be called for each of its three phases.
        try:
            return (yield)
        finally:
            self._check(item)

    def _check(self, item: pytest.Item) -> None:
        if self._before is None:
            return
        after = read_state()
        found = leaks(self._before, after, self.rules)
        self._before = None
        self._last_state = after
        if not found:
            return
        if self.mode == "fail":
            self.failing = found  # LeakFailure fails the teardown report with it
        else:
            self.leaked(item, "; ".join(found))

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        if self.mode == "fail":
            config.pluginmanager.register(LeakFailure(self), "reuse_leak_failure")

    # -- around a concurrent batch ------------------------------------------------------------

    def batch_started(self) -> ProcessState | None:
        self._last_state = self._batch_setup = None
        return read_state() if self.mode != "off" else None

    def batch_set_up(self) -> None:
        """The batch's wider fixtures and its event loop are up: what they hold (a session
        loop's selector and self-pipe, a module fixture's files) is theirs, not a test's."""
        if self.mode != "off":
            self._batch_setup = read_state()

    def batch_finished(self, before: ProcessState | None, batch: list[pytest.Item]) -> None:
        if before is None:
            return
        baselines = [before] if self._batch_setup is None else [before, self._batch_setup]
        self._batch_setup = None
        # Interleaved tests share one process: a leak is the batch's, named as such.
        found = leaks(baselines, read_state(), self.rules)
        if found:
            self.leaked(batch[-1], "; ".join(found), batch)

    # -- reporting and recycling ---------------------------------------------------------------

    def leaked(self, item: pytest.Item, what: str, batch: list[pytest.Item] | None = None) -> None:
        """A warning on the test that leaked (``reuse_leaks = warn`` or ``recycle``)."""
        who = item.nodeid
        if batch:
            who = f"one of the concurrent tests {', '.join(i.nodeid for i in batch)}"
        text = f"{who} left state behind in replica {self.replica_id}: {what}"
        item.config.hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": warnings.WarningMessage(
                    ReuseLeakWarning(text),
                    ReuseLeakWarning,
                    item.location[0],
                    (item.location[1] or 0) + 1,
                ),
                "when": "runtest",
                "nodeid": item.nodeid,
                "location": item.location,
            }
        )
        if self.mode == "recycle":
            self._recycle = {"kind": "leak", "detail": what, "nodeid": item.nodeid, "returned": []}

    def after_test(self, nodeid: str, tests_run: int, pending: deque[str]) -> None:
        """Between tests: ask to be replaced after a leak or past a recycling limit, handing
        back (and dropping from ``pending``) everything not started yet."""
        request = self._recycle
        if request is None:
            rss = resident_bytes() if self.limits.max_memory_mib is not None else 0
            reason = self.limits.reason(tests_run, rss)
            if reason is not None:
                kind = "max tests" if reason.startswith("max tests") else "max memory"
                request = {"kind": kind, "detail": reason, "nodeid": nodeid, "returned": []}
        if request is not None:
            self._recycle = None
            self.recycling = True
            request["returned"] = list(pending)
            pending.clear()
            self._send(protocol.recycle(request))


@final
class LeakFailure:
    """``reuse_leaks = fail``: the teardown report of a test that left state behind fails with
    what it left (a report already failed keeps its failure; the leak is a warning then)."""

    def __init__(self, watch: LeakWatch) -> None:
        self.watch = watch

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Iterator[None]:
        report: Any = yield
        found, self.watch.failing = self.watch.failing, []
        if call.when != "teardown" or not found:
            return report  # type: ignore[no-any-return]
        if report.outcome != "failed":
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} left state behind in replica {self.watch.replica_id}: "
                + "; ".join(found)
                + "\n(reuse_leaks = fail; see reuse_leaks_ignore)"
            )
        else:
            self.watch.leaked(item, "; ".join(found))
        return report  # type: ignore[no-any-return]
