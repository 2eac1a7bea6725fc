"""Resource bounds: an environment never runs more replicas at once than the machine has cores
(``reuse_replica_limit``), a policy asking for more is clamped with a note, and Ctrl-C ends a
run within seconds, with plain pytest's exit code and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import PLUGIN_ARGS, run

SLEEPERS = """
import os
import time

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(40))
def test_sleep(n):
    open(f"started-{os.getpid()}", "w").close()
    time.sleep(0.2)
"""


def started_pids(pytester: pytest.Pytester) -> set[str]:
    return {p.name for p in pytester.path.glob("started-*")}


def test_a_policy_asking_for_more_replicas_than_cores_is_clamped_with_a_note(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        "[pytest]\nreuse_replicas = (1, 1000)\nreuse_scope = run\nreuse_replica_limit = 2\n"
    )
    pytester.makepyfile(test_sleepers=SLEEPERS.replace("range(40)", "range(12)"))
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=12)
    result.stdout.fnmatch_lines(
        ["*replicas clamped to 2 (the policy asks for up to 1000)*reuse_replica_limit*"]
    )
    assert 1 <= len(started_pids(pytester)) <= 2, "never more replicas than the limit"


def test_a_bad_replica_limit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replica_limit = 0\n")
    pytester.makepyfile(test_one="import pytest\n\n@pytest.mark.reuse\ndef test_a():\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*reuse_replica_limit must be an int >= 1, got '0'*"])


def interrupt_after_first_test(pytester: pytest.Pytester, *args: str) -> tuple[int, float, str]:
    """Start an inner pytest, send it SIGINT once a test has started; returns its exit code,
    the seconds from SIGINT to its exit, and its output."""
    for started in pytester.path.glob("started-*"):
        started.unlink()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *PLUGIN_ARGS, "-p", "no:cacheprovider", *args],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not started_pids(pytester) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started_pids(pytester), "no test started within 60 s"
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, _ = process.communicate(timeout=30)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, took, out.decode(errors="replace")


def test_ctrl_c_lands_within_seconds_while_replicas_start_and_run(
    pytester: pytest.Pytester,
) -> None:
    # A billion replicas asked for: clamped to the cores, so Ctrl-C has little to stop.
    pytester.makeini("[pytest]\nreuse_replicas = (1, 1000000000)\nreuse_scope = run\n")
    pytester.makepyfile(test_sleepers=SLEEPERS)
    # Plain pytest's own Ctrl-C on this machine now (it formats the traceback too).
    code, plain, text = interrupt_after_first_test(pytester, "--reuse=off")
    assert code == pytest.ExitCode.INTERRUPTED, text
    code, took, text = interrupt_after_first_test(pytester)
    assert code == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text, text
    # Goal: within 2 s; on a quiet machine plain pytest takes a fraction of a second.
    assert took < plain + 2.0, f"Ctrl-C took {took:.1f} s to land (plain: {plain:.1f} s)\n{text}"
    assert len(started_pids(pytester)) <= (os.cpu_count() or 1), "clamped to the cores"


# -- cold start ------------------------------------------------------------------------------

TIMES_CONFTEST = """
import os
import time


def pytest_configure(config):
    if os.environ.get("PYTEST_REUSE_REPLICA"):
        with open(f"replica-configured-{os.getpid()}", "w") as f:
            f.write(repr(time.monotonic()))  # one clock for every process, never stepped


def pytest_collection_finish(session):
    if not os.environ.get("PYTEST_REUSE_REPLICA"):
        with open("controller-collected", "w") as f:
            f.write(repr(time.monotonic()))  # one clock for every process, never stepped
"""


@pytest.mark.parametrize(
    "ini",
    ["reuse_scope = run\n", "reuse_scope = run\nreuse_all = default\n"],
    ids=["marker", "reuse_all"],
)
def test_a_replica_starts_while_the_controller_still_collects(
    pytester: pytest.Pytester, ini: str
) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 1\n" + ini)
    pytester.makeconftest(TIMES_CONFTEST)
    marked = "reuse_all" not in ini
    pytester.makepyfile(
        test_a=("import pytest\n\n@pytest.mark.reuse\n" if marked else "")
        + "def test_a():\n    pass\n",
        # Collected after test_a: slow to import, here and in the replica.
        test_b="import time\n\ntime.sleep(3)\n\n\ndef test_b():\n    pass\n",
    )
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    (configured,) = pytester.path.glob("replica-configured-*")
    collected = float((pytester.path / "controller-collected").read_text())
    started = float(configured.read_text())
    assert started < collected - 1.0, (
        f"the replica started {started - collected:+.1f} s after the controller collected"
    )
