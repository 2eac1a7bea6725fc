"""What one watch round runs, and the line that announces it: pure logic, no pytest calls.

A round after a save runs the *affected* tests first (those in a test module that was
re-imported or collected again because it, or a module it imports, changed) and the tests that
failed in an earlier round and have not passed since; then the rest of the selection, unless
``--reuse-watch-affected``. The keys narrow the selection: ``f`` keeps the failures only, ``p``
a file-name pattern, ``k`` a ``-k`` expression (on top of the command line's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, final

T = TypeVar("T")


@final
@dataclass(frozen=True)
class Filters:
    """What the keys set: they stay until changed (an empty value clears one)."""

    #: ``p``: a regular expression searched in each test's file path (as jest's ``p``).
    pattern: str = ""
    #: ``k``: a ``-k`` expression.
    keyword: str = ""

    def describe(self) -> str:
        parts = []
        if self.pattern:
            parts.append(f"files matching {self.pattern!r}")
        if self.keyword:
            parts.append(f"-k {self.keyword!r}")
        return ", ".join(parts)


@final
@dataclass(frozen=True)
class Trigger:
    """Why a round starts: a save (``changed`` files), or a key."""

    #: "changes", "all" (Enter, or a new filter), "failures" (``f``).
    kind: str
    changed: tuple[str, ...] = ()


@final
@dataclass(frozen=True)
class RoundPlan(Generic[T]):
    first: list[T]
    rest: list[T]

    @property
    def items(self) -> list[T]:
        return [*self.first, *self.rest]


def plan_round(
    items: Sequence[T],
    *,
    nodeid: Callable[[T], str],
    path: Callable[[T], str],
    affected: Callable[[T], bool] | None,
    failed: set[str],
    failures_only: bool,
    affected_only: bool,
    filters: Filters,
    keyword_match: Callable[[T, str], bool],
) -> RoundPlan[T]:
    """The round's tests in order. ``affected`` None means every test counts as affected (a
    full re-run)."""
    pattern = re.compile(filters.pattern) if filters.pattern else None
    selected = [
        item
        for item in items
        if (pattern is None or pattern.search(path(item)))
        and (not filters.keyword or keyword_match(item, filters.keyword))
    ]
    if failures_only:
        return RoundPlan([i for i in selected if nodeid(i) in failed], [])
    if affected is None:
        return RoundPlan(selected, [])
    first = [i for i in selected if affected(i) or nodeid(i) in failed]
    chosen = {id(i) for i in first}
    rest = [] if affected_only else [i for i in selected if id(i) not in chosen]
    return RoundPlan(first, rest)


def next_failures(previous: set[str], ran: Iterable[str], failed_now: Iterable[str]) -> set[str]:
    """Failures to re-run first next time: this round's, and earlier ones it did not re-run."""
    return (previous - set(ran)) | set(failed_now)


def header(number: int, trigger: Trigger, plan: RoundPlan[T], filters: Filters) -> str:
    """The one line a round starts with: what changed, how many tests it affects."""
    if trigger.kind == "changes":
        shown = ", ".join(trigger.changed[:3])
        more = f" and {len(trigger.changed) - 3} more" if len(trigger.changed) > 3 else ""
        what = f"{shown}{more} changed"
    elif trigger.kind == "failures":
        what = "re-running failures"
    elif number == 1:
        what = "first run"
    else:
        what = "re-running all"
    count = f"{len(plan.first)} test{'s' if len(plan.first) != 1 else ''}"
    if trigger.kind == "changes":
        line = f"{what}: {count} affected"
        if plan.rest:
            line += f", then {len(plan.rest)} more"
    else:
        line = f"{what}: {count}"
    narrowed = filters.describe()
    if narrowed:
        line += f" ({narrowed})"
    return f"reuse watch #{number}: {line}"
