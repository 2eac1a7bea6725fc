"""Which routed tests stay in the controller, and when a run goes in collection order."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_reuse_env.controller import ordering


class FakeManager:
    def __init__(self, plugins: set[str]) -> None:
        self.plugins = plugins

    def has_plugin(self, name: str) -> bool:
        return name in self.plugins


def config(plugins: set[str], maxfail: int = 0, **options: Any) -> pytest.Config:
    fake = SimpleNamespace(
        option=SimpleNamespace(maxfail=maxfail),
        pluginmanager=FakeManager(plugins),
        getoption=lambda name, default=None: options.get(name, default),
    )
    return cast(pytest.Config, fake)


def item(nodeid: str, fixtures: tuple[str, ...] = (), markers: tuple[str, ...] = ()) -> pytest.Item:
    fake = SimpleNamespace(
        nodeid=nodeid,
        fixturenames=list(fixtures),
        get_closest_marker=lambda name: object() if name in markers else None,
    )
    return cast(pytest.Item, fake)


ITEMS = [
    item("t.py::a", fixtures=("benchmark",)),
    item("t.py::b", markers=("dependency",)),
    item("t.py::c", fixtures=("snapshot",)),
    item("t.py::d", markers=("order",)),
]


def test_benchmark_and_dependency_tests_stay_local_with_one_note() -> None:
    placement = ordering.keep_local(config({"benchmark", "dependency", "syrupy"}), ITEMS)
    assert placement.local == {"t.py::a", "t.py::b"}
    assert placement.note is not None
    assert placement.note.startswith("2 tests ran in this process")
    assert "1 with the benchmark fixture" in placement.note
    assert "1 with @pytest.mark.dependency" in placement.note


def test_nothing_stays_local_without_the_plugins() -> None:
    assert ordering.keep_local(config(set()), ITEMS) == ordering.Placement(frozenset(), None)


def test_snapshot_tests_stay_in_an_xdist_worker_only() -> None:
    plain = ordering.keep_local(config({"syrupy"}), ITEMS)
    assert plain.local == frozenset()
    worker = ordering.keep_local(config({"syrupy"}), ITEMS, xdist_worker=True)
    assert worker.local == {"t.py::c"}
    assert worker.note is not None
    assert "xdist" in worker.note


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (config(set(), maxfail=1), "-x"),
        (config(set(), maxfail=3), "--maxfail=3"),
        (config(set(), stepwise=True), "--sw"),
        (config(set(), stepwise_skip=True), "--sw"),
        (config({"pytest_order"}), "pytest-order markers"),
        (config(set()), None),
    ],
)
def test_in_order_reason(cfg: pytest.Config, expected: str | None) -> None:
    assert ordering.in_order_reason(cfg, ITEMS) == expected


def test_order_plugin_without_markers_keeps_parallel_runs() -> None:
    assert ordering.in_order_reason(config({"pytest_order"}), ITEMS[:3]) is None
