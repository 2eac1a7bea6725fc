"""End to end: honest messages and state under faults: a hung teardown's report quotes the hung
frame, prewarm works under ``filterwarnings = error``, a timeout is called a timeout, and a test
that changes the working directory does not leave it changed for the next test or run."""

from __future__ import annotations

import pytest

from tests.e2e.test_global import run_report
from tests.helpers import run


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", *lines]) + "\n"


def test_a_hung_teardowns_report_quotes_the_hung_frame_in_a_detached_replica(
    pytester: pytest.Pytester,
) -> None:
    # scope=global: the replica's progress dots share its log with the faulthandler dump.
    pytester.makeini(
        ini("reuse_scope = global", "reuse_replicas = 1", "reuse_teardown_timeout = 3")
    )
    pytester.makepyfile(
        test_hang="""
        import time

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.fixture
        def stuck():
            yield
            finalizer_that_hangs()


        def finalizer_that_hangs():
            time.sleep(60)


        def test_ok():
            pass


        def test_hangs_in_teardown(stuck):
            pass
        """
    )
    try:
        result = run(pytester, "-p", "no:randomly")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.assert_outcomes(passed=2, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*teardown did not finish within 3 s (reuse_teardown_timeout); replica killed",
                "last lines of the replica's log *:",
                "Timeout (2.4 s in teardown)!",
                "Thread 0x* (most recent call first):",
                '  File "*test_hang.py", line * in finalizer_that_hangs',
            ]
        )
        assert "crashed" not in result.stdout.str()
    finally:
        run(pytester, "--reuse-stop")


def test_prewarm_works_under_filterwarnings_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        ini(
            "reuse_scope = run",
            "reuse_replicas = 1",
            "reuse_prewarm = db",
            "filterwarnings = error",
        )
    )
    pytester.makeconftest(
        """
        import os

        import pytest


        @pytest.fixture(scope="session")
        def db():
            yield os.getpid()
        """
    )
    pytester.makepyfile(
        test_db="""
        import pytest

        pytestmark = pytest.mark.reuse


        def test_a(db):
            pass


        def test_b(db):
            pass
        """
    )
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=2)
    assert "prewarm fixture 'db' failed" not in result.stdout.str()


CHDIR_SUITE = """
import os

import pytest

pytestmark = pytest.mark.reuse
HOME = os.getcwd()


def test_a_leaves_another_cwd(tmp_path):
    assert os.getcwd() == HOME
    os.chdir(tmp_path)


def test_b_starts_at_home():
    assert os.getcwd() == HOME
"""


@pytest.mark.parametrize("leaks", ["off", "warn"])
def test_a_changed_working_directory_is_restored_before_the_next_test_and_run(
    pytester: pytest.Pytester, leaks: str
) -> None:
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = 1", f"reuse_leaks = {leaks}"))
    pytester.makepyfile(test_cwd=CHDIR_SUITE)
    try:
        for _ in range(2):  # the second run attaches to the same warm replica
            result = run(pytester, "-p", "no:randomly")
            assert result.ret == pytest.ExitCode.OK, result.stdout.str()
            result.assert_outcomes(passed=2, warnings=1 if leaks == "warn" else 0)
        if leaks == "warn":
            result.stdout.fnmatch_lines(["*test_a_leaves_another_cwd left state*working dir*"])
        result.stdout.fnmatch_lines(["*1 attached warm*"])
    finally:
        run(pytester, "--reuse-stop")


def test_a_replica_slow_to_start_is_named_with_its_logs_last_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_scope = run", "reuse_replicas = 1", "reuse_prewarm = server"))
    pytester.makeconftest(
        """
        import time

        import pytest


        @pytest.fixture(scope="session")
        def server():
            time.sleep(7)  # as a fixture waiting for a port another process holds
            yield
        """
    )
    pytester.makepyfile(
        test_server="""
        import pytest

        pytestmark = pytest.mark.reuse


        def test_a(server):
            pass
        """
    )
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "reuse: replica r0 (pid *) still starting after * s; its log's last line: setting up"
            " prewarm fixture 'server' (reuse_prewarm) (*replica-r0.log)"
        ]
    )


