"""End to end: replicas start when they should, tear down at the end, and never outlive the run.

Covers fixture finalizers at the end of the run, Ctrl-C, ``--reuse=off``, ``--collect-only``,
pytest-xdist and plugin loading (``-p reuse_env`` with autoload disabled, autoload alone).
Replica processes are found by the pids they write from a session fixture, and must be gone once
the inner run has ended.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import NOISE_OFF, PLUGIN_ARGS, run

# pytest-asyncio, when installed, warns at configure time about an unset ini key of its own;
# hypothesis and anyio only cost start-up time in every inner run and replica.
#: How long replicas may take to disappear once the run that started them has ended.
GONE_SECONDS = 5.0

EVENTS_CONFTEST = """
import os
from pathlib import Path

import pytest

EVENTS = Path(__file__).with_name("events.txt")

if os.environ.get("PYTEST_REUSE_REPLICA"):
    # Imported by every replica as it starts: a replica that never ran a test still shows.
    with Path(__file__).with_name("replica_starts.txt").open("a") as f:
        f.write(f"{os.getpid()}\\n")


def log(*words):
    with EVENTS.open("a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")


@pytest.fixture(scope="session", autouse=True)
def session_resource():
    log("session-setup", os.getpid())
    yield
    log("session-teardown", os.getpid())


@pytest.fixture(scope="module", autouse=True)
def module_resource(request):
    log("module-setup", os.getpid(), request.module.__name__)
    yield
    log("module-teardown", os.getpid(), request.module.__name__)


@pytest.fixture(autouse=True)
def record(request):
    log("test", os.getpid(), request.node.name, os.environ.get("PYTEST_REUSE_REPLICA", "-"))
"""


def events(pytester: pytest.Pytester) -> list[list[str]]:
    path = pytester.path / "events.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def replica_starts(pytester: pytest.Pytester) -> list[int]:
    path = pytester.path / "replica_starts.txt"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(pids: set[int], within: float = GONE_SECONDS) -> None:
    deadline = time.monotonic() + within
    left = {pid for pid in pids if alive(pid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if alive(pid)}
    assert not left, f"replica processes still running after the run: {sorted(left)}"


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", "reuse_scope = run", *lines]) + "\n"


MARKED_MODULE = """
import os

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range({count}))
def test_marked(n):
    assert os.environ.get("PYTEST_REUSE_REPLICA")
"""

LOCAL_MODULE = """
import os


def test_local_one():
    assert "PYTEST_REUSE_REPLICA" not in os.environ


def test_local_two():
    assert "PYTEST_REUSE_REPLICA" not in os.environ
"""


# -- the end of a run --------------------------------------------------------------------------


def test_replica_finalizers_run_at_the_end_and_replicas_exit(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 2"))
    pytester.makeconftest(EVENTS_CONFTEST)
    pytester.makepyfile(
        test_first=MARKED_MODULE.format(count=4),
        test_second=MARKED_MODULE.format(count=4),
        test_local=LOCAL_MODULE,
    )

    result = run(pytester)
    assert result.parseoutcomes() == {"passed": 10}, result.stdout.str()
    assert result.ret == pytest.ExitCode.OK

    log = events(pytester)
    controller = {int(e[1]) for e in log if e[0] == "test" and e[3] == "-"}
    assert len(controller) == 1, log
    replicas = {int(e[1]) for e in log if e[0] == "test" and e[3] != "-"}
    assert 1 <= len(replicas) <= 2, log
    assert not replicas & controller
    assert set(replica_starts(pytester)) >= replicas
    for pid in replicas | controller:
        mine = [e for e in log if int(e[1]) == pid]
        # Set up once, torn down once, after the last test that process ran.
        assert [e[0] for e in mine].count("session-setup") == 1, mine
        assert [e[0] for e in mine].count("session-teardown") == 1, mine
        assert mine[-1][0] == "session-teardown", mine
        setups = sorted(e[2] for e in mine if e[0] == "module-setup")
        teardowns = sorted(e[2] for e in mine if e[0] == "module-teardown")
        assert setups == teardowns, mine
    assert_gone(set(replica_starts(pytester)))


SLOW_EXIT_CONFTEST = (
    EVENTS_CONFTEST
    + """

def pytest_unconfigure(config):
    if os.environ.get("PYTEST_REUSE_REPLICA"):
        import time

        time.sleep(1.5)  # after its fixtures are torn down: nothing the run has to wait for
        log("replica-exit", os.getpid())


def pytest_terminal_summary(terminalreporter):
    log("summary", os.getpid())
"""
)


def test_the_run_reports_while_its_replicas_exit_and_reaps_them(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makeconftest(SLOW_EXIT_CONFTEST)
    pytester.makepyfile(test_first=MARKED_MODULE.format(count=3))

    result = run(pytester)
    assert result.parseoutcomes() == {"passed": 3}, result.stdout.str()
    (replica,) = replica_starts(pytester)
    assert not alive(replica), "reaped (asked, waited for, by pid) before the run ended"
    order = [(e[0], int(e[1])) for e in events(pytester) if e[0] != "test"]
    assert order.index(("session-teardown", replica)) < order.index(("replica-exit", replica))
    (summary,) = [pid for what, pid in order if what == "summary"]
    assert summary != replica, "a replica prints no summary: nobody reads its terminal"
    # The run's summary did not wait for the replica's pytest session to end.
    assert order.index(("summary", summary)) < order.index(("replica-exit", replica)), order


INTERRUPT_SUITE = """
import os
import time
from pathlib import Path

