"""An environment feeds its replicas from its queue, scales by its (fake) clock and hands work
back; the real Environment and Replica, with fake links."""

from __future__ import annotations

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import Ending, EndKind, Replica, ReplicaState
from pytest_reuse_env.policy import ReusePolicy
from tests.unit.fakes import Run, ready

TESTS = [f"t.py::test_{i}" for i in range(8)]


def test_backlog_starts_replicas_and_each_is_fed_its_depth_once_ready() -> None:
    run = Run(TESTS, ReusePolicy(replicas=(0, 2), scope="run"))
    run.environment.submit(TESTS)
    r0, r1 = run.replicas
    assert [run.link(r).names() for r in (r0, r1)] == [[protocol.START]] * 2, "no work before READY"
    run.say(r0, ready(TESTS))
    # Depth: the test it runs, the next one, and one more (concurrency 1).
    assert run.sent_runs(r0) == TESTS[:3]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1) == TESTS[3:6]
    run.clock.advance(5)  # a slow test: the replica stays shallow, the tail balanced
    run.run_test(r0, TESTS[0])
    assert run.sent_runs(r0) == [*TESTS[:3], TESTS[6]], "refilled after a test finishes"
    assert list(run.environment.queue) == TESTS[7:]


def test_quick_tests_deepen_the_pipeline_and_are_sent_in_guided_batches() -> None:
    tests = [f"t.py::test_{i}" for i in range(200)]
    run = Run(tests, ReusePolicy(replicas=1, scope="run"))
    run.environment.submit(tests)
    (r0,) = run.replicas
    run.say(r0, ready(tests))
    assert run.sent_runs(r0) == tests[:3], "no figure yet: the base depth"
    runs_before = run.link(r0).names().count(protocol.RUN)
    run.clock.advance(0.001)  # a millisecond a test: a depth of 20 (PIPELINE_SECONDS)
    run.run_test(r0, tests[0])
    # One RUN for half the queue (GUIDED_SHARES per replica), not one a test.
    assert len(r0.in_flight) == 2 + 99, len(r0.in_flight)
    assert run.link(r0).names().count(protocol.RUN) - runs_before == 1
    while len(r0.in_flight) > 16:
        run.clock.advance(0.001)
        run.run_test(r0, r0.in_flight[0])
    assert run.link(r0).names().count(protocol.RUN) - runs_before == 1, (
        "not refilled before the depth's last quarter"
    )
    run.clock.advance(0.001)
    run.run_test(r0, r0.in_flight[0])
    assert len(r0.in_flight) == 15 + 49, "half of what is left"
    while r0.in_flight:
        run.clock.advance(0.001)
        run.run_test(r0, r0.in_flight[0])
    assert run.environment.done
    assert run.sent_runs(r0) == tests, "every test once, in order"
    assert run.link(r0).names().count(protocol.RUN) <= 8


def test_a_guided_batch_is_at_most_batch_seconds_and_a_share_per_possible_replica() -> None:
    tests = [f"t.py::test_{i}" for i in range(2000)]
    run = Run(tests, ReusePolicy(replicas=(1, 2), scope="run"))
    run.environment.submit(tests)
    r0 = run.replicas[0]
    run.say(r0, ready(tests))
    run.clock.advance(0.01)  # 10 ms a test: BATCH_SECONDS (0.25 s) is 25 of them
    run.run_test(r0, tests[0])
    assert len(r0.in_flight) == 2 + 25
    run2 = Run(tests, ReusePolicy(replicas=(1, 2), scope="run"))
    run2.environment.submit(tests)
    r0 = run2.replicas[0]
    run2.say(r0, ready(tests))
    run2.clock.advance(0.0001)
    run2.run_test(r0, tests[0])
    # A quarter of the queue (1997): two shares for each of the two replicas it may have.
    assert len(r0.in_flight) == 2 + 500
    assert len(run2.environment.queue) == 1997 - 500, "the rest waits for the second replica"


def test_slow_tests_get_no_guided_batch() -> None:
    run = Run(TESTS, ReusePolicy(replicas=1, scope="run"))
    run.environment.submit(TESTS)
    (r0,) = run.replicas
    run.say(r0, ready(TESTS))
    run.clock.advance(1.0)
    run.run_test(r0, TESTS[0])
    assert list(r0.in_flight) == TESTS[1:4], "the base depth: a second a test"


