"""The reuse section merges xdist workers' environment snapshots and ends with the closing line."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pytest_reuse_env.controller.summary import ReuseSummary


def replica(rid: str, *, attached: bool, setup: float | None, tests: int) -> dict[str, Any]:
    return {
        "id": rid,
        "pid": 1,
        "setup_seconds": setup,
        "tests_run": tests,
        "ended": None,
        "attached": attached,
        "first_test_seconds": None,
    }


def snapshot(replicas: list[dict[str, Any]], started: int, notes: list[str]) -> dict[str, Any]:
    return {
        "name": "default",
        "policy": "replicas=2",
        "replicas_started": started,
        "replicas_attached": sum(1 for r in replicas if r["attached"]),
        "start_failures": 0,
        "retired": {},
        "tests_cold": 1,
        "tests_warm": 3,
        "peak_busy": 1,
        "peak_tests": 1,
        "test_phase_seconds": 1.0,
        "max_replicas": 2,
        "concurrency": 1,
        "setup_seconds_total": 2.0,
        "notes": notes,
        "replicas": replicas,
    }


def test_a_replica_another_worker_started_this_run_is_not_attached_warm() -> None:
    summary = ReuseSummary(cast(pytest.Config, None), None)
    # Worker gw1 attached the replica gw0 had started a moment earlier (listed first).
    summary.add_figures(
        [
            snapshot([replica("r0", attached=True, setup=None, tests=2)], 0, ["advice"]),
            snapshot([replica("r0", attached=False, setup=2.0, tests=2)], 1, ["advice"]),
        ]
    )
    [env] = summary.environments()
    assert env["replicas_attached"] == 0
    assert env["replicas_started"] == 1
    assert env["replicas"] == [replica("r0", attached=False, setup=2.0, tests=4)]
    assert env["notes"] == ["advice"]
    assert env["skipped_seconds"] == 0


class FakeTerminal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"{sep * 3} {title}")

    def write_line(self, line: str, **markup: bool) -> None:
        self.lines.append(line)


def test_the_closing_line_ends_the_reuse_section() -> None:
    summary = ReuseSummary(cast(pytest.Config, None), None)
    summary.add_figures([snapshot([replica("r0", attached=False, setup=1.0, tests=4)], 1, [])])
    summary.closing = "reuse: 1 replica stays warm"
    terminal = FakeTerminal()
    summary.pytest_terminal_summary(cast(pytest.TerminalReporter, terminal))
    assert terminal.lines[0] == "=== reuse"
    assert terminal.lines[-1] == "reuse: 1 replica stays warm"
