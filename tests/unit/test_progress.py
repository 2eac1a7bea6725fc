"""A replica still starting after a few seconds is named, with its log's last line, once per
REPEAT_SECONDS, and no more once it is ready."""

from __future__ import annotations

from pathlib import Path

from pytest_reuse_env.controller.progress import REPEAT_SECONDS, SLOW_START_SECONDS, SlowStarts
from tests.unit.fakes import Run, ready

TESTS = ["t.py::test_a"]


def test_a_slow_start_is_named_with_the_last_line_of_its_log(tmp_path: Path) -> None:
    run = Run(TESTS)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    log = tmp_path / "replica-r0.log"
    log.write_text("\nsetting up prewarm fixture 'server' (reuse_prewarm)\n")
    r0.log_path = str(log)
    lines: list[str] = []
    progress = SlowStarts(lines.append)
    start = r0.started_at
    progress.check(run.environment.replicas, start + SLOW_START_SECONDS - 0.1)
    assert lines == []
    progress.check(run.environment.replicas, start + SLOW_START_SECONDS + 0.1)
    (line,) = lines
    assert line.startswith("reuse: replica r0 (pid 100) still starting after 5 s;")
    assert "its log's last line: setting up prewarm fixture 'server'" in line
    progress.check(run.environment.replicas, start + SLOW_START_SECONDS + 1)
    assert len(lines) == 1, "not again at once"
    progress.check(run.environment.replicas, start + SLOW_START_SECONDS + REPEAT_SECONDS + 0.2)
    assert len(lines) == 2
    run.say(r0, ready(TESTS))
    progress.check(run.environment.replicas, start + 1000)
    assert len(lines) == 2, "a ready replica is not named"


def test_an_empty_log_is_said_to_be_empty(tmp_path: Path) -> None:
    run = Run(TESTS)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    r0.log_path = str(tmp_path / "missing.log")
    lines: list[str] = []
    SlowStarts(lines.append).check(run.environment.replicas, r0.started_at + 6)
    assert "nothing in its log yet" in lines[0]