def two_replicas_one_dry(tests: list[str], *, closing: bool = True) -> tuple[Run, Replica, Replica]:
    """Two ready replicas of quick-ish tests (5 ms): the queue is empty and r1 has nothing
    left to start (it waits at its last test), while r0 still holds most of its batch."""
    run = Run(tests, ReusePolicy(replicas=2, scope="run"), closing=closing)
    run.environment.submit(tests)
    r0, r1 = run.replicas
    run.say(r0, ready(tests))
    run.clock.advance(0.005)
    run.run_test(r0, run.sent_runs(r0)[0])  # r0's mean is known: a guided batch
    run.say(r1, ready(tests))
    while run.environment.queue or r1.unstarted:
        run.clock.advance(0.005)
        run.run_test(r1, r1.in_flight[0])
    return run, r0, r1


def test_a_replica_that_runs_dry_steals_half_of_what_another_holds_unstarted() -> None:
    tests = [f"t.py::test_{i}" for i in range(120)]
    run, r0, r1 = two_replicas_one_dry(tests)
    held = list(r0.in_flight)
    assert len(held) > 20, held
    steals = [payload for name, payload in run.link(r0).sent if name == protocol.STEAL]
    assert steals == [(len(held) - 1) // 2], "half of all but the one it may be running"
    assert r0.steal_asked
    for replica in (r0, r1):
        assert replica.accepting, "no replica is told to finish while tests may move"
        assert protocol.SHUTDOWN not in run.link(replica).names()
    # r0 runs one more, then reads STEAL and hands back its last ones.
    run.clock.advance(0.005)
    run.run_test(r0, held[0])
    tail = held[len(held) - steals[0] :]
    sent_before = len(run.sent_runs(r1))
    run.say(r0, protocol.returned(tail))
    assert not r0.steal_asked
    assert run.environment.stats.tests_stolen == len(tail)
    assert list(r0.in_flight) == held[1 : len(held) - steals[0]]
    given = run.sent_runs(r1)[sent_before:]
    assert given, "the stolen tests go to the dry replica"
    assert given == tail[: len(given)]
    assert list(run.environment.queue) == tail[len(given) :]
    for replica in (r0, r1):
        while replica.in_flight:
            if len(replica.in_flight) == 1:  # a last test starts once told to finish
                assert run.link(replica).names()[-1] == protocol.SHUTDOWN
            run.clock.advance(0.005)
            run.run_test(replica, replica.in_flight[0])
    assert run.environment.done
    ran = sorted([*r0.ran, *r1.ran])
    assert ran == sorted(tests), "every test ran exactly once"


def test_a_steal_answered_with_nothing_lets_the_dry_replica_retire() -> None:
    tests = [f"t.py::test_{i}" for i in range(120)]
    run, r0, r1 = two_replicas_one_dry(tests)
    while r0.unstarted > 2:  # it ran most of them before STEAL came
        run.clock.advance(0.005)
        run.run_test(r0, r0.in_flight[0])
    run.say(r0, protocol.returned([]))
    assert len(r0.in_flight) == 3
    assert r1.state is ReplicaState.STOPPING, "nothing came back, nothing worth taking: finish"
    assert r0.state is ReplicaState.STOPPING


def test_returned_tests_it_no_longer_holds_are_not_run_twice() -> None:
    tests = [f"t.py::test_{i}" for i in range(120)]
    run, r0, r1 = two_replicas_one_dry(tests)
    held = list(r0.in_flight)
    for nodeid in held[:3]:
        run.clock.advance(0.005)
        run.run_test(r0, nodeid)
    # Finished ones, and one that is not its own, are not requeued.
    run.say(r0, protocol.returned([held[1], held[-1], "t.py::elsewhere"]))
    assert list(run.environment.queue) == []
    assert run.sent_runs(r1)[-1] == held[-1]
    assert held[1] not in run.sent_runs(r1)


def test_a_replica_waiting_for_stolen_work_is_not_timed_out_for_the_wait() -> None:
    tests = [f"t.py::test_{i}" for i in range(120)]
    run = Run(tests, ReusePolicy(replicas=2, scope="run", timeout=5))
    run.environment.submit(tests)
    r0, r1 = run.replicas
    run.say(r0, ready(tests))
    run.clock.advance(0.005)
    run.run_test(r0, run.sent_runs(r0)[0])
    run.say(r1, ready(tests))
    while run.environment.queue or r1.unstarted:
        run.clock.advance(0.005)
        run.run_test(r1, r1.in_flight[0])
    assert r0.steal_asked, "r1 waits at its last test for what r0 hands back"
    # r0 is in a 4 s test (under the 5 s timeout) and reads STEAL only after it.
    long_test = r0.in_flight[0]
    run.say(r0, protocol.logstart(long_test, ("t.py", 1, "")))
    for _ in range(4):
        run.clock.advance(1.0)
        run.pump()
    run.run_test(r0, long_test)
    held = list(r0.in_flight)
    run.say(r0, protocol.returned(held[-4:]))
    # r1's test, which waited 4 s without starting, now runs 2 s (unannounced).
    for _ in range(4):
        run.clock.advance(0.5)
        run.pump()
    assert r1.cause is None, r1.cause
    assert r0.cause is None, r0.cause


def test_short_unstarted_work_is_not_stolen() -> None:
    tests = [f"t.py::test_{i}" for i in range(8)]
    run = Run(tests, ReusePolicy(replicas=2, scope="run"))
    run.environment.submit(tests)
    r0, r1 = run.replicas
    run.say(r0, ready(tests))
    run.say(r1, ready(tests))
    run.clock.advance(0.0001)  # 0.1 ms a test: what r0 holds is worth less than STEAL_SECONDS
    run.run_test(r0, run.sent_runs(r0)[0])
    run.run_test(r1, run.sent_runs(r1)[0])
    while r1.unstarted:
        run.clock.advance(0.0001)
        run.run_test(r1, r1.in_flight[0])
    assert r0.unstarted >= 2
    assert protocol.STEAL not in run.link(r0).names()
    assert protocol.SHUTDOWN in run.link(r1).names(), "nothing worth moving: told to finish"


def test_an_empty_queue_retires_replicas_at_the_end_of_a_run() -> None:
    run = Run(TESTS[:2])
    run.environment.submit(TESTS[:2])
    (r0,) = run.replicas
    run.say(r0, ready(TESTS[:2]))
    assert run.sent_runs(r0) == TESTS[:2]
    assert run.link(r0).names()[-1] == protocol.SHUTDOWN, "all work known: the last test tears down"
    run.run_test(r0, TESTS[0])
    run.run_test(r0, TESTS[1], warm=True)
    run.say(r0, protocol.finished(2), protocol.END)
    assert r0.ending == Ending(EndKind.RETIRED, "end of run")
    assert run.environment.done
    stats = run.environment.stats
    assert (stats.tests_cold, stats.tests_warm, dict(stats.retired)) == (1, 1, {"end of run": 1})


def two_replicas_served(*, watching: bool = False) -> tuple[Run, Replica, Replica]:
    """replicas=(1, 2), scaledown_ttl 30 s, idle_ttl 60 s: both ready, all tests run."""
    policy = ReusePolicy(replicas=(1, 2), scope="run", scaledown_ttl=30, idle_ttl=60)
    run = Run(TESTS[:4], policy, closing=False, watching=watching)
    run.environment.submit(TESTS[:4])
    r0, r1 = run.replicas
    run.say(r0, ready(TESTS))
    run.say(r1, ready(TESTS))
    for replica in (r0, r1):
        for nodeid in run.sent_runs(replica):
            run.run_test(replica, nodeid)
    assert run.environment.done
    return run, r0, r1


def test_scaledown_and_idle_ttl_follow_the_injected_clock() -> None:
    run, r0, r1 = two_replicas_served()
    run.clock.advance(29)
    run.pump()
    assert all(r.state is ReplicaState.READY for r in (r0, r1)), "not yet: 29 s idle"
    run.clock.advance(2)
    run.pump()
    assert r1.cause == Ending(EndKind.RETIRED, "scaledown"), "the newest idle replica goes"
    assert r0.state is ReplicaState.READY
    run.clock.advance(30)
    run.pump()
    assert r0.cause == Ending(EndKind.RETIRED, "idle"), "idle_ttl: everything goes"


def test_watch_mode_replicas_never_idle_out_between_rounds() -> None:
    run, r0, r1 = two_replicas_served(watching=True)
    run.clock.advance(31)
    run.pump()
    assert r1.cause == Ending(EndKind.RETIRED, "scaledown"), "above the minimum: scaledown"
    run.clock.advance(24 * 3600)  # a day between two saves: far past idle_ttl
    run.pump()
    assert r0.state is ReplicaState.READY, "leased to the watch session: never idles out"
    run.environment.begin_round()
    assert run.link(r0).names()[-1] == protocol.ATTACH, "the next round: it catches up"
    run.environment.submit(TESTS[:1])
    run.say(r0, ready(TESTS))
    assert run.sent_runs(r0)[-1] == TESTS[0], "the next round runs on the warm replica"
    assert len(run.replicas) == 2, "nothing started anew"


def test_recycle_puts_what_the_replica_held_first_in_line() -> None:
    run = Run(TESTS, ReusePolicy(replicas=1, scope="run"))
    run.environment.submit(TESTS)
    (r0,) = run.replicas
    run.say(r0, ready(TESTS))
    run.run_test(r0, TESTS[0])
    held = run.sent_runs(r0)[1:]
    recycle: protocol.RecyclePayload = {
        "kind": "max tests",
        "detail": "max tests per replica (1) reached",
        "nodeid": TESTS[0],
        "returned": held,
    }
    run.say(r0, protocol.recycle(recycle))
    assert list(run.environment.queue)[: len(held)] == held
    assert r0.state is ReplicaState.STOPPING
    assert not r0.in_flight
    assert any("recycling replica r0" in line for line in run.said)
    run.say(r0, protocol.returned(held), protocol.finished(1), protocol.END)
    assert r0.ending == Ending(EndKind.RETIRED, "recycle (max tests)")
    (_, r1) = run.replicas
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1)[:3] == held[:3], "the held tests run next, in order"


