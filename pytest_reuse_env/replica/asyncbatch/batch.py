"""Run async tests concurrently on one event loop inside a replica.

``run_concurrently(session, items, limit)`` runs already collected async test items (pytest-asyncio
``@pytest.mark.asyncio`` or ``asyncio_mode = auto``, and ``@pytest.mark.anyio`` on the asyncio
backend) at most ``limit`` at a time on one event loop, and reports each through pytest's own
hooks: ``pytest_runtest_logstart``, one ``pytest_runtest_logreport`` per phase with a report built
by ``pytest_runtest_makereport``, ``pytest_runtest_logfinish``. An item's hooks are called
together, when the item finishes, so consumers never see two items' reports interleaved.

How it works, per group of items that share their collectors (session, package, module, class),
their higher-scoped parameters, their event loop and their ``filterwarnings`` marks:

1. Synchronously, outside the loop, for each item: skip and xfail marks are evaluated (as
   pytest's ``skipping`` plugin does), the collectors are put on ``SetupState`` the normal way,
   and every fixture the item needs that is scoped above "function" is set up through pytest's
   own machinery (``FixtureRequest.getfixturevalue``): cached in its ``FixtureDef``, finalized by
   its node, set up once, never raced. They stay set up when ``run_concurrently`` returns; the
   caller tears them down later (``SetupState.teardown_exact``), as between ordinary items, and a
   later call (another batch) finds them cached.
2. On one loop (pytest-asyncio's runner for the items' loop scope when that scope is wider than
   "function"; anyio's test runner for anyio items; otherwise a fresh ``asyncio.Runner`` per
   group), each item runs as a task: function-scoped fixtures are resolved here, per task, not
   through ``FixtureDef.cached_result`` (one value) nor ``SetupState`` (one chain), with
   pytest's override rules, parametrization and ``request`` objects of their own; then the test
   body; then the item's finalizers, last set up first torn down.
3. A per-test timeout (the ``timeout`` argument, or a smaller ``@pytest.mark.timeout(n)``) cancels
   only the task that overran; it is reported failed with a ``ConcurrentTestTimeout``.

Output attribution, while tests interleave: ``sys.stdout``/``sys.stderr`` are replaced by routers
that write to the current task's buffers (a ``contextvars.ContextVar`` names the running test, so
tasks a test spawns, and ``asyncio.to_thread``, count as that test); logging records go to the
current test's "Captured log" section and ``caplog``; ``capsys``/``capsysbinary`` are per test;
warnings are attributed to the test that raised them. NOT separated: writes to file descriptors
1 and 2 (C extensions, subprocesses inheriting the fds, ``os.write``) and writes from threads
started without the test's context; these go to pytest's global capture and are shown, as
"reuse: output not attributed to one test", on the next failing test's report. ``capfd`` and
``capfdbinary`` cannot be separated at all: tests using them are not eligible (see
``is_async_item``) and run one at a time.

Sync tests: never run here. The caller runs them one at a time, the normal way, and never while
an async batch runs; ``run_concurrently`` refuses items for which ``is_async_item`` is false.

Process globals are shared by all tests of a batch: ``monkeypatch.setattr`` / ``setenv`` /
``chdir``, ``caplog.set_level`` (the root logger's level), ``sys.stdout`` swaps and warning
filters applied at run time are seen by every test running at the same time and are undone when
the patching test ends, possibly while another still relies on them. Such tests should not be
run concurrently (give their environment ``concurrency=1``). Per-test ``filterwarnings`` marks
are honoured by putting tests with different marks in different groups.

Not supported here: ``--pdb`` and ``pytest_exception_interact``, ``--setup-show`` and the
``pytest_fixture_setup``/``pytest_fixture_post_finalizer`` hooks for function-scoped fixtures,
``request.getfixturevalue`` of a function-scoped *async* fixture that was not requested
statically, pytest-asyncio ``loop_factories``.

This module imports only the standard library and pytest (pytest-asyncio and anyio lazily, when
present), so it can run inside a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import sys
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO, cast

import pytest
from _pytest.compat import NOTSET
from _pytest.config import apply_warning_filters, parse_warning_filter
from _pytest.fixtures import (
    FixtureLookupError,
    SubRequest,
)
from _pytest.logging import catching_logs
from _pytest.outcomes import Exit, xfail
from _pytest.scope import Scope
from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks, xfailed_key

from pytest_reuse_env.replica.asyncbatch.eligible import (
    anyio_backend_value,
    groups,
    is_async_item,
    loop_key,
)
from pytest_reuse_env.replica.asyncbatch.output import CURRENT, LogRouter, Streams
from pytest_reuse_env.replica.asyncbatch.task import (
    TaskRun,
    TestRequest,
    resolve,
)

__all__ = ["ConcurrentTestTimeout", "run_concurrently"]

#: Fixtures that capture at the file-descriptor level: process-wide, never per task.
#: Section added to a failing report: the tests whose run overlapped the failing one.
CONCURRENT_SECTION: Final = "reuse: ran concurrently with"
#: Section added to a failing report: fd-level output of the batch nobody could claim.
UNATTRIBUTED_SECTION: Final = "reuse: output not attributed to one test"


class ConcurrentTestTimeout(Exception):
    """A test ran past its timeout and was cancelled; the others went on."""


# -- the batch ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Batch:
    session: pytest.Session
    limit: int
    timeout: float | None
    on_started: Callable[[pytest.Item], None] | None
    on_finished: Callable[[pytest.Item], None] | None
    streams: Streams
    capturing: bool
    logging_plugin: Any
    runs: list[TaskRun] = field(default_factory=list)
    on_set_up: Callable[[], None] | None = None


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """warnings.showwarning while a batch runs: the warning is recorded for the current test."""
    recorded = warnings.WarningMessage(message, category, filename, lineno, file, line)
    run = CURRENT.get()
    if run is not None:
        run.recorded.append(recorded)


# -- running -------------------------------------------------------------------------------------


def run_concurrently(
    session: pytest.Session,
    items: Sequence[pytest.Item],
    limit: int,
    *,
    timeout: float | None = None,
    on_started: Callable[[pytest.Item], None] | None = None,
    on_finished: Callable[[pytest.Item], None] | None = None,
    on_set_up: Callable[[], None] | None = None,
) -> None:
    """Run ``items`` (all ``is_async_item``) at most ``limit`` at a time on one event loop.

    Reports go through ``item.ihook`` as for ordinary items; fixtures above function scope stay
    set up afterwards. ``timeout`` bounds each test's setup plus call (and, separately, its
    teardown) in seconds. ``on_started``/``on_finished`` are called on the loop's thread when an
    item's task begins and after its reports were logged; ``on_set_up`` once a group's
    fixtures above function scope and its event loop are up, before any test of it runs.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    for item in items:
        if not is_async_item(item):
            raise ValueError(f"{item.nodeid} cannot run concurrently: it is not an async test")
    config = session.config
    batch = _Batch(
        session=session,
        limit=limit,
        timeout=timeout,
        on_started=on_started,
        on_finished=on_finished,
        on_set_up=on_set_up,
        streams=Streams(config),
        capturing=config.getoption("capture", "fd") != "no",
        logging_plugin=config.pluginmanager.get_plugin("logging-plugin"),
    )
    for group in groups(cast(Sequence[pytest.Function], items)):
        _run_group(batch, group)
        if session.shouldfail or session.shouldstop:
            break


