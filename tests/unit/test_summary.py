"""The summary's figures are true: peaks count only what ran at once, and "saved" is measured
against what plain pytest would have paid in this run."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.summary import (
    MERGE,
    ReuseSummary,
    closing_line,
    environment_notes,
)
from pytest_reuse_env.policy import ReusePolicy
from tests.unit.fakes import Run, ready

TESTS = [f"t.py::test_{i}" for i in range(4)]


class Terminal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(title)

    def write_line(self, line: str, **markup: bool) -> None:
        self.lines.append(line)


def summary_line(*figures: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    summary = ReuseSummary(None, None)  # type: ignore[arg-type]
    summary.add_figures(list(figures))
    terminal = Terminal()
    summary.pytest_terminal_summary(terminal)  # type: ignore[arg-type]
    (env,) = summary.environments()
    return terminal.lines[1], env


def figures(replicas: list[tuple[float, bool]], warm: int, cold: int) -> dict[str, Any]:
    """An environment's figures with replicas given as (setup seconds, attached)."""
    return {
        "name": "default",
        "policy": "replicas=1",
        "replicas_started": sum(1 for _, attached in replicas if not attached),
        "replicas_attached": sum(1 for _, attached in replicas if attached),
        "start_failures": 0,
        "retired": {"end of run": len(replicas)},
        "tests_cold": cold,
        "tests_warm": warm,
        "peak_busy": 1,
        "peak_tests": 1,
        "test_phase_seconds": 1.0,
        "max_replicas": 2,
        "concurrency": 1,
        "setup_seconds_total": sum(s for s, attached in replicas if not attached),
        "notes": [],
        "replicas": [
            {
                "id": f"r{i}",
                "pid": i,
                "setup_seconds": setup,
                "tests_run": 1,
                "ended": "end of run",
                "attached": attached,
                "first_test_seconds": 0.1,
            }
            for i, (setup, attached) in enumerate(replicas)
        ],
    }


def test_replicas_started_by_the_run_save_nothing_against_plain_pytest() -> None:
    # Two replicas of 36 s each ran 2000 tests warm: plain pytest pays 36 s once, this run
    # paid 72 s. The old figure claimed 36 s x 2000 = 72000 s saved.
    line, env = summary_line(figures([(36.0, False), (36.0, False)], warm=2000, cold=2))
    assert env["saved_seconds_estimate"] == 0.0
    assert env["plain_setup_seconds"] == pytest.approx(36.0)
    assert "setup 72.0 s in all, plain pytest ~36.0 s" in line
    assert "saved" not in line


def test_attaching_a_warm_replica_saves_its_setup_once() -> None:
    line, env = summary_line(figures([(10.0, True), (10.0, True)], warm=100, cold=0))
    assert env["saved_seconds_estimate"] == pytest.approx(10.0), "plain pytest pays it once"
    assert env["skipped_seconds"] == pytest.approx(20.0)
    assert "setup 0.0 s in all, plain pytest ~10.0 s: saved ~10.0 s" in line


def test_each_xdist_worker_would_have_paid_the_setup_in_plain_pytest() -> None:
    _line, env = summary_line(
        figures([(10.0, True)], warm=50, cold=0),
        figures([(10.0, True)], warm=50, cold=0),
        figures([], warm=0, cold=0),  # a worker that ran none of its tests pays nothing
    )
    assert env["plain_setup_seconds"] == pytest.approx(20.0)
    assert env["saved_seconds_estimate"] == pytest.approx(20.0)


def test_fixtures_kept_through_an_edit_save_their_setup_once_per_process_of_plain_pytest() -> None:
    # Two warm replicas each kept a 2 s fixture through an edit: plain pytest would have set it
    # up once in this run, so 2 s saved, not 4 s.
    reload = {
        "modules_reimported": 2,
        "fixtures_kept": 2,
        "fixtures_rebuilt": 0,
        "kept_fixture_seconds": 4.0,
        "replicas_keeping": 2,
    }
    entry = figures([(2.0, True), (2.0, True)], warm=10, cold=0) | reload
    summary = ReuseSummary(None, None)  # type: ignore[arg-type]
    summary.add_figures([entry])
    terminal = Terminal()
    summary.pytest_terminal_summary(terminal)  # type: ignore[arg-type]
    (env,) = summary.environments()
    assert env["kept_fixture_seconds"] == 2.0
    assert terminal.lines[2] == (
        "  through edits: 2 files re-imported, 2 warm fixtures kept (~2.0 s of setup saved "
        "against plain pytest), 0 rebuilt"
    )
    # Two xdist workers would each have set it up in plain pytest.
    workers = [figures([(2.0, True)], warm=5, cold=0) | reload for _ in range(2)]
    for worker, replica in zip(workers, ("r0", "r1"), strict=True):
        worker.update(kept_fixture_seconds=2.0, replicas_keeping=1)
        worker["replicas"][0]["id"] = replica
    _, env = summary_line(*workers)
    assert env["kept_fixture_seconds"] == 4.0