def test_a_test_the_replica_did_not_collect_fails_as_not_run() -> None:
    run = Run(TESTS[:2])
    run.environment.submit(TESTS[:2])
    (r0,) = run.replicas
    run.say(r0, ready(TESTS[:1]))
    (failure,) = run.failed(TESTS[1])
    assert failure.when == "setup"
    assert "did not collect t.py::test_1" in str(failure.longrepr)
    assert run.sent_runs(r0) == TESTS[:1]


def test_a_policy_asking_for_more_replicas_than_the_limit_starts_only_the_limit() -> None:
    tests = [f"t.py::test_{i}" for i in range(40)]
    run = Run(tests, ReusePolicy(replicas=(1, 1000), scope="run"), replica_limit=2)
    run.environment.submit(tests)
    assert len(run.replicas) == 2, "40 tests queued, 1000 allowed by the policy, 2 by the limit"
    assert run.environment.clamped_from == 1000
    assert run.environment.limits.max_replicas == 2
    for replica in run.replicas:
        run.say(replica, ready(tests))
    run.clock.advance(60)
    run.pump()
    assert len(run.replicas) == 2, "the backlog never starts more"


def test_a_limit_above_the_policy_changes_nothing() -> None:
    run = Run(TESTS, ReusePolicy(replicas=(0, 2), scope="run"), replica_limit=8)
    run.environment.submit(TESTS)
    assert len(run.replicas) == 2
    assert run.environment.clamped_from is None