def _run_group(batch: _Batch, group: list[pytest.Function]) -> None:
    config = batch.session.config
    from _pytest import assertion

    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if not sys.warnoptions:
            warnings.filterwarnings("always", category=DeprecationWarning)
            warnings.filterwarnings("always", category=PendingDeprecationWarning)
        apply_warning_filters(
            config.getini("filterwarnings"), config.known_args_namespace.pythonwarnings or []
        )
        for mark in group[0].iter_markers(name="filterwarnings"):
            for arg in mark.args:
                warnings.filterwarnings(*parse_warning_filter(arg, escape=False))
        warnings.showwarning = _show_warning
        # pytest installs the assertion-comparison hooks around each item's protocol: drive it.
        assert_hooks = assertion.pytest_runtest_protocol(group[0])
        next(assert_hooks)
        stack.callback(assert_hooks.close)
        if batch.logging_plugin is not None:
            stack.enter_context(catching_logs(LogRouter(), level=batch.logging_plugin.log_level))
        batch.streams.install()
        stack.callback(batch.streams.uninstall)
        runs = [_prepare(batch, item) for item in group]
        with _event_loop(group[0]) as run_on_loop:
            if batch.on_set_up is not None:
                batch.on_set_up()
            try:
                run_on_loop(_run_all(batch, runs))
            except BaseExceptionGroup as group_error:
                # Only Exit and KeyboardInterrupt escape a test's task: re-raise the first.
                raise group_error.exceptions[0] from None


