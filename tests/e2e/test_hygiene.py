"""End to end: leak checks between tests, recycling limits, --reuse-verify-cold, bounded teardown.

Each leak kind is planted in a test of its own and must be reported on that test, and on that
test only; clean tests and wider-scoped fixtures that legitimately hold state must not be. The
recycling tests count replica processes by pid, recorded by the tests themselves.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from tests.helpers import replicas_stopped, run

#: reuse_teardown_timeout of the hanging-finalizer run, and how long that whole run may take.
TEARDOWN_TIMEOUT = 2
HANG_RUN_SECONDS = 15.0

RECORD_CONFTEST = """
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("where.txt")


@pytest.fixture(autouse=True)
def record(request):
    # One line at setup and one at teardown, each written and closed at once.
    replica = os.environ.get("PYTEST_REUSE_REPLICA", "-")
    with LOG.open("a") as f:
        f.write(f"{request.node.name} setup {replica} {os.getpid()}\\n")
    yield
    with LOG.open("a") as f:
        f.write(f"{request.node.name} teardown {replica} {os.getpid()}\\n")
"""


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Warning and short test summary lines are cut to the terminal width: keep them whole.
    monkeypatch.setenv("COLUMNS", "300")


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", "reuse_scope = run", *lines]) + "\n"


def where(path: Path) -> list[tuple[str, str, str, int]]:
    """``(test name, phase, replica id, pid)`` in the order the ``record`` fixture wrote them."""
    rows = []
    for line in path.read_text().splitlines():
        name, phase, replica, pid = line.split()
        rows.append((name, phase, replica, int(pid)))
    return rows


def pids_by_test(path: Path) -> dict[str, int]:
    """``{test name: pid}``; a test whose setup and teardown ran in different processes fails."""
    found: dict[str, set[int]] = {}
    for name, _phase, _replica, pid in where(path):
        found.setdefault(name, set()).add(pid)
    assert all(len(pids) == 1 for pids in found.values()), found
    return {name: pids.pop() for name, pids in found.items()}


def warnings_summary(out: str) -> str:
    """The text of pytest's warnings summary section ('' when there is none)."""
    match = re.search(r"^=+ warnings summary =+$(.*?)^-- Docs:", out, re.M | re.S)
    return match.group(1) if match else ""


def leak_warnings(out: str) -> dict[str, str]:
    """``{nodeid: what leaked}`` from the ReuseLeakWarning lines of the warnings summary."""
    found = {}
    for nodeid, detail in re.findall(
        r"ReuseLeakWarning: (\S+) left state behind in replica r\d+: (.*)$",
        warnings_summary(out),
        re.M,
    ):
        assert nodeid not in found, f"{nodeid} reported twice:\n{out}"
        found[nodeid] = detail
    return found


def recycle_lines(out: str) -> list[tuple[str, str, str]]:
    """``(replica id, nodeid, detail)`` of every ``-v`` recycling line."""
    return re.findall(r"^reuse: recycling replica (r\d+) after (\S+): (.*)$", out, re.M)


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    """Poll until ``pid`` is gone (or a zombie); False at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def kill_if_running(pid: int) -> None:
    try:
        psutil.Process(pid).kill()
    except psutil.NoSuchProcess:
        pass


# -- one test for each kind of leak -----------------------------------------------------------

LEAK_CONFTEST = """
import threading

import pytest

STOP = threading.Event()
CHILDREN = []


@pytest.fixture(scope="session", autouse=True)
def _cleanup():
    # Stop what the leaking tests left running, at the end of the replica's session.
    yield
    STOP.set()
    for child in CHILDREN:
        child.kill()
        child.wait()
"""

LEAK_SUITE = """
import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import conftest

pytestmark = pytest.mark.reuse
KEEP = []


def test_clean_first():
    pass


def test_env():
    os.environ["LEAKED_BY_TEST"] = "1"


def test_cwd(tmp_path):
    os.chdir(tmp_path)


def test_sys_path():
    sys.path.append("/leaked/by/test")


def test_thread():
    threading.Thread(target=conftest.STOP.wait, name="leaky-thread", daemon=True).start()


def test_fd():
    KEEP.append(open(__file__))


def test_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    conftest.CHILDREN.append(child)
    Path(__file__).with_name("child.txt").write_text(str(child.pid))


def test_task():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    KEEP.append(loop.create_task(asyncio.sleep(10)))


def test_memory():
    # Written, not just reserved: the pages count as resident.
    KEEP.append(b"x" * (100 * 2**20))


