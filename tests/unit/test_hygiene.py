"""Leak checks between tests (``replica/hygiene.py``): what a test changed and did not restore
is reported, one line per kind; an unchanged process costs a few comparisons and reports
nothing; a second baseline (after a wider fixture's setup) absorbs what that fixture holds."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_reuse_env.replica.hygiene import LeakRules, ProcessState, leaks, read_state

BASE = ProcessState(
    environ={b"HOME": b"/root"},
    cwd="/project",
    sys_path=("/project", "/lib"),
    threads=frozenset({(1, "MainThread")}),
    fds=frozenset({0, 1, 2}),
    children=frozenset(),
    tasks=0,
    rss=100 * 2**20,
)


@pytest.fixture
def open_fd() -> Iterator[int]:
    read_end, write_end = os.pipe()
    os.close(write_end)
    yield read_end
    os.close(read_end)


def test_an_unchanged_process_reports_nothing() -> None:
    assert leaks(BASE, BASE._replace(), LeakRules()) == []
    assert leaks([BASE, BASE], BASE, LeakRules()) == []


def test_what_went_away_is_no_leak() -> None:
    after = BASE._replace(threads=frozenset(), fds=frozenset({0}), rss=0)
    assert leaks(BASE, after, LeakRules()) == []


def test_each_kind_of_change_is_one_line(open_fd: int) -> None:
    after = BASE._replace(
        environ={b"HOME": b"/tmp", b"NEW": b"1"},
        cwd="/elsewhere",
        sys_path=("/lib", "/project", "/added"),
        threads=BASE.threads | {(7, "pool-1")},
        fds=BASE.fds | {open_fd},
        children=frozenset({4321}),
        tasks=2,
        rss=BASE.rss + 65 * 2**20,
    )
    found = leaks(BASE, after, LeakRules())
    assert [line.split(":")[0] for line in found] == [
        "environment variables changed",
        "working directory changed",
        "sys.path changed",
        "threads still running",
        "file descriptors left open",
        "child processes left running",
        "asyncio tasks still pending",
        "resident memory grew by 65 MiB",
    ]
    assert "HOME, NEW" in found[0]
    assert "added ['/added']" in found[2]
    assert "pool-1" in found[3]


def test_memory_growth_counts_above_the_limit_only() -> None:
    grown = BASE._replace(rss=BASE.rss + 64 * 2**20)
    assert leaks(BASE, grown, LeakRules(memory_mib=64.0)) == []
    assert leaks(BASE, grown, LeakRules(memory_mib=10.0)) == ["resident memory grew by 64 MiB"]


def test_a_second_baseline_absorbs_what_a_wider_fixture_holds() -> None:
    after_setup = BASE._replace(threads=BASE.threads | {(9, "db-pool")})
    assert leaks([BASE, after_setup], after_setup, LeakRules()) == []
    assert leaks([BASE], after_setup, LeakRules()) == ["threads still running: db-pool"]


def test_ignore_patterns() -> None:
    after = BASE._replace(
        environ={**BASE.environ, b"CACHE_DIR": b"x"}, threads=BASE.threads | {(3, "pool")}
    )
    rules = LeakRules(ignore=("env:CACHE_*", "thread:po*"))
    assert leaks(BASE, after, rules) == []


def test_a_descriptor_closed_since_the_reading_is_no_leak() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    after = BASE._replace(fds=BASE.fds | {read_end})
    assert leaks(BASE, after, LeakRules()) == []


def test_the_process_now_compares_equal_to_itself() -> None:
    # Another test's thread may still be ending (or a collector running) between two readings:
    # one clean pair of three is what shows that reading twice reports nothing by itself.
    found = []
    for _ in range(3):
        state = read_state()
        found = leaks(state, read_state(), LeakRules())
        if not found:
            break
    assert found == []
