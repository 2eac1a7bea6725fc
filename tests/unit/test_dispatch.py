"""The controller's dispatch table: every message a replica may send has a handler named after
the event, reports are replayed in order, and an unknown or out-of-turn message is a protocol
error that fails the test in flight once, with the reason, and hands the rest back."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import EndKind, Replica, ReplicaState
from pytest_reuse_env.policy import ReusePolicy
from tests.unit.fakes import Run, phase, ready, started_run

TESTS = ["t.py::test_a", "t.py::test_b", "t.py::test_c"]
LOCATION = ("t.py", 1, "test_a")


def test_every_replica_message_has_a_handler() -> None:
    run = Run(TESTS)
    assert set(run.dispatcher.table) == protocol.REPLICA_MESSAGES | {protocol.CHANNEL_CLOSED}


def test_a_test_is_replayed_through_pytest_hooks_in_order() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.run_test(r0, TESTS[0])
    assert [(hook, n) for hook, n, _ in run.calls] == [
        ("logstart", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logfinish", TESTS[0]),
    ]
    assert [r.when for r in run.reports_of(TESTS[0])] == ["setup", "call", "teardown"]
    assert run.reports_of(TESTS[0])[0].node.id == "r0 cold"
    assert TESTS[0] in run.reports.completed
    assert r0.tests_run == 1
    assert r0.setup_seconds == 2.25, "a cold replica's first setup phase is part of its setup"
    run.run_test(r0, TESTS[1], warm=True)
    assert run.reports_of(TESTS[1])[0].node.id == "r0 warm"
    assert (run.environment.stats.tests_cold, run.environment.stats.tests_warm) == (1, 1)


def test_warnings_and_teardown_errors_reach_the_warnings_summary() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(
        r0,
        protocol.warning(
            message="careful",
            category_module="builtins",
            category_name="DeprecationWarning",
            filename="t.py",
            lineno=3,
            nodeid=TESTS[0],
            location=LOCATION,
        ),
        protocol.teardown_error(4242, "Traceback: finalizer failed"),
    )
    warning, teardown = run.warnings
    assert warning["warning_message"].category is DeprecationWarning
    assert warning["nodeid"] == TESTS[0]
    assert "fixture teardown failed in replica r0" in str(teardown["warning_message"].message)


def teardown_error_after_first_test(*, xdist_worker: bool) -> tuple[Run, Replica]:
    """A run whose replica ran TESTS[0], then said a finalizer failed (between tests)."""
    run = started_run(TESTS)
    run.reports.current_test_only = xdist_worker
    r0 = run.replicas[0]
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.teardown_error(4242, "Traceback: finalizer failed"))
    return run, r0


def test_a_teardown_error_between_tests_is_an_error_of_the_test_it_ran_after() -> None:
    # Plain pytest tears a module down in its last test's teardown and reports the error
    # there; a replica that did not know the next test tears it down between tests.
    run, r0 = teardown_error_after_first_test(xdist_worker=False)
    run.run_test(r0, TESTS[1], warm=True)
    (error,) = run.failed(TESTS[0])
    assert error.when == "teardown"
    assert "Traceback: finalizer failed" in str(error.longrepr)
    assert f"after {TESTS[0]}" in str(error.longrepr)
    assert run.failed(TESTS[1]) == []
    assert run.warnings == []


def test_in_an_xdist_worker_a_teardown_error_between_tests_goes_with_the_next_teardown() -> None:
    # xdist's worker takes reports of the test it runs only: the error is the next test's.
    run, r0 = teardown_error_after_first_test(xdist_worker=True)
    assert run.failed(TESTS[0]) == []
    run.run_test(r0, TESTS[1], warm=True)
    (error,) = run.failed(TESTS[1])
    assert (error.when, error.nodeid) == ("teardown", TESTS[1])
    assert f"after {TESTS[0]}" in str(error.longrepr)
    assert "Traceback: finalizer failed" in str(error.longrepr)
    run.run_test(r0, TESTS[2], warm=True)
    assert run.failed(TESTS[2]) == [], "carried once"
    assert run.warnings == []


def pending_error_of_r0_with_r1_ready() -> tuple[Run, Replica]:
    """An xdist worker's two replicas: r0 ran TESTS[0], then said a finalizer failed (its
    error waits for r0's next teardown); r1 is ready."""
    run = Run(TESTS, ReusePolicy(replicas=2, scope="run"))
    run.reports.current_test_only = True
    run.environment.submit(TESTS[:2])
    r0, r1 = run.replicas
    run.say(r0, ready(TESTS))
    run.say(r1, ready(TESTS))
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.teardown_error(4242, "Traceback: finalizer failed"))
    return run, r1


