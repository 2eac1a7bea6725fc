"""End to end: replicas that die, hang, never start or collect differently.

Every fault must end as a report on the affected test that names what happened, the rest of the
run must go on (in a fresh replica where one is needed), and no run may hang: every inner run is
bounded, and the runs that must end quickly assert their wall time too.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.helpers import replicas_stopped, run

# pytest-asyncio, when installed, warns at configure time about an unset ini key of its own;
# hypothesis and anyio only cost start-up time in every inner run and replica.
#: A run that must "end quickly" (crash loop, replica that cannot start, timeout) ends within this.
QUICK_SECONDS = 30.0

RECORD_CONFTEST = """
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("where.txt")


@pytest.fixture
def record(request):
    # Written (and closed) before the test body runs, so a crash cannot lose it.
    replica = os.environ.get("PYTEST_REUSE_REPLICA", "-")
    with LOG.open("a") as f:
        f.write(f"{request.node.name} {replica} {os.getpid()}\\n")
"""


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Short test summary lines are cut to the terminal width: keep the messages whole.
    monkeypatch.setenv("COLUMNS", "200")


def timed_run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, float]:
    started = time.monotonic()
    result = run(pytester, *args)
    return result, time.monotonic() - started


def where(path: Path) -> dict[str, tuple[str, int]]:
    """``{test name: (replica id, pid)}`` from the ``record`` fixture's log."""
    found = {}
    for line in path.read_text().splitlines():
        name, replica, pid = line.split()
        found[name] = (replica, int(pid))
    return found


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", "reuse_scope = run", *lines]) + "\n"


# -- a replica dies mid-test ---------------------------------------------------------------------

CRASH_SUITE = """
import ctypes
import os
import signal

import pytest

pytestmark = pytest.mark.reuse


def test_a_before(record):
    pass


def test_b_exit(record):
    os._exit(3)


def test_c_after_exit(record):
    pass


def test_d_segfault(record):
    ctypes.string_at(0)


def test_e_after_segfault(record):
    pass


def test_f_sigkill(record):
    os.kill(os.getpid(), signal.SIGKILL)


def test_g_after_sigkill(record):
    pass


def test_local(record):
    assert "PYTEST_REUSE_REPLICA" not in os.environ


test_local = pytest.mark.reuse(False)(test_local)
"""


def test_crashing_tests_are_reported_and_fresh_replicas_run_the_rest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(test_crash=CRASH_SUITE)

    result = run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == {"failed": 3, "passed": 5}, out

    ran = where(pytester.path / "where.txt")
    assert len(ran) == 8, ran
    # Each crash names the replica that ran the test, its pid and how it ended...
    for crashed, before, how in [
        ("test_b_exit", "test_a_before", "exit code 3"),
        ("test_d_segfault", "test_c_after_exit", "signal SIGSEGV (11)"),
        ("test_f_sigkill", "test_e_after_segfault", "signal SIGKILL (9)"),
    ]:
        replica, pid = ran[crashed]
        assert ran[before] == (replica, pid), f"{before} and {crashed} ran apart: {ran}"
        message = (
            f"replica {replica} (pid {pid}) crashed while running test_crash.py::{crashed}: {how}"
        )
        assert message in out, out
        assert re.search(rf"^FAILED test_crash.py::{crashed} - {re.escape(message)}", out, re.M), (
            out
        )
    # ...and the next test ran in a fresh replica (another id, another process).
    for crashed, after in [
        ("test_b_exit", "test_c_after_exit"),
        ("test_d_segfault", "test_e_after_segfault"),
        ("test_f_sigkill", "test_g_after_sigkill"),
    ]:
        assert ran[after][0] != ran[crashed][0], ran
        assert ran[after][1] != ran[crashed][1], ran
        assert re.search(rf"^PASSED test_crash.py::{after}$", out, re.M), out
    assert ran["test_local"][0] == "-"


HELD_CRASH_SUITE = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(40))
def test_quick(n):
    pass


def test_crash():
    # What the replica held back unsent (replica/held.py): its file, at a high descriptor.
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".held"):
            held = len(Path(target).read_text().splitlines())
    Path(__file__).with_name("held.txt").write_text(str(held))
    os._exit(5)


@pytest.mark.parametrize("n", range(30))
def test_after(n):
    pass
"""


@pytest.mark.parametrize("scope", ["run", "global"])
def test_a_crash_loses_none_of_the_passes_held_back_and_blames_only_its_test(
    pytester: pytest.Pytester, scope: str
) -> None:
    # Quiet passes are held back and sent in batches (replica/held.py); the replica dies with
    # some held: each is still reported passed, from the file it wrote them to, and the crash
    # is blamed on the test that caused it, not on the first pass held. A detached (global)
    # replica holds them too, in a file it keeps across runs.
    pytester.makeini(f"[pytest]\nreuse_scope = {scope}\nreuse_replicas = 1\n")
    pytester.makepyfile(test_held=HELD_CRASH_SUITE)

    with replicas_stopped(pytester):
        result = run(pytester, "-rA", "-p", "no:randomly")
        if scope == "global":  # a second run: a new replica, the dead one's file not read
            result = run(pytester, "-rA", "-p", "no:randomly")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == {"failed": 1, "passed": 70}, out
    assert int((pytester.path / "held.txt").read_text()) > 0, "nothing was held: not tested"
    for n in range(40):
        assert re.search(rf"^PASSED test_held.py::test_quick\[{n}\]$", out, re.M), out
    # The second global run's replica is one the first left warm: not its child, no exit code.
    ended = "exit code 5" if scope == "run" else "exited"
    result.stdout.re_match_lines(
        [
            r"^FAILED test_held.py::test_crash - replica (r\d+|g-[0-9a-f]+) \(pid \d+\) crashed "
            rf"while running test_held.py::test_crash: {ended}"
        ]
    )


CRASH_LOOP_SUITE = """
import os

