"""A replica that ends without finishing its work: the test in flight gets exactly one failed
report with the reason, the tests it held are handed back, and start failures fail what
cannot run. Driven by a fake clock and fake links."""

from __future__ import annotations

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import EndKind
from pytest_reuse_env.policy import ReusePolicy
from tests.unit.fakes import Run, phase, ready

TESTS = [f"t.py::test_{i}" for i in range(5)]


def location(nodeid: str) -> tuple[str, int, str]:
    return ("t.py", 1, nodeid.partition("::")[2])


def test_a_crash_fails_the_test_in_flight_once_and_requeues_the_rest() -> None:
    run = Run(TESTS)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.run_test(r0, TESTS[0])
    held = run.sent_runs(r0)[2:]
    run.say(r0, protocol.logstart(TESTS[1], location(TESTS[1])), phase(TESTS[1], "setup"))
    run.link(r0).exit = "signal SIGSEGV (11)"
    run.say(r0, protocol.END)
    reports = run.reports_of(TESTS[1])
    assert [(r.when, r.outcome) for r in reports] == [
        ("setup", "passed"),
        ("call", "failed"),
        ("teardown", "passed"),
    ]
    message = str(reports[1].longrepr)
    assert (
        "replica r0 (pid 4242) crashed while running t.py::test_1: signal SIGSEGV (11)" in message
    )
    assert r0.ending is not None
    assert (r0.ending.kind, r0.ending.label) == (EndKind.CRASHED, "crash")
    assert run.environment.stats.retired["crash"] == 1
    assert run.environment.restarts == 1
    # Handed back, in order, and given to the replacement.
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1)[: len(held)] == held
    for nodeid in held:
        assert not run.reports_of(nodeid), f"{nodeid} was not run yet, so not reported"


def test_a_connection_lost_while_the_process_runs_is_not_called_a_crash() -> None:
    """A test closed the replica's channel (``os.closerange``): the process did not exit."""
    run = Run(TESTS[:2])
    run.environment.submit(TESTS[:2])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(r0, protocol.logstart(TESTS[0], location(TESTS[0])), phase(TESTS[0], "setup"))
    run.link(r0).exit = "still running"
    run.say(r0, protocol.END)
    message = str(run.reports_of(TESTS[0])[1].longrepr)
    assert (
        "replica r0 (pid 4242) lost its connection while running t.py::test_0: the process was"
        " still running when its connection closed; it was killed" in message
    )
    assert "crashed" not in message


def test_a_timeout_kills_the_replica_and_names_the_reason() -> None:
    run = Run(TESTS[:2], ReusePolicy(replicas=1, scope="run", timeout=2.0))
    run.environment.submit(TESTS[:2])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(r0, protocol.logstart(TESTS[0], location(TESTS[0])), phase(TESTS[0], "setup"))
    run.clock.advance(2.0)
    run.pump()
    assert not run.link(r0).killed, "not past the timeout yet"
    run.clock.advance(0.1)
    run.pump()
    assert run.link(r0).killed
    run.say(r0, protocol.END)
    (failure,) = run.failed(TESTS[0])
    assert (
        f"timed out after 2 s (the timeout of environment {run.environment.name!r}); "
        "replica killed" in str(failure.longrepr)
    )
    assert "replica r0 (pid 4242) timed out while running" in str(failure.longrepr)
    assert "crashed" not in str(failure.longrepr), "a timeout is not a crash"
    assert r0.ending is not None
    assert r0.ending.kind is EndKind.KILLED
    assert r0.ending.test == TESTS[0]
    assert run.environment.queue[0] == TESTS[1], "the next test is handed back"


def test_a_concurrent_batch_fails_each_running_test_once() -> None:
    run = Run(TESTS[:3], ReusePolicy(replicas=1, scope="run", concurrency=4, timeout=1.0))
    run.environment.submit(TESTS[:3])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(r0, *(protocol.started(n) for n in TESTS[:2]))
    assert run.environment.stats.peak_tests == 2
    run.clock.advance(1.0 + 5.0 + 0.1)  # the timeout and the grace the replica has first
    run.pump()
    assert run.link(r0).killed
    run.say(r0, protocol.END)
    for nodeid in TESTS[:2]:
        (failure,) = run.failed(nodeid)
        assert failure.when == "call"
        assert "running concurrently with" in str(failure.longrepr)
    (other,) = run.failed(TESTS[1])
    assert f"{TESTS[0]} timed out after 1 s" in str(other.longrepr), "names the overrunning test"
    assert "replica r0 (pid 4242) was killed while running" in str(other.longrepr)
    assert not run.reports_of(TESTS[2])
    assert list(run.environment.queue) == [TESTS[2]]


