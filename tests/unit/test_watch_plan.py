"""What a watch round runs and how it announces itself (controller/watch_plan.py)."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_reuse_env.controller.watch_plan import (
    Filters,
    RoundPlan,
    Trigger,
    header,
    next_failures,
    plan_round,
)


@dataclass(frozen=True)
class FakeItem:
    nodeid: str

    @property
    def path(self) -> str:
        return self.nodeid.split("::")[0]


NO_FILTERS = Filters()
ITEMS = [
    FakeItem("tests/test_a.py::test_1"),
    FakeItem("tests/test_a.py::test_2"),
    FakeItem("tests/test_b.py::test_1"),
    FakeItem("tests/test_c.py::test_slow"),
]


def plan(
    affected: set[str] | None,
    failed: frozenset[str] = frozenset(),
    *,
    failures_only: bool = False,
    affected_only: bool = False,
    filters: Filters = NO_FILTERS,
) -> RoundPlan[FakeItem]:
    return plan_round(
        ITEMS,
        nodeid=lambda i: i.nodeid,
        path=lambda i: i.path,
        affected=None if affected is None else (lambda i: i.path in affected),
        failed=set(failed),
        failures_only=failures_only,
        affected_only=affected_only,
        filters=filters,
        keyword_match=lambda i, expression: expression in i.nodeid,
    )


def ids(items: list[FakeItem]) -> list[str]:
    return [i.nodeid for i in items]


def test_affected_tests_and_last_failures_first_then_the_rest_in_order() -> None:
    result = plan({"tests/test_b.py"}, frozenset({"tests/test_c.py::test_slow"}))
    assert ids(result.first) == ["tests/test_b.py::test_1", "tests/test_c.py::test_slow"]
    assert ids(result.rest) == ["tests/test_a.py::test_1", "tests/test_a.py::test_2"]
    assert ids(result.items) == ids(result.first) + ids(result.rest)


def test_affected_only_drops_the_rest() -> None:
    result = plan({"tests/test_a.py"}, affected_only=True)
    assert ids(result.first) == ["tests/test_a.py::test_1", "tests/test_a.py::test_2"]
    assert result.rest == []


def test_a_full_rerun_counts_everything_as_affected() -> None:
    result = plan(None)
    assert ids(result.first) == ids(ITEMS)
    assert result.rest == []


def test_failures_only_runs_the_failures_and_nothing_when_none_failed() -> None:
    failed = frozenset({"tests/test_a.py::test_2"})
    assert ids(plan(None, failed, failures_only=True).items) == ["tests/test_a.py::test_2"]
    assert plan(None, failures_only=True).items == []


def test_file_pattern_and_keyword_narrow_every_round() -> None:
    by_file = plan(None, filters=Filters(pattern=r"test_[ab]\.py$"))
    assert ids(by_file.items) == ids(ITEMS[:3])
    both = plan({"tests/test_c.py"}, filters=Filters(pattern="test_[ab]", keyword="test_1"))
    assert both.first == []
    assert ids(both.rest) == ["tests/test_a.py::test_1", "tests/test_b.py::test_1"]


def test_failures_carry_over_until_they_run_again() -> None:
    previous = {"a", "b"}
    # b ran and passed, c failed, a did not run this round: still a failure to re-run first.
    assert next_failures(previous, ran=["b", "c"], failed_now=["c"]) == {"a", "c"}


def test_headers_say_what_changed_and_how_many_tests_it_affects() -> None:
    two_then_one = RoundPlan(ITEMS[:2], ITEMS[2:3])
    changed = Trigger("changes", ("app/core.py",))
    assert header(2, changed, two_then_one, Filters()) == (
        "reuse watch #2: app/core.py changed: 2 tests affected, then 1 more"
    )
    many = Trigger("changes", ("a.py", "b.py", "c.py", "d.py", "e.py"))
    assert header(3, many, RoundPlan(ITEMS[:1], []), Filters()) == (
        "reuse watch #3: a.py, b.py, c.py and 2 more changed: 1 test affected"
    )
    assert header(1, Trigger("all"), RoundPlan(ITEMS, []), Filters()) == (
        "reuse watch #1: first run: 4 tests"
    )
    assert header(4, Trigger("failures"), RoundPlan(ITEMS[:1], []), Filters(keyword="x")) == (
        "reuse watch #4: re-running failures: 1 test (-k 'x')"
    )
    assert header(5, Trigger("all"), RoundPlan([], []), Filters(pattern="core")) == (
        "reuse watch #5: re-running all: 0 tests (files matching 'core')"
    )