import pytest


@pytest.mark.reuse
@pytest.mark.parametrize("n", range(10))
def test_crashes(n):
    os._exit(1)


def test_local():
    pass
"""


def test_crash_loop_gives_up_with_a_clear_message(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_loop=CRASH_LOOP_SUITE)

    result, elapsed = timed_run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert elapsed < QUICK_SECONDS, out
    outcomes = result.parseoutcomes()
    # replicas=1: at most 4 x 1 restarts, so 5 tests crash their replica and the rest are lost.
    assert outcomes.get("passed") == 1, outcomes
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 10, outcomes
    assert 1 <= outcomes.get("failed", 0) <= 5, outcomes
    assert outcomes.get("errors", 0) >= 5, outcomes
    crashed = re.findall(
        r"^replica r\d+ \(pid \d+\) crashed while running test_loop.py::test_crashes\[\d\]: "
        r"exit code 1$",
        out,
        re.M,
    )
    assert len(crashed) == outcomes["failed"], out
    not_run = re.findall(
        r"^ERROR test_loop.py::test_crashes\[\d\] - not run: environment .*default.* "
        r"stopped after \d+ replica crashes",
        out,
        re.M,
    )
    assert len(not_run) == outcomes["errors"], out


# -- a replica cannot start -------------------------------------------------------------------

BROKEN_REPLICA_CONFTEST = """
import os

if os.environ.get("PYTEST_REUSE_REPLICA"):
    raise ImportError("replica-only-import-failure")
"""

BROKEN_REPLICA_SUITE = """
import pytest


@pytest.mark.reuse
def test_marked_one():
    pass


@pytest.mark.reuse
def test_marked_two():
    pass


def test_local():
    pass
"""


def test_replica_that_cannot_start_fails_its_tests_with_the_traceback(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 2"))
    pytester.makeconftest(BROKEN_REPLICA_CONFTEST)
    pytester.makepyfile(test_broken=BROKEN_REPLICA_SUITE)

    result, elapsed = timed_run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert elapsed < QUICK_SECONDS, out
    assert result.parseoutcomes() == {"passed": 1, "errors": 2}, out
    for name in ("test_marked_one", "test_marked_two"):
        assert re.search(rf"^ERROR test_broken.py::{name} - .*could not start", out, re.M), out
    # The replica's own traceback reaches the user.
    assert "ImportError: replica-only-import-failure" in out
    assert "conftest.py" in out


# -- a test hangs ------------------------------------------------------------------------------

HANG_SUITE = """
import time

import pytest

pytestmark = pytest.mark.reuse


def test_a_ok(record):
    pass


def test_b_hangs(record):
    time.sleep(60)


def test_c_ok(record):
    pass
"""


def test_reuse_timeout_kills_a_hanging_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1", "reuse_timeout = 2"))
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(test_hang=HANG_SUITE)

    result, elapsed = timed_run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert elapsed < QUICK_SECONDS, out
    assert result.parseoutcomes() == {"failed": 1, "passed": 2}, out
    ran = where(pytester.path / "where.txt")
    replica, pid = ran["test_b_hangs"]
    assert re.search(
        rf"^FAILED test_hang.py::test_b_hangs - replica {replica} \(pid {pid}\) timed out while "
        r"running test_hang.py::test_b_hangs: timed out after 2 s",
        out,
        re.M,
    ), out
    assert ran["test_c_ok"][1] != pid, ran


# -- a replica collects differently -------------------------------------------------------------

DIVERGING_CONFTEST = """
import os


def pytest_collection_modifyitems(items):
    if os.environ.get("PYTEST_REUSE_REPLICA"):
        items[:] = [item for item in items if "ghost" not in item.name]
"""

DIVERGING_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


def test_ghost():
    pass


def test_real():
    pass
"""


def test_nodeid_the_replica_did_not_collect_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makeconftest(DIVERGING_CONFTEST)
    pytester.makepyfile(test_diverge=DIVERGING_SUITE)

    result, elapsed = timed_run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert elapsed < QUICK_SECONDS, out
    assert result.parseoutcomes() == {"passed": 1, "errors": 1}, out
    assert re.search(
        r"^ERROR test_diverge.py::test_ghost - replica r\d+ \(pid \d+\) did not collect "
        r"test_diverge.py::test_ghost",
        out,
        re.M,
    ), out
    assert re.search(r"^PASSED test_diverge.py::test_real$", out, re.M), out
