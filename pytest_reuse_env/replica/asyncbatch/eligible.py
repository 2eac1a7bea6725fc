"""Which collected tests an async batch may run at once, and in which groups.

A test is eligible (``is_async_item``) when it is a coroutine test function run by
pytest-asyncio, or by anyio on the asyncio backend, and does not use ``capfd``/``capfdbinary``
(fd-level capture is process-wide). Eligible tests are grouped (``groups``) by what they must
share in one ``batch.run_concurrently`` pass: their collectors, their higher-scoped parameters,
their event loop (``loop_key``) and their ``filterwarnings`` marks.

Imports only the standard library and pytest (pytest-asyncio lazily): the controller asks
``is_async_item`` too, for the summary's concurrency note.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import pytest
from _pytest.scope import Scope

from pytest_reuse_env.replica.asyncbatch.task import FD_CAPTURE_FIXTURES

__all__ = ["anyio_backend_value", "groups", "is_async_item", "loop_key"]


def is_async_item(item: pytest.Item) -> bool:
    """True for a test this module can run concurrently.

    That is a coroutine test function run by pytest-asyncio, or by anyio on the asyncio backend,
    that does not use ``capfd``/``capfdbinary`` (fd-level capture is process-wide).
    """
    if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
        return False
    if FD_CAPTURE_FIXTURES.intersection(item.fixturenames):
        return False
    if _anyio_backend(item) is not None:
        return _anyio_backend(item) == "asyncio"
    return _is_pytest_asyncio_item(item)


def _is_pytest_asyncio_item(item: pytest.Function) -> bool:
    if not item.config.pluginmanager.has_plugin("asyncio"):
        return False
    import pytest_asyncio

    return (
        bool(pytest_asyncio.is_async_test(item)) and item.get_closest_marker("asyncio") is not None
    )


def _anyio_backend(item: pytest.Function) -> str | None:
    """The anyio backend name of an anyio test, "?" when it cannot be known, None if not anyio."""
    if "anyio_backend" not in item.fixturenames or not item.config.pluginmanager.has_plugin(
        "anyio"
    ):
        return None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "anyio_backend" in callspec.params:
        return _backend_name(callspec.params["anyio_backend"])
    defs = item._fixtureinfo.name2fixturedefs.get("anyio_backend") or ()
    if defs and not defs[-1].argnames and not defs[-1].params:
        func = defs[-1].func
        if not (inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func)):
            with contextlib.suppress(Exception):  # a user's fixture: "?" unless it is plain
                return _backend_name(func())
    return "?"


def _backend_name(backend: object) -> str:
    if isinstance(backend, tuple):
        return str(backend[0])
    return str(backend)


def groups(items: Sequence[pytest.Function]) -> list[list[pytest.Function]]:
    """Items that may share one SetupState chain, one loop and one set of warning filters."""
    groups: dict[tuple[object, ...], list[pytest.Function]] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item)
    return list(groups.values())


def group_key(item: pytest.Function) -> tuple[object, ...]:
    callspec = getattr(item, "callspec", None)
    higher: tuple[tuple[str, int], ...] = ()
    if callspec is not None:
        arg2scope = getattr(callspec, "_arg2scope", {})
        higher = tuple(
            sorted(
                (name, index)
                for name, index in callspec.indices.items()
                if arg2scope.get(name, Scope.Function) is not Scope.Function
            )
        )
    marks = tuple(arg for mark in item.iter_markers("filterwarnings") for arg in mark.args)
    return (id(item.parent), higher, loop_key(item), marks)


def loop_key(item: pytest.Function) -> tuple[str, str]:
    if _anyio_backend(item) is not None:
        return ("anyio", repr(anyio_backend_value(item)))
    return ("asyncio", str(getattr(item, "_loop_scope", "function")))


def anyio_backend_value(item: pytest.Function) -> object:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "anyio_backend" in callspec.params:
        return callspec.params["anyio_backend"]
    return "asyncio"