def test_the_sessions_last_test_carries_every_replicas_pending_teardown_error() -> None:
    # An xdist worker's last test (ReuseController._before_last_test): another replica's
    # module went down before it, and no later test of that replica would carry the error.
    run, r1 = pending_error_of_r0_with_r1_ready()
    run.reports.last_test = TESTS[1]
    run.run_test(r1, TESTS[1], warm=True)
    (error,) = run.failed(TESTS[1])
    assert (error.when, error.nodeid) == ("teardown", TESTS[1])
    assert f"replica r0 after {TESTS[0]}" in str(error.longrepr)
    run.reports.warn_pending()
    assert run.warnings == [], "carried, nothing left to warn of"


def test_the_sessions_last_test_run_here_carries_the_replicas_pending_teardown_errors() -> None:
    # Its teardown report is made here (LastLocalTeardown): it takes them as a replica's would.
    run, _ = teardown_error_after_first_test(xdist_worker=True)
    local = pytest.TestReport(
        "t.py::test_local", ("t.py", 1, "test_local"), {}, "passed", None, "teardown", []
    )
    run.reports.carry_into_local(local)
    assert local.passed, "not the session's last test"
    run.reports.last_test = "t.py::test_local"
    run.reports.carry_into_local(local)
    assert local.failed
    assert f"replica r0 after {TESTS[0]}" in str(local.longrepr)
    assert not run.reports.pending_teardown_errors


def test_a_pending_teardown_error_of_another_replica_waits_for_its_own_next_test() -> None:
    run, r1 = pending_error_of_r0_with_r1_ready()
    run.run_test(r1, TESTS[1], warm=True)  # not the session's last test
    assert run.failed(TESTS[1]) == []


def test_the_last_test_fed_one_at_a_time_is_its_replicas_last() -> None:
    # Told to finish once the queue is empty, the replica runs it with no next item: it
    # tears everything down in that test's teardown, as plain pytest does.
    run = Run(TESTS, closing=False)
    run.environment.one_at_a_time()
    run.environment.submit([TESTS[0]])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.run_test(r0, TESTS[0])
    assert protocol.SHUTDOWN not in [name for name, _ in run.link(r0).sent]
    run.environment.last_test()
    run.environment.submit([TESTS[1]])
    assert [name for name, _ in run.link(r0).sent][-2:] == [protocol.RUN, protocol.SHUTDOWN]


def test_one_at_a_time_a_test_goes_with_the_sessions_next_one() -> None:
    # pytest's next item (here or elsewhere), before the RUN it is about: the replica may
    # start that test as soon as it reads the RUN. Its teardown then leaves only what the
    # next test shares, as in plain pytest, and an error there is that test's.
    run = Run(TESTS, closing=False)
    run.environment.one_at_a_time()
    run.environment.submit([TESTS[0]], then="t.py::test_elsewhere")
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    work = [m for m in run.link(r0).sent if m[0] in (protocol.NEXT, protocol.RUN)]
    assert work == [protocol.next_test("t.py::test_elsewhere"), protocol.run([TESTS[0]])]
    run.run_test(r0, TESTS[0])
    run.environment.submit([TESTS[1]])  # nothing after it known: no NEXT
    work = [m for m in run.link(r0).sent if m[0] in (protocol.NEXT, protocol.RUN)]
    assert work[2:] == [protocol.run([TESTS[1]])]


def test_a_persistent_replica_keeps_its_state_after_the_last_test() -> None:
    run = Run(TESTS, closing=False)
    run.environment.key = "g-1"  # scope="global": the warm state stays
    run.environment.one_at_a_time()
    run.environment.submit([TESTS[0]])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.environment.last_test()
    run.run_test(r0, TESTS[0])
    assert protocol.SHUTDOWN not in [name for name, _ in run.link(r0).sent]


def test_a_teardown_error_no_later_test_carries_is_a_warning_at_the_end() -> None:
    run, _ = teardown_error_after_first_test(xdist_worker=True)
    run.reports.warn_pending()
    (warning,) = run.warnings
    assert "fixture teardown failed in replica r0" in str(warning["warning_message"].message)
    assert run.reports.teardown_errors, "the run exits 1"