def test_peak_counts_only_tests_running_at_once_on_live_replicas() -> None:
    """One replica of concurrency 1 ends mid-test (its last test never finished); its
    replacement runs the rest: one test ran at a time, on one replica."""
    run = Run(TESTS)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.logstart(TESTS[1], ("t.py", 1, "test_1")))
    run.say(r0, protocol.END)  # crashed while running test_1
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    for nodeid in TESTS[2:]:
        run.run_test(r1, nodeid)
    stats = run.environment.stats
    assert (stats.peak_busy, stats.peak_tests) == (1, 1)
    line, env = summary_line(run.environment.figures([]))
    assert "peak 1 busy;" in line, line
    assert "tests at once" not in line
    assert [r["ended"] for r in env["replicas"]] == ["crash", None]


def test_closing_line_says_which_replicas_kept_warm_are_still_starting() -> None:
    run = Run(TESTS, ReusePolicy(replicas=2, scope="global"))
    run.environment.submit(TESTS)
    r0, r1 = run.replicas
    run.say(r0, ready(TESTS))
    environments = [run.environment]
    assert closing_line([r0], environments).startswith(
        "reuse: 1 replica stays warm for the next run (each ends after 30 s"
    )
    both = closing_line([r0, r1], environments)
    assert both.startswith(
        "reuse: 2 replicas stay warm for the next run (1 of them still starting)"
    )
    alone = closing_line([r1], environments)
    assert alone.startswith("reuse: 1 replica stays warm for the next run (still starting)")
    r1.attached = True  # warm from the registry, its READY not read yet: not starting
    assert closing_line([r1], environments).startswith(
        "reuse: 1 replica stays warm for the next run (each ends after 30 s"
    )


def test_every_figure_an_environment_reports_has_an_xdist_merge_rule() -> None:
    """A new figure in ``Environment.figures`` without a rule in ``MERGE`` fails here."""
    run = Run(TESTS)
    run.environment.submit(TESTS)
    run.say(run.replicas[0], ready(TESTS))
    emitted = set(run.environment.figures([]))
    assert emitted - set(MERGE) == set()
    assert set(MERGE) - emitted == set(), "a rule for a figure nobody reports"


def test_xdist_workers_figures_merge_by_their_rules() -> None:
    one = figures([(10.0, False)], warm=5, cold=1)
    two = {
        **figures([(12.0, False)], warm=7, cold=1),
        "test_phase_seconds": 3.0,
        "notes": ["shared note", "second"],
        "retired": {"end of run": 1, "idle": 2},
        "modules_reimported": 2,
    }
    one = {**one, "notes": ["shared note"], "modules_reimported": 1}
    two["replicas"][0]["id"] = "r1"
    _line, env = summary_line(one, two)
    assert (env["tests_warm"], env["tests_cold"]) == (12, 2)  # sum
    assert env["test_phase_seconds"] == 3.0  # max
    assert env["retired"] == {"end of run": 2, "idle": 2}  # counter
    assert env["notes"] == ["shared note", "second"]  # union
    assert env["modules_reimported"] == 3
    assert [r["id"] for r in env["replicas"]] == ["r0", "r1"]
    assert env["policy"] == "replicas=1"  # same


def test_a_one_at_a_time_run_is_not_told_to_raise_replicas() -> None:
    run = Run(TESTS, ReusePolicy(replicas=1, scope="run"))
    assert any(
        "capacity 1" in note
        for note in environment_notes(run.environment, [], feeders=1, on_hosts=False)
    ), "a policy of one replica runs one test at a time: worth saying"
    run.environment.one_at_a_time()  # -x: one at a time whatever the policy
    assert environment_notes(run.environment, [], feeders=1, on_hosts=False) == []


class Options:
    def __init__(self, verify_cold: bool) -> None:
        self.verify_cold = verify_cold

    def getoption(self, name: str, default: object = None) -> object:
        assert name == "reuse_verify_cold"
        return self.verify_cold


def report(nodeid: str, *, warm: bool, outcome: str, when: str = "call") -> Any:
    class Report:
        pass

    made = Report()
    made.nodeid, made.when = nodeid, when  # type: ignore[attr-defined]
    made.failed, made.skipped = outcome == "failed", outcome == "skipped"  # type: ignore[attr-defined]
    setattr(made, protocol.REPORT_REPLICA, "r0")
    setattr(made, protocol.REPORT_WARM, warm)
    return made


@pytest.mark.parametrize("verify_cold", [False, True])
def test_failures_in_warm_replicas_get_a_hint_unless_verify_cold_runs(verify_cold: bool) -> None:
    summary = ReuseSummary(Options(verify_cold), None)  # type: ignore[arg-type]
    for made in [
        report("t.py::test_cold_failure", warm=False, outcome="failed"),
        report("t.py::test_warm_pass", warm=True, outcome="passed"),
        report("t.py::test_warm_skip", warm=True, outcome="skipped"),
        report("t.py::test_warm_error", warm=True, outcome="failed", when="setup"),
        report("t.py::test_warm_failure", warm=True, outcome="failed"),
    ]:
        summary.pytest_runtest_logreport(made)
    hint = summary._warm_failures_hint()
    if verify_cold:
        assert hint is None, "its annotations say it already"
    else:
        assert hint is not None
        assert hint.startswith("2 tests failed in a warm replica"), hint


def test_no_hint_without_warm_failures() -> None:
    summary = ReuseSummary(Options(False), None)  # type: ignore[arg-type]
    summary.pytest_runtest_logreport(report("t.py::test_cold", warm=False, outcome="failed"))
    summary.pytest_runtest_logreport(report("t.py::test_warm", warm=True, outcome="passed"))
    assert summary._warm_failures_hint() is None
