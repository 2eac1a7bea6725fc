"""One message a quick test: TEST carries a test's reports (compact when it passed quietly) and
warnings; the controller replays them as if they had come one by one, drops what a replica says
of tests ``-x`` cancelled, and blames the right test when a replica dies mid-test unannounced."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.replica.outbox import TestOutbox
from tests.unit.fakes import Run, phase, ready, started_run

TESTS = ["t.py::test_a", "t.py::test_b", "t.py::test_c"]
LOCATION = ("t.py", 1, "test_a")


def compact(when: str) -> list[Any]:
    return [protocol.PASSED, when, 0.25, 100.0, 100.25]


def test_a_whole_test_in_one_message_is_replayed_in_order() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    warning = protocol.warning(
        message="careful",
        category_module="builtins",
        category_name="UserWarning",
        filename="t.py",
        lineno=3,
        nodeid=TESTS[0],
        location=LOCATION,
    )[1]
    failed_call = [protocol.FULL_REPORT, phase(TESTS[0], "call", "failed")[1]]
    events = [compact("setup"), failed_call, compact("teardown"), [protocol.WARNING, warning]]
    run.say(r0, protocol.test_done(TESTS[0], r0.lease, False, events))
    assert [(hook, n) for hook, n, _ in run.calls] == [
        ("logstart", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logreport", TESTS[0]),
        ("logfinish", TESTS[0]),
    ]
    assert [r.outcome for r in run.reports_of(TESTS[0])] == ["passed", "failed", "passed"]
    assert run.warnings[0]["nodeid"] == TESTS[0]
    assert run.warnings[0]["location"] == LOCATION, "a tuple again, as pytest gives it"
    assert TESTS[0] in run.reports.completed
    assert TESTS[0] not in r0.in_flight
    assert not run.warnings[1:], "no protocol error"


def test_a_compact_report_is_the_report_pytest_would_have_rebuilt() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.test_done(TESTS[0], r0.lease, True, [compact("call")]))
    (expanded,) = run.reports_of(TESTS[0])
    full = pytest.TestReport(
        nodeid=TESTS[0],
        location=("t.py", 1, "test_a"),
        keywords={"test_a": 1},
        outcome="passed",
        longrepr=None,
        when="call",
        sections=[],
        duration=0.25,
        start=100.0,
        stop=100.25,
        user_properties=[],
    )
    data = full._to_json()
    data.update(
        {protocol.REPORT_REPLICA: "r0", protocol.REPORT_WARM: True, protocol.REPORT_LEASE: r0.lease}
    )
    rebuilt = pytest.TestReport._from_json(protocol.decode_report(protocol.encode_report(data)))
    mine = {k: v for k, v in vars(expanded).items() if k not in ("node", "reuse_environment")}
    theirs = vars(rebuilt)
    assert mine == theirs
    assert expanded.node.id == "r0 warm"


def test_what_a_replica_says_of_a_cancelled_test_is_dropped() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    failed = [protocol.FULL_REPORT, phase(TESTS[0], "call", "failed")[1]]
    run.say(r0, protocol.test_done(TESTS[0], r0.lease, False, [failed]))
    dropped = run.environment.cancel()  # -x: the controller saw the failure
    assert dropped == TESTS[1:]
    # The replica had started the next test before CANCEL arrived.
    run.say(r0, protocol.test_done(TESTS[1], r0.lease, True, [compact("setup")]))
    assert run.reports_of(TESTS[1]) == []
    assert not run.warnings, "not a protocol error"
    assert not run.link(r0).killed
    assert run.environment.done


def test_a_test_it_was_not_sent_is_a_protocol_error() -> None:
    run = Run(TESTS[:1])
    run.environment.submit(TESTS[:1])
    r0 = run.replicas[0]
    run.say(r0, ready(TESTS))
    run.say(r0, protocol.test_done(TESTS[2], r0.lease, False, [compact("setup")]))
    assert "ran t.py::test_c, which it was not sent" in str(
        run.warnings[0]["warning_message"].message
    )
    assert run.link(r0).killed


def test_a_crash_in_an_unannounced_test_fails_that_test_once_and_hands_back_the_rest() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.test_done(TESTS[0], r0.lease, False, [compact("setup")]))
    run.say(r0, protocol.END)  # it died in test_b, quick, never announced
    (failure,) = run.failed(TESTS[1])
    assert failure.when == "call"
    assert "crashed while running t.py::test_b" in str(failure.longrepr)
    hooks = [hook for hook, n, _ in run.calls if n == TESTS[1]]
    assert hooks.count("logstart") == 1
    assert hooks.count("logfinish") == 1
    assert not run.failed(TESTS[2])
    r1 = run.replicas[1]
    run.say(r1, ready(TESTS))
    assert run.sent_runs(r1) == TESTS[2:]


def test_an_announced_test_is_timed_from_when_it_began() -> None:
    run = started_run(TESTS)
    r0 = run.replicas[0]
    run.say(r0, protocol.logstart(TESTS[0], LOCATION, r0.lease, elapsed=0.5))
    assert r0.running[TESTS[0]] == run.clock.now - 0.5
    run.say(r0, protocol.compact_report(compact("setup"), TESTS[0], False, r0.lease))
    assert [r.when for r in run.reports_of(TESTS[0])] == ["setup"]


def test_the_outbox_sends_a_quick_test_once_and_streams_an_announced_one() -> None:
    sent: list[protocol.Message] = []
    outbox = TestOutbox(sent.append)
    outbox.start(TESTS[0], LOCATION, "lease", warm=False)
    outbox.add(compact("setup"))
    outbox.add(compact("call"))
    outbox.finish(TESTS[0])
    assert [name for name, _ in sent] == [protocol.TEST]
    assert protocol.test_payload(sent[0][1])["events"] == [compact("setup"), compact("call")]

    sent.clear()
    outbox.start(TESTS[1], LOCATION, "lease", warm=True)
    outbox.add(compact("setup"))
    outbox.announce(after=3600)
    assert sent == [], "not yet: it has not run an hour"
    thread = threading.Thread(target=outbox.announce)  # as the watchdog does
    thread.start()
    thread.join(5)
    outbox.add([protocol.FULL_REPORT, "{}"])
    outbox.finish(TESTS[1])
    names = [name for name, _ in sent]
    assert names == [protocol.LOGSTART, protocol.REPORT, protocol.REPORT, protocol.LOGFINISH]
    assert sent[1][1] == [*compact("setup"), TESTS[1], True, "lease"]


def test_a_test_that_starts_again_keeps_every_attempt() -> None:
    # pytest-rerunfailures calls logstart once per attempt, logfinish once.
    sent: list[protocol.Message] = []
    outbox = TestOutbox(sent.append)
    outbox.start(TESTS[0], LOCATION, "lease", warm=False)
    outbox.add([protocol.FULL_REPORT, phase(TESTS[0], "call", "failed")[1]])
    outbox.start(TESTS[0], LOCATION, "lease", warm=False)
    outbox.add(compact("call"))
    outbox.finish(TESTS[0])
    ((name, raw),) = sent
    payload = protocol.test_payload(raw)
    assert [event[0] for event in payload["events"]] == [
        protocol.FULL_REPORT,
        protocol.LOGSTART,
        protocol.PASSED,
    ]
    run = started_run(TESTS)
    r0 = run.replicas[0]
    payload["lease"] = r0.lease
    run.say(r0, (name, payload))
    assert [hook for hook, n, _ in run.calls] == [
        "logstart",
        "logreport",
        "logstart",
        "logreport",
        "logfinish",
    ]


def test_the_location_is_the_one_the_replica_sent_not_computed_again() -> None:
    """``Item.location`` costs a ``reportinfo`` and a relative path; the replica computed it
    for its own hooks and sends it with the test."""
    run = started_run(TESTS)
    r0 = run.replicas[0]
    sent = ("t.py", 41, "test_a")
    run.say(r0, protocol.test_done(TESTS[0], r0.lease, False, [compact("call")], sent))
    (report,) = run.reports_of(TESTS[0])
    assert report.location == sent
    hook: Any = run.reports.items[TESTS[0]].ihook
    assert hook.locations == [("logstart", sent), ("logfinish", sent)]
    # Without one (an older message): the item's own.
    run.say(r0, protocol.test_done(TESTS[1], r0.lease, True, [compact("call")]))
    (report,) = run.reports_of(TESTS[1])
    assert report.location == ("t.py", 1, "test_b")