def test_an_unknown_message_fails_the_test_in_flight_once_and_hands_the_rest_back() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.logstart(TESTS[0], LOCATION), phase(TESTS[0], "setup"))
    run.say(r0, ("bogus", {"x": 1}))
    (warning,) = run.warnings
    text = str(warning["warning_message"].message)
    assert "replica r0 (pid 4242) sent a message this controller does not know: 'bogus'" in text
    assert run.link(r0).killed, "never dropped silently: the replica is stopped"
    run.say(r0, protocol.END)
    (failure,) = run.failed(TESTS[0])
    assert failure.when == "call"
    assert "does not know: 'bogus'" in str(failure.longrepr)
    assert [hook for hook, n, _ in run.calls if n == TESTS[0]].count("logfinish") == 1
    assert r0.ending is not None
    assert r0.ending.kind is EndKind.KILLED
    # The tests it held and had not started run on a new replica.
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1) == TESTS[1:]
    assert not run.failed(TESTS[1])


def test_a_message_out_of_turn_is_a_protocol_error() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.logfinish(TESTS[1], LOCATION))
    assert "finished t.py::test_b, which it never started" in str(
        run.warnings[0]["warning_message"].message
    )
    assert run.link(r0).killed
    assert TESTS[1] not in run.reports.completed, "nothing replayed for it"


def test_a_protocol_error_before_ready_is_a_start_failure() -> None:
    run = Run(TESTS)
    run.environment.submit(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.logstart(TESTS[0], LOCATION))
    assert r0.cause is not None
    assert r0.cause.kind is EndKind.START_FAILED
    run.say(r0, protocol.END)
    for nodeid in TESTS:
        (failure,) = run.failed(nodeid)
        assert "started t.py::test_a while starting" in str(failure.longrepr)


def test_messages_of_an_ended_replica_are_its_last_words() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.END)
    assert r0.state is ReplicaState.ENDED
    calls = list(run.calls)
    run.say(r0, phase(TESTS[0], "call"), ("bogus", None))
    assert run.calls == calls
    assert not run.warnings


def test_during_shutdown_a_closed_link_is_a_retirement() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.environment.shutdown()
    run.dispatcher.closing = True
    run.say(r0, protocol.END)
    assert r0.ending is not None
    assert (r0.ending.kind, r0.ending.reason) == (EndKind.RETIRED, "end of run")
    assert run.link(r0).terminated


def test_a_run_scoped_replica_that_served_everything_ends_without_waiting_for_its_exit() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    for nodeid in TESTS:
        run.run_test(r0, nodeid)
    run.environment.shutdown()
    assert not r0.only_exiting, "asked to stop, but its session's fixtures are not torn down"
    run.say(r0, protocol.workeroutput({"cov": 1}))  # after its teardown: its last word
    assert r0.only_exiting
    assert run.environment.let_served_exit() == [r0]
    assert r0.ending is not None
    assert (r0.ending.kind, r0.ending.reason) == (EndKind.RETIRED, "end of run")
    assert run.link(r0).let_go, "asked to exit once its session ends"
    assert not run.link(r0).terminated, "reaped at the very end, not waited for now"
    run.dispatcher.closing = True
    run.say(r0, protocol.finished(3, 0), protocol.END)  # its exit, while the run reports
    assert not run.link(r0).terminated
    assert run.environment.stats.retired["end of run"] == 1


def test_a_replica_still_holding_tests_is_not_let_go() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.run_test(r0, TESTS[0])
    run.say(r0, protocol.workeroutput({}))  # out of turn: tests are still in flight
    assert r0.in_flight
    assert not r0.only_exiting
    assert run.environment.let_served_exit() == []
    assert r0.state is not ReplicaState.ENDED


def quiet_pass(nodeid: str, lease: str = "") -> str:
    """A TEST payload of a test that passed quietly, as a replica holds it back."""
    events = [[protocol.PASSED, when, 0.001, 1.0, 1.001] for when in ("setup", "call", "teardown")]
    text: str = protocol.test_done(nodeid, lease, False, events, LOCATION)[1]
    return text