def test_clean_last():
    pass
"""

MODULE_FIXTURE_SUITE = """
import threading

import pytest

pytestmark = pytest.mark.reuse


@pytest.fixture(scope="module")
def server():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="module-server", daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join()


def test_uses_server(server):
    assert server.is_alive()


def test_uses_server_again(server):
    assert server.is_alive()


def test_clean_after_server():
    pass
"""

LEAK_INI = ini("reuse_replicas = 1", "reuse_leak_memory_mib = 50")


def make_leak_suite(pytester: pytest.Pytester) -> None:
    pytester.makeini(LEAK_INI)
    pytester.makeconftest(LEAK_CONFTEST)
    pytester.makepyfile(test_leaks=LEAK_SUITE, test_module_fixture=MODULE_FIXTURE_SUITE)


def test_each_kind_of_leak_is_reported_on_the_test_that_left_it(
    pytester: pytest.Pytester,
) -> None:
    make_leak_suite(pytester)

    result = run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert result.parseoutcomes() == {"passed": 13, "warnings": 8}, out

    child_pid = int((pytester.path / "child.txt").read_text())
    expected = {
        "test_leaks.py::test_env": r"environment variables changed: LEAKED_BY_TEST",
        "test_leaks.py::test_cwd": r"working directory changed: \S+ -> \S*test_cwd0",
        "test_leaks.py::test_sys_path": re.escape("sys.path changed: added ['/leaked/by/test']"),
        "test_leaks.py::test_thread": r"threads still running: leaky-thread",
        "test_leaks.py::test_fd": r"file descriptors left open: \d+ -> \S+/test_leaks\.py",
        "test_leaks.py::test_child": rf"child processes left running: pids {child_pid}",
        # The loop's own selector and self-pipe are left open too.
        "test_leaks.py::test_task": r"asyncio tasks still pending: 1",
        "test_leaks.py::test_memory": r"resident memory grew by (\d+) MiB",
    }
    found = leak_warnings(out)
    # Exactly the leaking tests: not the clean ones, not the module fixture's thread.
    assert sorted(found) == sorted(expected), out
    for nodeid, pattern in expected.items():
        match = re.search(pattern, found[nodeid])
        assert match, f"{nodeid}: {found[nodeid]!r} does not match {pattern!r}"
        if nodeid.endswith("test_memory"):
            assert 90 <= int(match.group(1)) <= 150, found[nodeid]
        else:
            assert "resident memory" not in found[nodeid], found[nodeid]
    # Each leak is named on its own test only (the state stays, but it is not new later).
    for name in ("LEAKED_BY_TEST", "leaky-thread", "/leaked/by/test", f"pids {child_pid}"):
        assert sum(name in detail for detail in found.values()) == 1, (name, found)
    summary = warnings_summary(out)
    for clean in ("test_clean_first", "test_clean_last", "test_uses_server", "module-server"):
        assert clean not in summary, out
    # The session fixture's finalizer killed the child.
    assert wait_gone(child_pid), f"the leaked child {child_pid} outlived the run"


def test_reuse_leaks_off_reports_nothing(pytester: pytest.Pytester) -> None:
    make_leak_suite(pytester)

    result = run(pytester, "-rA", "-o", "reuse_leaks=off")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert result.parseoutcomes() == {"passed": 13}, out
    assert "ReuseLeakWarning" not in out
    assert "left state behind" not in out
    child_pid = int((pytester.path / "child.txt").read_text())
    assert wait_gone(child_pid), f"the leaked child {child_pid} outlived the run"


IGNORE_SUITE = """
import os
import sys
import threading

import pytest

pytestmark = pytest.mark.reuse
STOP = threading.Event()


@pytest.fixture(scope="session", autouse=True)
def _stop_threads():
    yield
    STOP.set()


def test_env_mixed():
    os.environ["IGNORED_ONE"] = "1"
    os.environ["IGNORED_TWO"] = "2"
    os.environ["KEPT_ONE"] = "3"


def test_env_ignored_only():
    os.environ["IGNORED_THREE"] = "3"


def test_threads_mixed():
    threading.Thread(target=STOP.wait, name="quiet-1", daemon=True).start()
    threading.Thread(target=STOP.wait, name="loud-1", daemon=True).start()


def test_cwd_ignored(tmp_path):
    os.chdir(tmp_path)


def test_sys_path_not_ignored():
    sys.path.append("/still/reported")
