"""Reports survive the trip through the wire protocol exactly as pytest's consumers need."""

from __future__ import annotations

import pytest

from pytest_reuse_env import protocol


def round_trip(config: pytest.Config, report: pytest.TestReport) -> pytest.TestReport:
    data = config.hook.pytest_report_to_serializable(config=config, report=report)
    data[protocol.REPORT_WARM] = True
    payload = protocol.encode_report(data)
    assert isinstance(payload, str)
    rebuilt: pytest.TestReport = config.hook.pytest_report_from_serializable(
        config=config, data=protocol.decode_report(payload)
    )
    return rebuilt


def test_skip_report_keeps_its_tuples(pytestconfig: pytest.Config) -> None:
    report = pytest.TestReport(
        nodeid="t.py::test_x",
        location=("t.py", 3, "test_x"),
        keywords={"test_x": 1, "reuse": 1},
        outcome="skipped",
        longrepr=("t.py", 4, "Skipped: not today"),
        when="setup",
        sections=[("Captured stdout setup", "hello\n")],
        user_properties=[("ticket", "ABC-1")],
        duration=0.25,
    )
    rebuilt = round_trip(pytestconfig, report)
    assert rebuilt.longrepr == ("t.py", 4, "Skipped: not today")
    assert isinstance(rebuilt.longrepr, tuple), "junitxml asserts a tuple for skips"
    assert rebuilt.location == ("t.py", 3, "test_x")
    assert rebuilt.sections == [("Captured stdout setup", "hello\n")]
    assert rebuilt.user_properties == [("ticket", "ABC-1")]
    assert rebuilt.duration == 0.25
    assert getattr(rebuilt, protocol.REPORT_WARM) is True


def test_failure_report_keeps_its_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_fail():\n    x = 1\n    assert x == 2\n")
    reports = pytester.inline_run("-p", "no:asyncio").getreports("pytest_runtest_logreport")
    call = next(r for r in reports if r.when == "call")
    rebuilt = round_trip(pytester.parseconfigure("-p", "no:asyncio"), call)
    assert rebuilt.failed
    assert "assert 1 == 2" in rebuilt.longreprtext
    assert rebuilt.longreprtext == call.longreprtext


def test_unencodable_values_become_text() -> None:
    payload = protocol.encode_report({"nodeid": "a", "odd": object()})
    assert protocol.decode_report(payload)["odd"].startswith("<object object")


@pytest.mark.parametrize(
    "nodeids",
    [
        [],
        ["t.py::a"],
        ["t.py::a", "t.py::b[x-1]", "t.py::c[a\\nb]", "t.py::d[ ]", "sub dir/t.py::C::e"],
    ],
)
def test_run_carries_nodeids_in_order(nodeids: list[str]) -> None:
    name, payload = protocol.run(nodeids)
    assert name == protocol.RUN
    assert isinstance(payload, str)  # execnet sends one string, not an item at a time
    assert protocol.split_nodeids(payload) == nodeids