def test_a_test_collected_again_is_reported_with_its_new_keywords() -> None:
    # Watch mode: an edit added a marker; the next round's reports carry it.
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.tests(protocol.held_line(1.0, quiet_pass(TESTS[0]))))
    assert all("slow" not in r.keywords for r in run.reports_of(TESTS[0]))
    item = run.reports.items[TESTS[0]]
    item.keywords = {**item.keywords, "slow": 1}  # the item of the next collection
    run.reports.collected_again()
    run.calls.clear()
    run.say(r0, protocol.tests(protocol.held_line(2.0, quiet_pass(TESTS[1]))))
    r0.in_flight.appendleft(TESTS[0])
    run.say(r0, protocol.tests(protocol.held_line(3.0, quiet_pass(TESTS[0]))))
    assert [("slow" in r.keywords) for r in run.reports_of(TESTS[0])] == [True] * 3


def test_held_passes_are_each_timed_by_when_they_ended() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    now = run.clock.monotonic()
    run.say(
        r0,
        protocol.tests(
            protocol.held_line(now - 0.3, quiet_pass(TESTS[0]))
            + protocol.held_line(now - 0.1, quiet_pass(TESTS[1]))
        ),
    )
    assert [r.outcome for n in TESTS[:2] for r in run.reports_of(n)] == ["passed"] * 6
    assert r0.tests_run == 2
    # The test it runs now began when the last held one ended, not when they arrived.
    assert r0.head_since == now - 0.1


def test_a_dead_replicas_held_passes_are_reported_and_its_own_test_blamed(tmp_path: Path) -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    path = tmp_path / "replica-r0.log.held"
    path.write_text(f"1.0 {quiet_pass(TESTS[0])}\n1.1 {quiet_pass(TESTS[1])[:20]}")
    r0.held_path = str(path)
    r0.open_held()
    path.unlink()  # a test removed the run's directory: the open file still reads
    run.say(r0, protocol.END)
    assert [r.outcome for r in run.reports_of(TESTS[0])] == ["passed"] * 3
    (failure,) = run.failed(TESTS[1])
    assert f"crashed while running {TESTS[1]}" in str(failure.longrepr)
    assert not run.reports_of(TESTS[2]), "not started: it runs on the next replica"
    run.say(run.replicas[1], ready(TESTS))
    assert run.sent_runs(run.replicas[1]) == [TESTS[2]]
    assert r0.held_file is None, "closed once it ended"


def test_held_passes_of_an_earlier_client_are_not_this_runs(tmp_path: Path) -> None:
    # A persistent replica keeps its held file across clients: a line an earlier client's run
    # left there (or a TESTS it sends late) names a test of this run; it did not run now.
    run = started_run(TESTS)
    r0 = run.replicas[0]
    earlier = "1-earlier-client"
    run.say(r0, protocol.tests(protocol.held_line(1.0, quiet_pass(TESTS[0], earlier))))
    run.say(r0, (protocol.TEST, quiet_pass(TESTS[0], earlier)))
    assert not run.reports_of(TESTS[0])
    assert r0.state is not ReplicaState.ENDED, "not a protocol error: just not ours"
    path = tmp_path / "replica-r0.log.held"
    path.write_text(f"1.0 {quiet_pass(TESTS[0], earlier)}\n1.1 {quiet_pass(TESTS[1], r0.lease)}\n")
    r0.held_path = str(path)
    r0.open_held()
    run.say(r0, protocol.END)
    (failure,) = run.failed(TESTS[0])
    assert f"crashed while running {TESTS[0]}" in str(failure.longrepr)
    assert not [r for r in run.reports_of(TESTS[0]) if r.passed and r.when == "call"]
    assert [r.outcome for r in run.reports_of(TESTS[1])] == ["passed"] * 3


def test_a_pass_held_back_that_ended_before_a_cancel_is_reported_the_others_not() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    cancelled_at = run.clock.monotonic()
    run.environment.cancel()  # another replica's KeyboardInterrupt, -x
    run.clock.advance(1.0)
    run.say(
        r0,
        protocol.tests(
            protocol.held_line(cancelled_at - 0.01, quiet_pass(TESTS[0]))
            + protocol.held_line(cancelled_at + 0.5, quiet_pass(TESTS[1]))
        ),
    )
    assert [r.outcome for r in run.reports_of(TESTS[0])] == ["passed"] * 3, "it ran before"
    assert not run.reports_of(TESTS[1]), "it began after the cancel: not shown, as before"
    assert not run.warnings, "no protocol error"