"""


def test_reuse_leaks_ignore_silences_exactly_what_it_names(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        ini(
            "reuse_replicas = 1",
            "reuse_leaks_ignore =",
            "    env:IGNORED_*",
            "    thread:quiet-*",
            "    cwd",
        )
    )
    pytester.makepyfile(test_ignore=IGNORE_SUITE)

    result = run(pytester, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    found = leak_warnings(out)
    assert found == {
        "test_ignore.py::test_env_mixed": "environment variables changed: KEPT_ONE",
        "test_ignore.py::test_threads_mixed": "threads still running: loud-1",
        "test_ignore.py::test_sys_path_not_ignored": "sys.path changed: added ['/still/reported']",
    }, out
    assert "IGNORED_" not in out
    assert "quiet-1" not in out


# -- reuse_leaks = fail / recycle -----------------------------------------------------------------

FAIL_SUITE = """
import os

import pytest

pytestmark = pytest.mark.reuse


def test_a_clean():
    pass


def test_b_leaks():
    os.environ["LEAKED_VAR"] = "1"


def test_c_clean():
    pass
"""


def test_reuse_leaks_fail_reports_an_error_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1", "reuse_leaks = fail"))
    pytester.makepyfile(test_fail=FAIL_SUITE)

    result = run(pytester, "-rA", "--junitxml=junit.xml")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    # The leaking test's call passed; its teardown is the error.
    assert result.parseoutcomes() == {"passed": 3, "errors": 1}, out
    assert re.search(r"^_+ ERROR at teardown of test_b_leaks _+$", out, re.M), out
    assert re.search(
        r"^ERROR test_fail.py::test_b_leaks - test_fail.py::test_b_leaks left state behind in "
        r"replica r\d+: environment variables changed: LEAKED_VAR",
        out,
        re.M,
    ), out
    assert "reuse_leaks = fail" in out
    for clean in ("test_a_clean", "test_c_clean"):
        assert re.search(rf"^PASSED test_fail.py::{clean}$", out, re.M), out
    assert "ReuseLeakWarning" not in out  # an error instead of a warning, not both

    cases = {
        case.get("name", ""): case
        for case in ET.parse(pytester.path / "junit.xml").iter("testcase")
    }
    assert sorted(cases) == ["test_a_clean", "test_b_leaks", "test_c_clean"]
    errors = cases["test_b_leaks"].findall("error")
    assert len(errors) == 1, ET.tostring(cases["test_b_leaks"])
    assert "LEAKED_VAR" in (errors[0].text or "") + (errors[0].get("message") or "")
    for clean in ("test_a_clean", "test_c_clean"):
        assert not [c for c in cases[clean] if c.tag in ("error", "failure")], clean


RECYCLE_SUITE = """
import os

import pytest

pytestmark = pytest.mark.reuse


def test_a_clean():
    pass


def test_b_leaks():
    os.environ["LEAKED_VAR"] = "1"


def test_c_after():
    leaked = "LEAKED_VAR" in os.environ
    assert not leaked, "LEAKED_VAR is set: this replica ran test_b_leaks"


def test_d_after():
    leaked = "LEAKED_VAR" in os.environ
    assert not leaked, "LEAKED_VAR is set: this replica ran test_b_leaks"
"""


def test_reuse_leaks_recycle_replaces_the_replica_before_the_next_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 1", "reuse_leaks = recycle"))
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(test_recycle=RECYCLE_SUITE)

    result = run(pytester, "-v")
    out = result.stdout.str()
    ran = pids_by_test(pytester.path / "where.txt")
    lines = recycle_lines(out)
    assert len(lines) == 1, out
    replica, nodeid, detail = lines[0]
    assert nodeid == "test_recycle.py::test_b_leaks", out
    assert detail == "environment variables changed: LEAKED_VAR", out
    replicas = {name: r for name, _, r, _ in where(pytester.path / "where.txt")}
    assert replica == replicas["test_b_leaks"] != replicas["test_c_after"], replicas
    assert "test_recycle.py::test_b_leaks" in leak_warnings(out), out  # it warns too
    assert ran["test_a_clean"] == ran["test_b_leaks"], ran
    # The next test runs in another process, which never saw the leak.
    assert ran["test_c_after"] != ran["test_b_leaks"], ran
    assert ran["test_d_after"] == ran["test_c_after"], ran
    assert result.parseoutcomes() == {"passed": 4, "warnings": 1}, out
    assert re.search(r"retired: 1 end of run, 1 recycle \(leak\);", out), out


# -- recycling limits -----------------------------------------------------------------------------

MAX_TESTS_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(10))
def test_n(n):
    pass
"""