import pytest


@pytest.mark.reuse
def test_sleeps():
    Path("replica_pid.txt").write_text(str(os.getpid()))
    time.sleep(60)
"""


def test_ctrl_c_stops_the_run_and_its_replicas(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_interrupt=INTERRUPT_SUITE)
    pid_file = pytester.path / "replica_pid.txt"
    output = pytester.path / "output.txt"

    with output.open("w") as out:
        controller = pytester.popen(
            [
                sys.executable,
                "-m",
                "pytest",
                f"--basetemp={pytester.path / 'basetemp'}",
                *PLUGIN_ARGS,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=pytester.path,
        )
        try:
            deadline = time.monotonic() + 30
            while not pid_file.exists() or not pid_file.read_text():
                assert controller.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the replica never started the test"
                time.sleep(0.05)
            replica_pid = int(pid_file.read_text())
            assert replica_pid != controller.pid

            interrupted = time.monotonic()
            controller.send_signal(signal.SIGINT)
            try:
                code = controller.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the controller ignored Ctrl-C for 15 s:\n{output.read_text()}")
            took = time.monotonic() - interrupted
        finally:
            if controller.poll() is None:
                controller.kill()
                controller.wait()
    text = output.read_text()
    assert code == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text
    assert took < 15
    assert_gone({replica_pid})


# -- runs that start no replica ------------------------------------------------------------------


def test_reuse_off_and_collect_only_start_no_replica(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 2", "reuse_all = default"))
    pytester.makeconftest(EVENTS_CONFTEST)
    pytester.makepyfile(
        test_marked="""
        import os

        import pytest


        @pytest.mark.reuse
        def test_marked():
            assert "PYTEST_REUSE_REPLICA" not in os.environ


        def test_unmarked_under_reuse_all():
            assert "PYTEST_REUSE_REPLICA" not in os.environ
        """
    )

    off = run(pytester, "--reuse=off", "-v")
    assert off.parseoutcomes() == {"passed": 2}, off.stdout.str()
    assert "[r0" not in off.stdout.str()
    pids = {int(e[1]) for e in events(pytester)}
    assert len(pids) == 1, events(pytester)
    assert replica_starts(pytester) == []

    collected = run(pytester, "--collect-only", "-q")
    assert collected.ret == pytest.ExitCode.OK, collected.stdout.str()
    collected.stdout.fnmatch_lines(
        ["test_marked.py::test_marked", "test_marked.py::test_unmarked_under_reuse_all"]
    )
    assert replica_starts(pytester) == []


# -- xdist and plugin loading --------------------------------------------------------------------


def test_under_xdist_workers(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makeconftest(EVENTS_CONFTEST)
    pytester.makepyfile(test_first=MARKED_MODULE.format(count=6), test_local=LOCAL_MODULE)

    started = time.monotonic()
    result = run(pytester, "-n", "2", "-p", "xdist")
    took = time.monotonic() - started
    assert result.parseoutcomes() == {"passed": 8}, result.stdout.str()
    assert result.ret == pytest.ExitCode.OK
    # Each worker's replica is told the run is done: the end never waits out the 30 s idle_ttl.
    assert took < 20, f"the run took {took:.1f} s"

    log = events(pytester)
    tests = [e for e in log if e[0] == "test"]
    assert sorted(e[2] for e in tests) == sorted(
        [f"test_marked[{n}]" for n in range(6)] + ["test_local_one", "test_local_two"]
    )
    replicas = {int(e[1]) for e in tests if e[3] != "-"}
    workers = {int(e[1]) for e in tests if e[3] == "-"}
    assert replicas, log
    assert not replicas & workers
    # Every replica's session fixture was torn down, and every replica exited.
    for pid in replicas:
        assert ["session-teardown", str(pid)] in log, log
    assert_gone(set(replica_starts(pytester)) | replicas)


AUTOLOAD_SUITE = """
import os

import pytest


@pytest.mark.reuse
def test_marked():
    assert os.environ.get("PYTEST_REUSE_REPLICA")


def test_local():
    assert "PYTEST_REUSE_REPLICA" not in os.environ
"""


@pytest.mark.parametrize(
    ("disable_autoload", "args"),
    [
        pytest.param(True, PLUGIN_ARGS, id="autoload-disabled-with-p"),
        pytest.param(False, NOISE_OFF, id="autoload-without-p"),
    ],
)
def test_plugin_loading(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    disable_autoload: bool,
    args: tuple[str, ...],
) -> None:
    if disable_autoload:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    else:
        monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makeini(ini("reuse_replicas = 1"))
    pytester.makepyfile(test_autoload=AUTOLOAD_SUITE)

    result = run(pytester, "-v", plugins=args)
    out = result.stdout.str()
    assert result.parseoutcomes() == {"passed": 2}, out
    assert "PASSED test_autoload.py::test_marked" in out
    assert "[r0" in out
    if disable_autoload:
        # Only what -p names is loaded: pytest-xdist and pytest-timeout are not.
        plugins = next(line for line in result.outlines if line.startswith("plugins:"))
        assert "reuse-env" in plugins
        assert "xdist" not in plugins
        assert "timeout" not in plugins


def test_verify_cold_under_xdist_says_it_cannot(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.reuse\ndef test_a():\n    pass\n")
    result = run(pytester, "-n", "1", "--reuse-verify-cold")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*--reuse-verify-cold has no effect under pytest -n*"])