def _prepare(batch: _Batch, item: pytest.Function) -> TaskRun:
    """Phase 1, outside the loop: marks, collectors and fixtures above function scope."""
    run = TaskRun(item=item, batch=batch)
    batch.runs.append(run)
    item._report_sections = []
    item.user_properties = []
    item.funcargs = {}
    item._request = TestRequest(run)
    token = CURRENT.set(run)
    run.setup_started, began = time.time(), time.perf_counter()
    run.begin_phase("setup")
    try:
        skipped = evaluate_skip_marks(item)
        if skipped:
            raise pytest.skip.Exception(skipped.reason, _use_item_location=True)
        item.stash[xfailed_key] = xfailed = evaluate_xfail_marks(item)
        if xfailed and not item.config.option.runxfail and not xfailed.run:
            xfail("[NOTRUN] " + xfailed.reason)
        setupstate = item.session._setupstate
        setupstate.teardown_exact(item)
        setupstate.setup(cast(pytest.Item, item.parent))
        for argname in _higher_scoped_names(item):
            _set_up_higher_scoped(item, argname)
    except (Exit, KeyboardInterrupt):
        raise
    except BaseException as error:
        run.setup_error = error
    finally:
        run.setup_seconds = time.perf_counter() - began
        CURRENT.reset(token)
    return run


def _set_up_higher_scoped(item: pytest.Function, argname: str) -> None:
    """``FixtureRequest._compute_fixture_value`` for a fixture above function scope: cached in
    its FixtureDef and finalized by its scope's node, which is on ``SetupState`` (the item is
    not: its own function scope is handled by the task)."""
    __tracebackhide__ = True
    request = item._request
    fixturedefs = item._fixtureinfo.name2fixturedefs.get(argname)
    if fixturedefs is None:  # pytest-asyncio's runner fixtures are not in the closure
        fixturedefs = item.session._fixturemanager.getfixturedefs(argname, item)
    if not fixturedefs:
        raise FixtureLookupError(argname, request)
    fixturedef = fixturedefs[-1]
    callspec = getattr(item, "callspec", None)
    if callspec is not None and argname in callspec.params:
        param, param_index = callspec.params[argname], callspec.indices[argname]
        scope = callspec._arg2scope[argname]
    else:
        param, param_index, scope = NOTSET, 0, fixturedef._scope
    fixturedef.execute(SubRequest(request, scope, param, param_index, fixturedef, _ispytest=True))
    request._fixture_defs[argname] = fixturedef


def _higher_scoped_names(item: pytest.Function) -> list[str]:
    names = []
    for argname in item.fixturenames:
        defs = item._fixtureinfo.name2fixturedefs.get(argname)
        if argname != "request" and defs and defs[-1]._scope is not Scope.Function:
            names.append(argname)
    runner = f"_{getattr(item, '_loop_scope', 'function')}_scoped_runner"
    if loop_key(item)[0] == "asyncio" and runner != "_function_scoped_runner":
        names.append(runner)
    return names


@contextlib.contextmanager
def _event_loop(
    item: pytest.Function,
) -> Iterator[Callable[[Coroutine[Any, Any, None]], None]]:
    """How to run the group's main coroutine, on the loop its higher fixtures live on."""
    kind, _ = loop_key(item)
    if kind == "anyio":
        from anyio.pytest_plugin import extract_backend_and_options, get_runner

        name, options = extract_backend_and_options(anyio_backend_value(item))
        with get_runner(name, options) as runner:
            yield runner.get_loop().run_until_complete  # type: ignore[attr-defined]
        return
    scope = str(getattr(item, "_loop_scope", "function"))
    if scope != "function":
        cached = _fixture_cache(item, f"_{scope}_scoped_runner")
        if cached is not None:
            getattr(cached, "get_loop", lambda: None)()  # its loop's descriptors exist now
            yield functools.partial(cached.run, context=contextvars.copy_context())
            return
    with asyncio.Runner() as runner:
        yield functools.partial(runner.run, context=contextvars.copy_context())


def _fixture_cache(item: pytest.Function, argname: str) -> Any:
    defs = item.session._fixturemanager.getfixturedefs(argname, item) or ()
    for fixturedef in reversed(defs):
        if fixturedef.cached_result is not None and fixturedef.cached_result[2] is None:
            return fixturedef.cached_result[0]
    return None


async def _run_all(batch: _Batch, runs: list[TaskRun]) -> None:
    waiting = deque(runs)
    session = batch.session

    async def worker() -> None:
        while waiting and not (session.shouldfail or session.shouldstop):
            run = waiting.popleft()
            task = asyncio.create_task(_run_one(run), context=contextvars.copy_context())
            await task

    async with asyncio.TaskGroup() as group:
        for _ in range(min(batch.limit, len(runs))):
            group.create_task(worker())


