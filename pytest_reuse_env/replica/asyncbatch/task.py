"""One test's run inside a concurrent batch (``batch.py``): its state, and the
resolution of its function-scoped fixtures, per task.

pytest's ``FixtureDef.cached_result`` holds one value and ``SetupState`` one chain at a time,
so tests that interleave on one loop cannot share them for function-scoped fixtures: a
``TaskRun`` resolves those itself (with pytest's override rules, parametrization and a
``request`` of its own) and keeps the test's finalizers, captured output and reports. Fixtures
of wider scopes come from pytest's own cache, set up before the batch starts.

Runs inside a replica: imports the standard library, pytest (pytest-asyncio and anyio
lazily) and the package's ``asyncbatch.output`` module only.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import pytest
from _pytest.compat import NOTSET
from _pytest.fixtures import (
    FixtureDef,
    FixtureLookupError,
    SubRequest,
    TopRequest,
    _teardown_yield_fixture,
    resolve_fixture_function,
)
from _pytest.logging import LogCaptureHandler, caplog_handler_key, caplog_records_key
from _pytest.outcomes import fail
from _pytest.runner import CallInfo
from _pytest.scope import Scope

from pytest_reuse_env.replica.asyncbatch.output import TaskCapsys

if TYPE_CHECKING:
    from pytest_reuse_env.replica.asyncbatch.batch import _Batch as Batch

#: Fixtures that capture at the fd level: tests using them cannot share a process's fds.
FD_CAPTURE_FIXTURES: Final = frozenset({"capfd", "capfdbinary"})

_Phase = Literal["setup", "call", "teardown"]


# -- one test's state ----------------------------------------------------------------------------


@dataclass(eq=False)
class TaskRun:
    """One item's run: its fixtures, finalizers, captured output and reports."""

    item: pytest.Function
    batch: Batch
    values: dict[FixtureDef[Any], object] = field(default_factory=dict)
    finalizers: list[Callable[[], object]] = field(default_factory=list)
    reports: list[pytest.TestReport] = field(default_factory=list)
    recorded: list[warnings.WarningMessage] = field(default_factory=list)
    phase: _Phase = "setup"
    output: dict[str, io.StringIO] = field(default_factory=dict)
    capsys: TaskCapsys | None = None
    caplog_handler: LogCaptureHandler | None = None
    report_handler: LogCaptureHandler | None = None
    setup_error: BaseException | None = None
    setup_started: float = 0.0  # epoch, for the report
    setup_seconds: float = 0.0
    started: float | None = None  # monotonic, for "ran concurrently with"
    finished: float | None = None

    # -- output ------------------------------------------------------------------------------

    def write(self, stream: str, text: str) -> bool:
        """Take text written to ``stream`` ("stdout"/"stderr"); False: write it through."""
        if self.capsys is not None and self.capsys.active:
            self.capsys.write(stream, text)
            return True
        if not self.batch.capturing:
            return False
        self.output.setdefault(stream, io.StringIO()).write(text)
        return True

    def begin_phase(self, when: _Phase) -> None:
        self.phase = when
        self.output = {}
        logging_plugin = self.batch.logging_plugin
        if logging_plugin is None:
            return
        self.caplog_handler, self.report_handler = LogCaptureHandler(), LogCaptureHandler()
        self.report_handler.setFormatter(logging_plugin.formatter)
        if logging_plugin.log_level is not None:
            self.caplog_handler.setLevel(logging_plugin.log_level)
            self.report_handler.setLevel(logging_plugin.log_level)
        if when == "setup":
            self.item.stash[caplog_records_key] = {}
        self.item.stash[caplog_records_key][when] = self.caplog_handler.records
        self.item.stash[caplog_handler_key] = self.caplog_handler

    def end_phase(self, when: _Phase) -> None:
        """Add the phase's captured output to the item's report sections (as pytest does)."""
        if self.batch.capturing:
            for stream in ("stdout", "stderr"):
                buffer = self.output.get(stream)
                self.item.add_report_section(when, stream, buffer.getvalue() if buffer else "")
        if self.report_handler is not None:
            log = self.report_handler.stream.getvalue().strip()
            self.item.add_report_section(when, "log", log)
        if when == "teardown":
            if caplog_records_key in self.item.stash:
                del self.item.stash[caplog_records_key]
            if caplog_handler_key in self.item.stash:
                del self.item.stash[caplog_handler_key]

    def log(self, record: logging.LogRecord) -> None:
        for handler in (self.caplog_handler, self.report_handler):
            if handler is not None and record.levelno >= handler.level:
                handler.handle(record)

    # -- reports -----------------------------------------------------------------------------

    def report(
        self, when: _Phase, start: float, seconds: float, error: BaseException | None
    ) -> None:
        self.end_phase(when)
        excinfo = None if error is None else pytest.ExceptionInfo.from_exception(error)
        call: CallInfo[None] = CallInfo(
            None, excinfo, start, start + seconds, seconds, when, _ispytest=True
        )
        self.reports.append(self.item.ihook.pytest_runtest_makereport(item=self.item, call=call))


# -- fixture resolution for the function scope ---------------------------------------------------


