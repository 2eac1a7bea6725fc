"""Every routed test gets exactly one set of reports, from this lease: a replica whose session
ends unasked fails the tests it was running once and hands the rest back (or, for an interrupt,
stops the run); a message stamped with another lease is dropped; a replica that finishes its
session with tests still to run is no success."""

from __future__ import annotations

from typing import Any

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import EndKind, Replica
from tests.unit.fakes import phase, ready, started_run

TESTS = ["t.py::test_a", "t.py::test_b", "t.py::test_c", "t.py::test_d"]
LOCATION = ("t.py", 1, "test_a")


def stopped(replica: Replica, nodeid: str, kind: str, returncode: int | None = None) -> Any:
    return protocol.stopped_early(
        {
            "nodeids": [nodeid],
            "kind": kind,
            "returncode": returncode,
            "message": "KeyboardInterrupt" if kind == "interrupt" else "boom",
            "traceback": f"Traceback ...\n{kind} here",
            "lease": replica.lease,
        }
    )


def test_an_error_ending_the_session_fails_the_running_test_and_requeues_the_rest() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.logstart(TESTS[1], LOCATION), phase(TESTS[1], "setup"))
    run.say(r0, stopped(r0, TESTS[1], "error"))
    (failure,) = run.failed(TESTS[1])
    assert failure.when == "call"
    assert "replica r0 (pid 4242) stopped while running t.py::test_b" in str(failure.longrepr)
    assert "error here" in str(failure.longrepr)
    assert [hook for hook, n, _ in run.calls if n == TESTS[1]].count("logfinish") == 1
    assert run.dispatcher.stopped_by is None, "an error is not an interrupt: the run goes on"
    assert run.link(r0).names()[-1] == protocol.SHUTDOWN
    run.say(r0, protocol.finished(2, 3), protocol.END)
    assert r0.ending is not None
    assert (r0.ending.kind, r0.ending.reason) == (EndKind.RETIRED, "stopped early")
    assert run.environment.restarts == 1
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1) == TESTS[2:]


def test_an_interrupt_stops_the_run_and_runs_nothing_it_held() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.logstart(TESTS[0], LOCATION), phase(TESTS[0], "setup"))
    run.say(r0, stopped(r0, TESTS[0], "exit", returncode=7))
    assert len(run.failed(TESTS[0])) == 1
    assert run.dispatcher.stopped_by is not None
    payload, reason = run.dispatcher.stopped_by
    assert (payload["returncode"], reason) == (7, "boom (in replica r0)")
    # As plain pytest runs nothing after an interrupt, nothing more is sent or started.
    assert list(run.environment.queue) == []
    assert list(r0.in_flight) == []
    assert len(run.replicas) == 1


def test_a_message_of_another_lease_is_dropped() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    old = "dead-run-lease"
    report = phase(TESTS[0], "call")
    data = protocol.decode_report(report[1])
    data[protocol.REPORT_LEASE] = old
    run.say(
        r0,
        protocol.logstart(TESTS[0], LOCATION, old),
        protocol.encoded_report(protocol.encode_report(data)),
        protocol.logfinish(TESTS[0], LOCATION, old),
    )
    assert run.calls == []
    assert not run.warnings, "not a protocol error: another lease's words are not ours"
    run.run_test(r0, TESTS[0])
    assert [r.when for r in run.reports_of(TESTS[0])] == ["setup", "call", "teardown"]


def test_a_session_that_finished_with_tests_to_run_is_not_a_retirement() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.finished(1, 3), protocol.END)
    assert r0.ending is not None
    assert r0.ending.kind is EndKind.KILLED
    assert "its pytest session ended (exit code 3) with tests still to run" in r0.ending.reason
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1) == TESTS[1:]


def test_a_session_stopped_early_whose_teardown_hangs_is_killed_at_the_teardown_timeout() -> None:
    run = started_run(TESTS, teardown_timeout=5.0)
    r0 = run.replicas[0]
    run.say(r0, protocol.logstart(TESTS[0], LOCATION))
    run.say(r0, stopped(r0, TESTS[0], "error"))
    run.clock.advance(4.0)
    run.pump()
    assert not run.link(r0).killed, "within reuse_teardown_timeout"
    run.clock.advance(2.0)
    run.pump()
    assert run.link(r0).killed, "its session's teardown is bounded like a test's"
    assert r0.cause is not None
    assert "reuse_teardown_timeout" in r0.cause.reason