def test_max_tests_per_replica_replaces_replicas_between_tests(pytester: pytest.Pytester) -> None:
    # Jitter adds up to int(3 x 10 %) = 0 tests: the limit is exactly 3.
    pytester.makeini(ini("reuse_replicas = 1", "reuse_max_tests_per_replica = 3"))
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(test_limit=MAX_TESTS_SUITE)

    result = run(pytester, "-v")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert result.parseoutcomes() == {"passed": 10}, out
    rows = where(pytester.path / "where.txt")
    # Never mid-test: every test's setup and teardown ran, one after the other, in one process.
    assert [(name, phase) for name, phase, _, _ in rows] == [
        (f"test_n[{n}]", phase) for n in range(10) for phase in ("setup", "teardown")
    ], rows
    ran = pids_by_test(pytester.path / "where.txt")
    pids = [ran[f"test_n[{n}]"] for n in range(10)]
    # ceil(10 / 3) = 4 replicas, each running 3 consecutive tests (the last one 1).
    assert len(set(pids)) == 4, pids
    assert pids == [pids[0]] * 3 + [pids[3]] * 3 + [pids[6]] * 3 + [pids[9]], pids
    lines = recycle_lines(out)
    assert [(nodeid, detail) for _, nodeid, detail in lines] == [
        (f"test_limit.py::test_n[{n}]", "max tests (3 run, limit 3)") for n in (2, 5, 8)
    ], out
    assert re.search(r"retired: 1 end of run, 3 recycle \(max tests\);", out), out


MAX_MEMORY_SUITE = """
import pytest

pytestmark = pytest.mark.reuse
KEEP = []


def test_a():
    pass


def test_b_grows():
    KEEP.append(b"x" * (200 * 2**20))


def test_c():
    pass


def test_d():
    pass
"""


def test_max_memory_per_replica_recycles_once(pytester: pytest.Pytester) -> None:
    # A fresh replica is far below 150 MiB; 200 MiB more takes it past.
    pytester.makeini(
        ini("reuse_replicas = 1", "reuse_leaks = off", "reuse_max_memory_per_replica = 150")
    )
    pytester.makeconftest(RECORD_CONFTEST)
    pytester.makepyfile(test_memory=MAX_MEMORY_SUITE)

    result = run(pytester, "-v")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert result.parseoutcomes() == {"passed": 4}, out
    lines = recycle_lines(out)
    assert len(lines) == 1, out
    _, nodeid, detail = lines[0]
    assert nodeid == "test_memory.py::test_b_grows", out
    assert re.fullmatch(r"max memory \(\d+ MiB resident, limit 150\)", detail), detail
    assert re.search(r"retired: 1 end of run, 1 recycle \(max memory\);", out), out
    ran = pids_by_test(pytester.path / "where.txt")
    assert ran["test_a"] == ran["test_b_grows"], ran
    assert ran["test_c"] != ran["test_b_grows"], ran
    assert ran["test_d"] == ran["test_c"], ran


# -- --reuse-verify-cold -------------------------------------------------------------------------

ORDER_SUITE = """
import pytest

pytestmark = pytest.mark.reuse
STATE = {"touched": False}


def test_a_mutates():
    STATE["touched"] = True


def test_b_expects_untouched():
    assert not STATE["touched"], "STATE was touched"


def test_c_always_fails():
    assert False, "always fails"
"""


