"""End to end: every routed test gets exactly one set of reports, from this run, under faults.

A replica whose session ends unasked (KeyboardInterrupt, pytest.exit, an error inside pytest), a
report that cannot be encoded or is huge, a forked child that returns into pytest, a test that
outlives the run it was started for: each must end as one true outcome per test, with plain
pytest's exit code (compared with ``--reuse=off`` where that is the point).
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import PLUGIN_ARGS, run


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Short test summary lines are cut to the terminal width: keep the messages whole.
    monkeypatch.setenv("COLUMNS", "200")


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", *lines]) + "\n"


RUN_SCOPE = ini("reuse_scope = run", "reuse_replicas = 1")


# -- a replica's session ends unasked ------------------------------------------------------------

INTERRUPTED_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


def test_a():
    pass


def test_b():
    raise KeyboardInterrupt


def test_c():
    pass


def test_d():
    pass
"""


def test_keyboard_interrupt_in_a_test_interrupts_the_run_as_plain_pytest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(RUN_SCOPE)
    pytester.makepyfile(test_suite=INTERRUPTED_SUITE)
    plain = run(pytester, "-p", "no:randomly", "--reuse=off")
    assert plain.ret == pytest.ExitCode.INTERRUPTED
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    # The interrupted test fails with the reason; nothing after it runs, as in plain pytest.
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_b - replica r0 (pid *) stopped while running test_suite.py::test_b:"
            " the test raised KeyboardInterrupt*",
            "*KeyboardInterrupt: KeyboardInterrupt (in replica r0)*",
        ]
    )


INTERRUPTED_AMONG_HELD_SUITE = """
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse
HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def ended():
    yield
    with open(HERE / "ended.log", "a") as log:
        log.write(f"{os.environ['PYTEST_CURRENT_TEST'].split()[0]} {time.monotonic()}\\n")


def others_held(request):
    # The other replica's held file (replica/held.py), beside this one's log.
    root = Path(request.config._tmp_path_factory.getbasetemp()).parent
    me = os.environ["PYTEST_REUSE_REPLICA"]
    return sum(
        len(path.read_text().splitlines())
        for path in root.glob("replica-*.log.held")
        if path.name != f"replica-{me}.log.held"
    )


@pytest.mark.parametrize("n", range(400))
def test_n(n, request):
    if n == 30:
        deadline = time.monotonic() + 10
        while others_held(request) < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        (HERE / "interrupted").write_text(str(time.monotonic()))
        raise KeyboardInterrupt
    time.sleep(0.001)
"""


def test_an_interrupt_in_one_replica_loses_no_pass_another_held_back(
    pytester: pytest.Pytester,
) -> None:
    # Another replica's passes held back (replica/held.py) that ended before the interrupt
    # had run: they are reported, as they were when each test sent its own message.
    pytester.makeini(ini("reuse_scope = run", "reuse_replicas = 2"))
    pytester.makepyfile(test_suite=INTERRUPTED_AMONG_HELD_SUITE)
    result = run(pytester, "-p", "no:randomly", "--junitxml=r.xml")
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    interrupted = float((pytester.path / "interrupted").read_text())
    ended_before = {
        nodeid
        for nodeid, at in (
            line.split() for line in (pytester.path / "ended.log").read_text().splitlines()
        )
        if float(at) < interrupted - 0.005
    }
    assert len(ended_before) > 3, ended_before
    passed = {
        f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        for case in ET.parse(pytester.path / "r.xml").getroot().iter("testcase")
        if not list(case)
    }
    assert ended_before <= passed, sorted(ended_before - passed)


def test_pytest_exit_in_a_test_ends_the_run_with_its_returncode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(RUN_SCOPE)
    pytester.makepyfile(
        test_suite="""
        import pytest

        pytestmark = pytest.mark.reuse


        def test_a():
            pass


        def test_b():
            pytest.exit("enough", returncode=7)


        def test_c():
            pass
        """
    )
    plain = run(pytester, "-p", "no:randomly", "--reuse=off")
    assert plain.ret == 7
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == 7, result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    # As in plain pytest, pytest.exit skips the summary: its reason closes the run.
    result.stdout.fnmatch_lines(["*Exit: enough (in replica r0)*"])


def test_an_error_inside_pytest_fails_its_test_and_the_others_run_elsewhere(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(RUN_SCOPE)
    # A hook that raises ends a pytest session (plain pytest: INTERNALERROR, exit code 3).
    pytester.makeconftest(
        """
        import os


        def pytest_runtest_logreport(report):
            in_replica = "PYTEST_REUSE_REPLICA" in os.environ
            if in_replica and report.when == "call" and report.nodeid.endswith("test_b"):
                raise RuntimeError("a broken hook")
        """
    )
    pytester.makepyfile(test_suite=INTERRUPTED_SUITE.replace("raise KeyboardInterrupt", "pass"))
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["*test_b - replica r0 (pid *) stopped while running*an error inside pytest*"]
    )
    result.stdout.fnmatch_lines(["*RuntimeError: a broken hook*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_report_that_cannot_be_encoded_fails_its_test_and_loses_no_other(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(RUN_SCOPE)
    pytester.makepyfile(
        test_suite="""
        import pytest

        pytestmark = pytest.mark.reuse


        def test_a():
            pass


        def test_b(record_property):
            loop = []
            loop.append(loop)
            record_property("loop", loop)


        def test_c():
            pass


        def test_d():
            pass


        def test_e():
            pass


        def test_f():
            pass
        """
    )
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_b - the call report of test_suite.py::test_b could not be sent from replica"
            " r0: ValueError: Circular reference detected*"
        ]
    )


# -- a forked child that returns into pytest -----------------------------------------------------