def test_a_hung_teardown_is_killed_after_the_teardown_timeout() -> None:
    run = Run(TESTS[:1], teardown_timeout=10.0)
    run.environment.submit(TESTS[:1])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(
        r0,
        protocol.logstart(TESTS[0], location(TESTS[0])),
        phase(TESTS[0], "setup"),
        phase(TESTS[0], "call"),
    )
    run.clock.advance(10.5)
    run.pump()
    assert run.link(r0).killed
    run.say(r0, protocol.END)
    reports = run.reports_of(TESTS[0])
    assert [(r.when, r.outcome) for r in reports] == [
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "failed"),
    ]
    assert "teardown did not finish within 10 s" in str(reports[2].longrepr)
    assert "crashed" not in str(reports[2].longrepr)


def test_a_start_failure_fails_every_queued_test_with_the_traceback() -> None:
    run = Run(TESTS[:2])
    run.environment.submit(TESTS[:2])
    r0 = run.replicas[0]
    run.link(r0).exit = "exit code 4"
    run.say(r0, protocol.start_failed(4242, "Traceback: ImportError: no module named x"))
    run.say(r0, protocol.END)
    for nodeid in TESTS[:2]:
        (failure,) = run.failed(nodeid)
        assert failure.when == "setup"
        text = str(failure.longrepr)
        assert "replica r0 (pid 100) could not start (exit code 4)" in text
        assert "ImportError: no module named x" in text
    assert run.environment.stats.start_failures == 1
    assert run.environment.stop_reason is not None
    assert len(run.replicas) == 1, "no replica was ever ready: no retry"


def test_a_replica_still_starting_after_the_start_timeout_is_killed() -> None:
    run = Run(TESTS[:1], start_timeout=60.0)
    run.environment.submit(TESTS[:1])
    r0 = run.replicas[0]
    run.clock.advance(61)
    run.pump()
    assert run.link(r0).killed
    run.say(r0, protocol.END)
    (failure,) = run.failed(TESTS[0])
    assert "did not finish starting within 60 s (reuse_start_timeout)" in str(failure.longrepr)


def test_a_crash_loop_gives_up_and_fails_what_is_left() -> None:
    run = Run(TESTS, max_restarts=0)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(r0, protocol.logstart(TESTS[0], location(TESTS[0])))
    run.say(r0, protocol.END)
    assert len(run.failed(TESTS[0])) == 1
    for nodeid in TESTS[1:]:
        (failure,) = run.failed(nodeid)
        assert "stopped after 1 replica crashes (limit reuse_max_restarts=0)" in str(
            failure.longrepr
        )
    assert len(run.replicas) == 1
    assert run.environment.done


def test_an_attached_replica_that_leaves_before_ready_is_leased_again() -> None:
    run = Run(TESTS[:1])
    run.environment.submit(TESTS[:1])
    r0 = run.replicas[0]
    r0.attached = True  # as ``Replica.attach`` leaves it
    run.say(r0, protocol.END)
    assert r0.ending is not None
    assert r0.ending.kind is EndKind.LEFT
    assert r0 not in run.environment.replicas
    assert run.environment.restarts == 0
    assert not run.calls, "nothing to report"
    assert len(run.replicas) == 2, "another replica is leased for the queued test"


def test_deadlines_leave_an_ended_replica_alone() -> None:
    run = Run(TESTS[:1], ReusePolicy(replicas=1, scope="run", timeout=5.0), teardown_timeout=10.0)
    run.environment.submit(TESTS[:1])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(
        r0,
        protocol.logstart(TESTS[0], location(TESTS[0])),
        phase(TESTS[0], "setup"),
        phase(TESTS[0], "call"),
    )
    run.say(r0, protocol.END)
    run.clock.advance(60)
    run.pump()
    assert not run.link(r0).killed, "its teardown and its test ended with it"
    assert r0.ending is not None
    assert r0.ending.kind is EndKind.CRASHED