class TestRequest(TopRequest):  # type: ignore[misc]  # @final for users, not for us
    """The test function's ``request``: finalizers and dynamic lookups stay with this run."""

    def __init__(self, run: TaskRun) -> None:
        super().__init__(run.item, _ispytest=True)
        self._run = run

    def addfinalizer(self, finalizer: Callable[[], object]) -> None:
        self._run.finalizers.append(finalizer)

    def getfixturevalue(self, argname: str) -> Any:
        return _resolve_now(resolve(self._run, argname, (), self))


class _FixtureRequest(SubRequest):  # type: ignore[misc]
    """A function-scoped fixture's ``request``, bound to one run."""

    def __init__(
        self,
        run: TaskRun,
        parent: pytest.FixtureRequest,
        fixturedef: FixtureDef[Any],
        param: object,
        param_index: int,
        chain: tuple[str, ...],
    ) -> None:
        super().__init__(parent, Scope.Function, param, param_index, fixturedef, _ispytest=True)
        self._run = run
        self._chain = chain

    def addfinalizer(self, finalizer: Callable[[], object]) -> None:
        self._run.finalizers.append(finalizer)

    def getfixturevalue(self, argname: str) -> Any:
        return _resolve_now(resolve(self._run, argname, self._chain, self))


def _resolve_now(coro: Coroutine[Any, Any, object]) -> Any:
    """Drive a resolution that needs no waiting (sync fixtures, cached values) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError(
        "request.getfixturevalue() cannot set up a function-scoped async fixture while tests "
        "run concurrently: request it as an argument instead"
    )


def _fixturedef(
    run: TaskRun, argname: str, chain: tuple[str, ...], request: Any
) -> FixtureDef[Any]:
    """The definition pytest would pick: the closest, or the one a same-named fixture overrides."""
    item = run.item
    defs = item._fixtureinfo.name2fixturedefs.get(argname)
    if defs is None:
        defs = item.session._fixturemanager.getfixturedefs(argname, item)
    index = -1 - chain.count(argname)
    if not defs or -index > len(defs):
        raise FixtureLookupError(argname, request)
    return defs[index]


async def resolve(
    run: TaskRun, argname: str, chain: tuple[str, ...], request: pytest.FixtureRequest
) -> object:
    __tracebackhide__ = True
    if argname == "request":
        return request
    fixturedef = _fixturedef(run, argname, chain, request)
    if fixturedef in run.values:
        return run.values[fixturedef]
    if fixturedef._scope is not Scope.Function:
        value = _higher_scoped_value(run, fixturedef)
    else:
        value = await _execute(run, fixturedef, (*chain, argname), request)
    run.values[fixturedef] = value
    return value


def _higher_scoped_value(run: TaskRun, fixturedef: FixtureDef[Any]) -> object:
    """A fixture above function scope, set up before the batch; errors re-raised as pytest does."""
    __tracebackhide__ = True
    cached = fixturedef.cached_result
    if cached is None:
        # Only reachable through a same-named function fixture requesting what it overrides.
        raise RuntimeError(f"fixture {fixturedef.argname!r} was not set up before the batch")
    if cached[2] is not None:
        exc, tb = cached[2]
        raise exc.with_traceback(tb)
    return cached[0]


async def _execute(
    run: TaskRun,
    fixturedef: FixtureDef[Any],
    chain: tuple[str, ...],
    parent: pytest.FixtureRequest,
) -> object:
    __tracebackhide__ = True
    item, argname = run.item, fixturedef.argname
    callspec = getattr(item, "callspec", None)
    param: object = NOTSET
    param_index = 0
    if callspec is not None and argname in callspec.params:
        param, param_index = callspec.params[argname], callspec.indices[argname]
    request = _FixtureRequest(run, parent, fixturedef, param, param_index, chain)
    if fixturedef.func.__module__ == "_pytest.capture" and argname in ("capsys", "capsysbinary"):
        run.capsys = TaskCapsys(run.batch.streams.paused, binary=argname == "capsysbinary")
        return run.capsys
    if argname in FD_CAPTURE_FIXTURES:
        fail(f"{argname} captures file descriptors 1 and 2, which concurrent tests share")
    kwargs = {name: await resolve(run, name, chain, request) for name in fixturedef.argnames}
    func: Any = resolve_fixture_function(fixturedef, request)
    if inspect.isasyncgenfunction(fixturedef.func):
        agen = func(**kwargs)
        try:
            value = await agen.__anext__()
        except StopAsyncIteration:
            raise ValueError(f"{argname} did not yield a value") from None
        run.finalizers.append(functools.partial(_finish_async_generator, func, agen))
        return value
    if inspect.iscoroutinefunction(fixturedef.func):
        return await func(**kwargs)
    if inspect.isgeneratorfunction(fixturedef.func):
        generator = func(**kwargs)
        try:
            value = next(generator)
        except StopIteration:
            raise ValueError(f"{argname} did not yield a value") from None
        run.finalizers.append(functools.partial(_teardown_yield_fixture, func, generator))
        return value
    return func(**kwargs)


async def _finish_async_generator(func: Callable[..., Any], agen: Any) -> None:
    try:
        await agen.__anext__()
    except StopAsyncIteration:
        return
    fail(f"fixture function {func.__name__} has more than one 'yield'", pytrace=False)