def test_a_timeout_from_a_marker_is_called_a_timeout_not_a_crash(
    pytester: pytest.Pytester,
) -> None:
    # The reuse marker's own timeout, and pytest-timeout's thread method (which ends the
    # process after writing its banner and the stacks to the replica's stdout).
    pytester.makeini(ini("reuse_scope = run", "reuse_replicas = 1"))
    pytester.makepyfile(
        test_slow="""
        import time

        import pytest


        @pytest.mark.reuse(timeout=2)
        def test_reuse_marker():
            time.sleep(60)


        @pytest.mark.reuse
        @pytest.mark.timeout(2, method="thread")
        def test_timeout_marker():
            sleeps_past_its_timeout()


        def sleeps_past_its_timeout():
            time.sleep(60)


        @pytest.mark.reuse
        def test_after():
            pass
        """
    )
    result = run(pytester, "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "FAILED test_slow.py::test_reuse_marker - replica r* (pid *) timed out while running"
            " test_slow.py::test_reuse_marker: timed out after 2 s*",
            "FAILED test_slow.py::test_timeout_marker - replica r* (pid *) timed out"
            " (pytest-timeout ended the process) while running test_slow.py::test_timeout_marker*",
        ]
    )
    # The replica's log has pytest-timeout's stacks: the sleeping frame is quoted.
    result.stdout.fnmatch_lines(['  File "*test_slow.py", line *, in sleeps_past_its_timeout'])
    assert "crashed" not in result.stdout.str()


def test_the_summarys_peaks_are_true_and_saved_is_measured_against_plain_pytest(
    pytester: pytest.Pytester,
) -> None:
    # One replica of concurrency 1 runs one test at a time, however many are queued at it or
    # were running on a replica that crashed; and a run that starts its replicas saves nothing:
    # plain pytest pays that setup once too.
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = 1"))
    pytester.makeconftest(
        """
        import time

        import pytest


        @pytest.fixture(scope="session")
        def heavy():
            time.sleep(0.5)
        """
    )
    pytester.makepyfile(
        test_many="""
        import os
        import time

        import pytest

        pytestmark = pytest.mark.reuse


        def test_crashes_once(heavy):
            # The first run's replica dies mid-test; its replacement runs the rest.
            if not os.path.exists("crashed"):
                open("crashed", "w").close()
                os._exit(1)


        @pytest.mark.parametrize("i", range(6))
        def test_queued(heavy, i):
            time.sleep(0.05)
        """
    )
    try:
        cold, env = run_report(pytester, "-p", "no:randomly")
        cold.assert_outcomes(passed=6, failed=1)
        assert (env["replicas_started"], env["retired"]) == (2, {"crash": 1}), env
        assert (env["peak_busy"], env["peak_tests"]) == (1, 1)
        assert env["saved_seconds_estimate"] == 0.0
        line = next(line for line in cold.stdout.lines if line.startswith("default ("))
        assert "peak 1 busy;" in line, line
        assert "saved" not in line, line

        warm, env = run_report(pytester, "-p", "no:randomly")
        warm.assert_outcomes(passed=7)
        assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
        assert (env["peak_busy"], env["peak_tests"]) == (1, 1)
        # Attached warm: the setup plain pytest would pay in this run is what was saved.
        assert env["setup_seconds_total"] == 0
        assert env["plain_setup_seconds"] >= 0.5
        assert env["saved_seconds_estimate"] == pytest.approx(env["plain_setup_seconds"])
        warm.stdout.fnmatch_lines(["default (*peak 1 busy;*: saved ~* s by attaching warm*"])
    finally:
        run(pytester, "--reuse-stop")