def failure_sections(out: str) -> dict[str, str]:
    """``{test name: its block}`` of the FAILURES section."""
    section = re.search(r"^=+ FAILURES =+$(.*?)^=+ ", out, re.M | re.S)
    assert section, out
    parts = re.split(r"^_{3,} (\S+) _{3,}$", section.group(1), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_verify_cold_tells_warm_only_failures_from_the_tests_own(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_order=ORDER_SUITE)
    plain = run(pytester, "-rA")
    plain.assert_outcomes(failed=2, passed=1)
    plain.stdout.fnmatch_lines(
        [
            "2 tests failed in a warm replica, after other tests ran in its process: "
            "--reuse-verify-cold re-runs each alone in a fresh replica *"
        ]
    )

    result = run(pytester, "-rA", "--reuse-verify-cold")
    out = result.stdout.str()
    result.stdout.no_fnmatch_line("*failed in a warm replica, after other tests*")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    # The outcome stays the warm one.
    assert result.parseoutcomes() == {"failed": 2, "passed": 1}, out
    assert re.search(r"^FAILED test_order.py::test_b_expects_untouched - ", out, re.M), out
    assert re.search(r"^FAILED test_order.py::test_c_always_fails - ", out, re.M), out
    sections = failure_sections(out)
    warm_only = re.search(
        r"^-+ reuse: fails only in a warm replica -+$(.*)",
        sections["test_b_expects_untouched"],
        re.M | re.S,
    )
    assert warm_only, out
    assert re.search(r"^  test_order.py::test_a_mutates$", warm_only.group(1), re.M), out
    assert "fails in a fresh replica too" not in sections["test_b_expects_untouched"]
    own = sections["test_c_always_fails"]
    assert re.search(r"^-+ reuse: fails in a fresh replica too -+$", own, re.M), out
    assert "fails only in a warm replica" not in own


# -- teardown -------------------------------------------------------------------------------------

HANG_CONFTEST = """
import os
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def slow_to_close():
    Path(__file__).with_name("pid.txt").write_text(str(os.getpid()))
    yield
    time.sleep(60)
"""

HANG_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


def test_a(slow_to_close):
    pass


def test_b(slow_to_close):
    pass
"""


def test_hanging_finalizer_is_killed_after_reuse_teardown_timeout(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 1", f"reuse_teardown_timeout = {TEARDOWN_TIMEOUT}"))
    pytester.makeconftest(HANG_CONFTEST)
    pytester.makepyfile(test_hang=HANG_SUITE)

    started = time.monotonic()
    try:
        result = run(pytester, "-rA", timeout=HANG_RUN_SECONDS + 10)
    finally:
        elapsed = time.monotonic() - started
        pid_file = pytester.path / "pid.txt"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        gone = pid is None or wait_gone(pid)
        if pid is not None and not gone:
            kill_if_running(pid)  # so the failure below is the only one
    out = result.stdout.str()
    assert elapsed < HANG_RUN_SECONDS, out
    assert gone, f"replica {pid} still running after the run:\n{out}"
    # As in plain pytest, the session fixture is torn down in the last test's teardown: that
    # phase is the one that hung, and it is reported as an error there.
    assert result.parseoutcomes() == {"passed": 2, "errors": 1}, out
    assert re.search(
        rf"ERROR at teardown of test_\w+.*\n(.*\n)*?.*replica r\d+ \(pid {pid}\) was killed while "
        rf"running test_hang\.py::test_\w+: teardown did not finish within {TEARDOWN_TIMEOUT} s "
        r"\(reuse_teardown_timeout\); replica killed",
        out,
    ), out
    # The faulthandler dump in the replica's log shows where it hung.
    assert re.search(r'File "\S*conftest\.py", line \d+ in slow_to_close', out), out


TEARDOWN_ERROR_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


@pytest.fixture(scope="module")
def broken_on_close():
    yield
    raise RuntimeError("module-fixture-teardown-boom")


def test_one(broken_on_close):
    pass


def test_two(broken_on_close):
    pass
"""

AFTER_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


def test_three():
    pass


def test_four():
    pass
"""


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_module_fixture_teardown_error_between_tests_is_reported(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    # The module goes down in test_two's teardown and the error is test_two's, as in plain
    # pytest. Under -n 1 (one test at a time) the replica is told the session's next test
    # (NEXT); it tore the module down when test_three came, and the error went with
    # test_three's teardown, naming test_two.
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_a_mod=TEARDOWN_ERROR_SUITE, test_b_mod=AFTER_SUITE)
    n = ["-n", "1"] if xdist else []
    plain = run(pytester, "-rA", "-p", "no:randomly", "--reuse=off", *n)
    result = run(pytester, "-rA", "-p", "no:randomly", *n)
    out = result.stdout.str()
    assert "RuntimeError: module-fixture-teardown-boom" in out, out
    assert result.ret == plain.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == plain.parseoutcomes() == {"passed": 4, "errors": 1}, out
    assert re.search(r"^_+ ERROR at teardown of test_two _+$", out, re.M), out
    for name in ("test_one", "test_two", "test_three", "test_four"):
        assert re.search(rf"^PASSED test_\w_mod.py::{name}$", out, re.M), out


@pytest.mark.parametrize("stop", ["-x", "--maxfail=1"])
def test_a_teardown_error_stops_a_run_under_x_where_plain_pytest_stops(
    pytester: pytest.Pytester, stop: str
) -> None:
    # -x goes one test at a time: the module went down when test_three came, so test_three
    # ran before the error stopped the run (plain pytest stops at test_two's teardown).
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_a_mod=TEARDOWN_ERROR_SUITE, test_b_mod=AFTER_SUITE)
    plain = run(pytester, "-rA", "-p", "no:randomly", "--reuse=off", stop)
    result = run(pytester, "-rA", "-p", "no:randomly", stop)
    out = result.stdout.str()
    assert result.ret == plain.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == plain.parseoutcomes() == {"passed": 2, "errors": 1}, out
    assert re.search(r"^_+ ERROR at teardown of test_two _+$", out, re.M), out
    assert "test_three" not in out.partition("short test summary info")[2], out


@pytest.mark.parametrize("last", ["same", "other", "local"])
def test_a_teardown_error_at_the_end_of_an_xdist_worker_is_an_error(
    pytester: pytest.Pytester, last: str
) -> None:
    """The worker's last test: plain ``pytest -n 1`` tears the module down in its teardown
    and reports the error there. The replica, fed one test at a time, tore the module down
    after the worker's end, where no test's report could carry the error: a warning, and the
    run ended green (xdist counts reports, not the worker's exit status). When the worker's
    last test runs in another environment (``other``) or in the pytest process (``local``),
    the module's replica tears down before it and the error goes with that test's teardown,
    naming the test it came after."""
    pytester.makeini(ini("reuse_replicas = 1"))
    files = {"test_a_mod": TEARDOWN_ERROR_SUITE}
    if last == "other":
        files["test_b_mod"] = AFTER_SUITE.replace(
            "pytest.mark.reuse\n", "pytest.mark.reuse(scaledown_ttl=45)\n"
        )
    elif last == "local":
        files["test_z_local"] = "def test_local():\n    pass\n"
    pytester.makepyfile(**files)
    plain = run(pytester, "-rA", "-n", "1", "--reuse=off")
    result = run(pytester, "-rA", "-n", "1")
    out = result.stdout.str()
    assert result.ret == plain.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == plain.parseoutcomes(), out
    assert "module-fixture-teardown-boom" in out, out
    carrier = {"same": "test_two", "other": "test_four", "local": "test_local"}[last]
    assert re.search(rf"^_+ ERROR at teardown of {carrier} _+$", out, re.M), out
    if last != "same":
        assert "after test_a_mod.py::test_two, when its module or class was torn down" in out


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_a_warm_replicas_teardown_error_from_its_last_run_fails_this_one(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    """A global replica keeps the module its last run ended in; this run's first test is in
    another module, so that module's teardown fails before any test of this run: no test
    can carry it, it is a warning, and the run exits 1. Under ``pytest -n 1`` the worker
    exited 1 and xdist's controller, which counts reports only, exited 0."""
    pytester.makeini("[pytest]\nreuse_scope = global\nreuse_replicas = 1\n")
    pytester.makepyfile(test_a_mod=TEARDOWN_ERROR_SUITE, test_b_mod=AFTER_SUITE)
    n = ["-n", "1"] if xdist else []
    with replicas_stopped(pytester):
        first = run(pytester, "-p", "no:randomly", *n, "-k", "test_one or test_two")
        assert first.ret == pytest.ExitCode.OK, first.stdout.str()
        result = run(pytester, "-p", "no:randomly", *n, "-k", "test_three")
    out = result.stdout.str()
    assert "1 attached warm" in out, out
    assert "fixture teardown failed in replica" in out, out
    assert "module-fixture-teardown-boom" in out, out
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes()["passed"] == 1, out


@pytest.mark.parametrize("stop", ["-x", "--maxfail=2"])
def test_module_fixture_teardown_error_one_test_at_a_time_never_makes_a_green_run(
    pytester: pytest.Pytester, stop: str
) -> None:
    # Run one test at a time (-x), a replica tears the module down between tests or at its
    # end, where no test's teardown report can carry the error: it was a warning and exit 0
    # where plain pytest reports an error and exits 1 (found by a sweep).
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_a_mod=TEARDOWN_ERROR_SUITE)
    plain = run(pytester, "-p", "no:randomly", "--reuse=off", stop)
    assert plain.ret == pytest.ExitCode.TESTS_FAILED, plain.stdout.str()
    result = run(pytester, "-p", "no:randomly", stop)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*module-fixture-teardown-boom*"])