def test_a_persistent_minimum_above_the_limit_is_clamped_too() -> None:
    policy = ReusePolicy(replicas=(6, 9), scope="run")
    run = Run(TESTS, policy, closing=False, replica_limit=3)
    assert (run.environment.limits.min_replicas, run.environment.limits.max_replicas) == (3, 3)
    assert run.environment.clamped_from == 9


def test_an_environment_made_while_collecting_goes_one_at_a_time_once_that_is_known() -> None:
    # Started early (2 replicas) for a run that turns out to need -x's one test at a time.
    run = Run(TESTS, ReusePolicy(replicas=2, scope="run"))
    run.environment.warm_up(2)
    r0, r1 = run.replicas
    run.environment.one_at_a_time()
    assert (run.environment.limits.min_replicas, run.environment.limits.max_replicas) == (1, 1)
    assert r1.state is ReplicaState.STOPPING, "the second one has nothing to do: retired"
    run.say(r0, ready(TESTS))
    run.environment.submit([TESTS[0]])
    run.run_test(r0, TESTS[0])
    run.pump()
    assert r0.state is ReplicaState.READY, "the queue ran dry, but the next test comes: kept"
    run.environment.submit([TESTS[1]])
    assert run.sent_runs(r0) == TESTS[:2]
    assert len(run.replicas) == 2, "no replica started for the second test"


def test_stop_asks_run_scoped_replicas_to_finish_and_starts_none_for_the_minimum() -> None:
    # One test at a time: the queue ran dry, the replica was kept for a next test that never
    # comes. Stopping the environment is what tells it the run is done.
    run = Run(TESTS, ReusePolicy(replicas=2, scope="run"))
    run.environment.one_at_a_time()
    run.environment.warm_up(1)
    (r0,) = run.replicas
    run.say(r0, ready(TESTS))
    run.environment.submit([TESTS[0]])
    run.run_test(r0, TESTS[0])
    assert r0.accepting, "kept for a next test"
    run.environment.stop()
    assert r0.state is ReplicaState.STOPPING
    assert run.link(r0).names()[-1] == protocol.SHUTDOWN
    run.pump()
    assert len(run.replicas) == 1, "a stopped environment starts nothing for its minimum"
    assert run.environment.shutdown() == [], "nothing persistent to release"
