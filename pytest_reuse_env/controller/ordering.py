"""Where and in which order routed tests must run so other plugins see what plain pytest shows.

Two decisions, made once collection is done:

- **in collection order** (``in_order_reason``): ``-x``/``--maxfail``, ``--sw`` and pytest-order
  markers mean a test's turn matters. pytest's own loop then drives, one test at a time, each in
  the controller or in its environment's (single) replica, so nothing runs before its turn and a
  stop happens exactly where plain pytest stops.
- **in the controller** (``keep_local``): tests whose plugin keeps per-process state across
  tests that no replica can share: pytest-dependency's results, pytest-benchmark's timings (it
  disables itself under xdist: timings taken beside other busy processes do not compare).
  They run here, with one note saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

import pytest

#: Fixtures whose tests run in the controller, with the plugin (its pytest11 name) behind them.
LOCAL_FIXTURES: Final = {"benchmark": "benchmark", "benchmark_weave": "benchmark"}
#: Under pytest -n, a replica's per-run data (replica/perrun.py) has no way on to xdist's
#: controller: these fixtures' tests run in the xdist worker.
LOCAL_FIXTURES_UNDER_XDIST: Final = {"snapshot": "syrupy"}
#: Markers whose tests run in the controller, with the plugin behind them.
LOCAL_MARKERS: Final = {"dependency": "dependency"}
#: Why each kept-local reason's tests cannot run in a replica (keyed by fixture or marker).
WHY: Final = {
    "benchmark": "pytest-benchmark times tests beside no other work (it turns itself off "
    "under xdist)",
    "benchmark_weave": "pytest-benchmark times tests beside no other work (it turns itself off "
    "under xdist)",
    "snapshot": "syrupy's snapshot data cannot reach xdist's controller from a replica",
    "dependency": "pytest-dependency keeps results in the process that ran them",
}
#: Markers that make the order of a whole run matter, with the plugin behind them.
ORDER_MARKERS: Final = {"order": "pytest_order"}


def _active(config: pytest.Config, name: str) -> bool:
    """A plugin is registered under its pytest11 name (or ``-p`` module name) and not blocked."""
    return config.pluginmanager.has_plugin(name)


@final
@dataclass(frozen=True)
class Placement:
    """Tests taken back from reuse, and why (one line for the summary)."""

    local: frozenset[str]
    note: str | None


def keep_local(
    config: pytest.Config, items: Iterable[pytest.Item], *, xdist_worker: bool = False
) -> Placement:
    """The routed tests that must run in the controller, and the note that says so."""
    local: set[str] = set()
    why: dict[str, int] = {}
    because: set[str] = set()
    wanted = {**LOCAL_FIXTURES, **(LOCAL_FIXTURES_UNDER_XDIST if xdist_worker else {})}
    fixtures = {f: p for f, p in wanted.items() if _active(config, p)}
    markers = {m: p for m, p in LOCAL_MARKERS.items() if _active(config, p)}
    if not fixtures and not markers:
        return Placement(frozenset(), None)
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        key = next((f for f in fixtures if f in names), None)
        reason = f"the {key} fixture"
        if key is None:
            key = next((m for m in markers if item.get_closest_marker(m)), None)
            reason = f"@pytest.mark.{key}"
        if key is not None:
            local.add(item.nodeid)
            why[reason] = why.get(reason, 0) + 1
            because.add(WHY[key])
    if not local:
        return Placement(frozenset(), None)
    counted = ", ".join(f"{n} with {reason}" for reason, n in sorted(why.items()))
    note = (
        f"{len(local)} test{'s' if len(local) != 1 else ''} ran in this process, not in a "
        f"replica ({counted}): {'; '.join(sorted(because))}"
    )
    return Placement(frozenset(local), note)


def in_order_reason(config: pytest.Config, items: Iterable[pytest.Item]) -> str | None:
    """Why this run must run its tests one at a time in collection order, or None."""
    if config.option.maxfail:
        return "-x" if config.option.maxfail == 1 else f"--maxfail={config.option.maxfail}"
    if config.getoption("stepwise", False) or config.getoption("stepwise_skip", False):
        return "--sw"
    markers = [m for m, p in ORDER_MARKERS.items() if _active(config, p)]
    if markers and any(item.get_closest_marker(m) for item in items for m in markers):
        return "pytest-order markers"
    return None


def in_order_note(reason: str) -> str:
    return (
        f"{reason}: tests ran one at a time in collection order (one replica per environment), "
        "so each runs in its turn and the run stops where plain pytest stops"
    )