def _item_timeout(batch: _Batch, item: pytest.Function) -> float | None:
    marker = item.get_closest_marker("timeout")
    seconds = batch.timeout
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        if isinstance(value, int | float) and value > 0:
            seconds = value if seconds is None else min(seconds, value)
    return seconds


async def _within(deadline: float | None, seconds: float | None, step: Awaitable[None]) -> None:
    __tracebackhide__ = True
    if deadline is None:
        await step
        return
    try:
        async with asyncio.timeout_at(deadline) as scope:
            await step
    except TimeoutError as exc:
        if scope.expired():
            raise ConcurrentTestTimeout(
                f"the test ran past its timeout of {seconds:g} s and was cancelled"
            ) from exc
        raise


async def _run_one(run: TaskRun) -> None:
    batch, item = run.batch, run.item
    CURRENT.set(run)
    loop = asyncio.get_running_loop()
    run.started = time.monotonic()
    if batch.on_started is not None:
        batch.on_started(item)
    seconds = _item_timeout(batch, item)
    deadline = None if seconds is None else loop.time() + seconds

    began = time.perf_counter()
    if run.setup_error is None:
        run.setup_error = await _phase(_within(deadline, seconds, _setup(run)))
    run.report(
        "setup", run.setup_started, run.setup_seconds + time.perf_counter() - began, run.setup_error
    )

    if run.setup_error is None:
        run.begin_phase("call")
        start, began = time.time(), time.perf_counter()
        error = await _phase(_within(deadline, seconds, _call(run)))
        run.report("call", start, time.perf_counter() - began, error)

    run.begin_phase("teardown")
    start, began = time.time(), time.perf_counter()
    teardown_deadline = None if seconds is None else loop.time() + seconds
    error = await _phase(_within(teardown_deadline, seconds, _teardown(run)))
    run.report("teardown", start, time.perf_counter() - began, error)
    run.finished = time.monotonic()
    item.funcargs = {}
    item._initrequest()
    _emit(run)
    if batch.on_finished is not None:
        batch.on_finished(item)


async def _phase(step: Awaitable[None]) -> BaseException | None:
    """Run one phase; its exception, as pytest's CallInfo would hold it."""
    try:
        await step
    except (Exit, KeyboardInterrupt):
        raise
    except BaseException as error:
        return error
    return None


async def _setup(run: TaskRun) -> None:
    __tracebackhide__ = True
    item = run.item
    for argname in item.fixturenames:
        item.funcargs[argname] = await resolve(run, argname, (), item._request)


async def _call(run: TaskRun) -> None:
    __tracebackhide__ = True
    item = run.item
    xfailed = item.stash.get(xfailed_key, None)
    if xfailed is None:
        item.stash[xfailed_key] = xfailed = evaluate_xfail_marks(item)
    if xfailed and not item.config.option.runxfail and not xfailed.run:
        xfail("[NOTRUN] " + xfailed.reason)
    try:
        testargs = {name: item.funcargs[name] for name in item._fixtureinfo.argnames}
        await item.obj(**testargs)
    finally:
        if item.stash.get(xfailed_key, None) is None:
            item.stash[xfailed_key] = evaluate_xfail_marks(item)


async def _teardown(run: TaskRun) -> None:
    __tracebackhide__ = True
    errors: list[BaseException] = []
    while run.finalizers:
        finalizer = run.finalizers.pop()
        try:
            result = finalizer()
            if inspect.isawaitable(result):
                await result
        except (Exit, KeyboardInterrupt):
            raise
        except BaseException as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise BaseExceptionGroup(f"errors while tearing down {run.item.nodeid}", errors[::-1])


def _emit(run: TaskRun) -> None:
    """An item's hooks, together: logstart, its reports, its warnings, logfinish."""
    item, batch = run.item, run.batch
    overlapping = [
        other.item.nodeid
        for other in batch.runs
        if other is not run
        and other.started is not None
        and run.started is not None
        and other.started < (run.finished or time.monotonic())
        and (other.finished is None or other.finished > run.started)
    ]
    with batch.streams.paused():
        unattributed = batch.streams.take_unattributed()
        for report in run.reports:
            if report.failed and overlapping:
                report.sections.append((CONCURRENT_SECTION, ", ".join(overlapping)))
            if report.failed and unattributed:
                report.sections.append((UNATTRIBUTED_SECTION, unattributed))
                unattributed = ""
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in run.reports:
            ihook.pytest_runtest_logreport(report=report)
        for recorded in run.recorded:
            ihook.pytest_warning_recorded.call_historic(
                kwargs={
                    "warning_message": recorded,
                    "nodeid": item.nodeid,
                    "when": "runtest",
                    "location": None,
                }
            )
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