def test_a_forked_child_never_reports_and_exits(pytester: pytest.Pytester) -> None:
    pytester.makeini(RUN_SCOPE)
    pytester.makepyfile(
        test_suite="""
        import os

        import pytest

        pytestmark = pytest.mark.reuse


        def test_fork():
            child = os.fork()
            if child:
                _, status = os.waitpid(child, 0)  # bounded by the child's own exit
                assert os.waitstatus_to_exitcode(status) == 0
            # the child returns into pytest, as if it were the test


        def test_after():
            pass
        """
    )
    result = run(pytester, "-p", "no:randomly", "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=2)
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    assert sorted(case.get("name", "") for case in cases) == ["test_after", "test_fork"]
    log = "".join(p.read_text() for p in pytester.path.rglob("replica-*.log"))
    assert "returned into pytest: exiting without reporting" in log
    # The root conftest fails this test if the child (or anything) still runs in the directory.


def test_a_test_that_closes_the_replicas_descriptors_fails_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    # scope=global: the replica's reader thread may be blocked on the socket the test closes,
    # which keeps the connection open for the kernel: the run hung for good (now the replica
    # exits when it finds its descriptor gone).
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = 1"))
    pytester.makepyfile(
        test_suite="""
        import os

        import pytest

        pytestmark = pytest.mark.reuse


        def test_closes_every_descriptor():
            os.closerange(3, 1024)


        def test_after():
            pass
        """
    )
    try:
        for _ in range(3):  # the hang depended on a race: try it a few times
            result = run(pytester, "-p", "no:randomly", "-rA", timeout=45.0)
            assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
            result.assert_outcomes(passed=1, failed=1)
            result.stdout.fnmatch_lines(
                ["FAILED test_suite.py::test_closes_every_descriptor - replica g-* (pid *) *"]
            )
    finally:
        run(pytester, "--reuse-stop")


# -- a test that outlives the run it was started for ---------------------------------------------

OUTLIVING_SUITE = """
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse


def test_a():
    pass


def test_slow():
    if Path("second").exists():
        return
    Path("started").touch()
    # Swallows the abort its replica raises when this run's controller dies, and goes on until
    # the next run has collected (and so is about to attach), and a moment more.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Path("second_collected").exists():
            deadline = min(deadline, time.monotonic() + 1.5)
        try:
            time.sleep(0.05)
        except BaseException:
            pass


def test_c():
    pass


def test_d():
    pass


def test_e():
    pass
"""


@pytest.mark.parametrize("edited", [False, True], ids=["same-code", "edited"])
def test_a_dead_runs_report_is_never_replayed_in_the_next_run(
    pytester: pytest.Pytester, edited: bool
) -> None:
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = 1"))
    pytester.makeconftest(
        """
        import os
        from pathlib import Path


        def pytest_collection_finish(session):
            if "PYTEST_REUSE_REPLICA" not in os.environ and Path("second").exists():
                Path("second_collected").touch()
        """
    )
    pytester.makepyfile(test_suite=OUTLIVING_SUITE)
    # pytester.popen: the same environment as run()'s, so the next run may attach.
    with (pytester.path / "first.txt").open("w") as output:
        first = pytester.popen(
            [sys.executable, "-m", "pytest", *PLUGIN_ARGS, "-p", "no:randomly"],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (pytester.path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (pytester.path / "started").exists(), (pytester.path / "first.txt").read_text()
    finally:
        first.kill()  # SIGKILL: the controller has no chance to say goodbye
        first.wait(timeout=10)
    (pytester.path / "second").touch()
    if edited:
        # The new code fails: the dead run's old-code PASS must not be shown besides it.
        pytester.makepyfile(
            test_suite=OUTLIVING_SUITE.replace(
                'if Path("second").exists():\n        return',
                'if Path("second").exists():\n        assert False, "the new code"',
            )
        )
    try:
        result = run(pytester, "-p", "no:randomly", "-rA")
        out = result.stdout.str()
        if edited:
            assert result.ret == pytest.ExitCode.TESTS_FAILED, out
            result.assert_outcomes(passed=4, failed=1)
            assert "PASSED test_suite.py::test_slow" not in out
            assert out.count("FAILED test_suite.py::test_slow - AssertionError: the new code") == 1
        else:
            assert result.ret == pytest.ExitCode.OK, out
            result.stdout.fnmatch_lines(["*1 attached warm*"])  # the replica that ran test_slow
            result.assert_outcomes(passed=5)
            assert out.count("PASSED test_suite.py::test_slow") == 1
    finally:
        run(pytester, "--reuse-stop")


# -- reports of any size -------------------------------------------------------------------------


def test_huge_outputs_and_messages_are_reported_cut_never_as_a_crash(
    pytester: pytest.Pytester,
) -> None:
    # scope=global: the socket channel, whose frames are bounded, carries the reports.
    # Memory growth of a test that builds 80 MB strings is true, but not the point here.
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = 1", "reuse_leaks = off"))
    pytester.makepyfile(
        test_suite="""
        import pytest

        pytestmark = pytest.mark.reuse


        def test_prints_70_mb():
            print("x" * 70_000_000)


        def test_fails_with_80_mb():
            assert False, "y" * 80_000_000


        def test_after():
            pass
        """
    )
    try:
        result = run(pytester, "-p", "no:randomly", "-rA")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.assert_outcomes(passed=2, failed=1)
        out = result.stdout.str()
        assert "crashed" not in out
        assert "PASSED test_suite.py::test_prints_70_mb" in out
        assert "FAILED test_suite.py::test_fails_with_80_mb" in out
        assert "characters cut by pytest-reuse-env" in out
    finally:
        run(pytester, "--reuse-stop")
