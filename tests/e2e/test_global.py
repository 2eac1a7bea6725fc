"""End to end: ``scope="global"`` replicas that stay warm across pytest runs.

Real detached replicas in a pytester directory: a second run attaches to the first run's
replicas, replicas are detached from the run that started them, only their owner can talk to
them, any edit that could change what they imported retires them, TTLs hold with no pytest
running, concurrent runs share them within ``max``, and broken state on disk or a dead replica
never fails a run.

Every inner run is bounded, every wait for a process is a poll with a deadline, and every test
ends its replicas with ``--reuse-stop`` and then checks by pid that they are gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_reuse_env.channel import connect
from tests.helpers import (
    PLUGIN_ARGS,
    RUN_TIMEOUT,
    WAIT_SECONDS,
    alive,
    replica_pids,
    replicas_stopped,
    run,
    wait_for,
)

# pytest-asyncio, when installed, warns at configure time about an unset ini key of its own;
# hypothesis and anyio only cost start-up time in every inner run and replica.
#: Bound of every wait for a replica to exit, go idle or appear.

REPLICA_LINE = re.compile(r"^\s+(g-[0-9a-f]{8})\s+pid (\d+)\s+(\w+)", re.MULTILINE)

CONFTEST = """
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def warm():
    with (HERE / "setups.txt").open("a") as f:
        f.write(f"{os.getpid()}\\n")
    yield os.getpid()
    with (HERE / "teardowns.txt").open("a") as f:
        f.write(f"{os.getpid()}\\n")
"""

SIX_TESTS = """
import os
import time

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(6))
def test_warm(warm, n):
    assert os.environ["PYTEST_REUSE_REPLICA"].startswith("g-")
    assert warm == os.getpid()
    time.sleep(0.3)  # long enough for both replicas to get tests
"""


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Short test summary lines are cut to the terminal width: keep the messages whole.
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("PYTEST_REUSE_ENV_ALLOW_SHORT_TTL", "1")
    # Edits between runs within one second must never be hidden by a stale .pyc.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("MY_FLAG", raising=False)


# -- helpers -------------------------------------------------------------------------------------


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", *lines]) + "\n"


_reports = iter(range(1_000_000))


def run_report(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """A run with ``--reuse-report``; returns the result and the report's only environment."""
    path = pytester.path / f"report-{next(_reports)}.json"
    result = run(pytester, f"--reuse-report={path}", *args)
    assert path.exists(), result.stdout.str() + result.stderr.str()
    document = json.loads(path.read_text())
    environments = document["environments"]
    assert len(environments) == 1, environments
    env: dict[str, Any] = environments[0]
    env["tests"] = document["tests"]
    return result, env


def pytest_command(pytester: pytest.Pytester, *args: str) -> list[str]:
    basetemp = pytester.path / f"basetemp-{next(_reports)}"
    return [sys.executable, "-m", "pytest", f"--basetemp={basetemp}", *PLUGIN_ARGS, *args]


def pytest_environ(pytester: pytest.Pytester) -> dict[str, str]:
    """The environment ``runpytest_subprocess`` gives its run (PYTHONPATH counts for the
    fingerprint): a Popen run shares the environment of the pytester runs."""
    pythonpath = os.pathsep.join(filter(None, [str(pytester.path), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=pythonpath)


def registry_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".pytest_cache" / "reuse"


def records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    """The registry's records as stored (no pruning), [] when there is no registry file."""
    path = registry_dir(pytester) / "registry.json"
    for _ in range(50):
        try:
            data: list[dict[str, Any]] = json.loads(path.read_text())["replicas"]
        except FileNotFoundError:
            return []
        except ValueError:
            time.sleep(0.02)  # another process is between write and replace: never, but be safe
            continue
        return data
    raise AssertionError(f"{path} stays unreadable")


def lines_of(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> Callable[[], bool]:
    return lambda: not alive(pid)


def status(pytester: pytest.Pytester) -> tuple[pytest.RunResult, dict[str, tuple[int, str]]]:
    """``--reuse-status`` and the replicas it lists: ``{id: (pid, state)}``."""
    result = run(pytester, "--reuse-status")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    listed = {
        m.group(1): (int(m.group(2)), m.group(3))
        for m in REPLICA_LINE.finditer(result.stdout.str())
    }
    return result, listed


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester directory whose replicas are stopped (and checked gone) at the end."""
    pytester.makeconftest(CONFTEST)
    with replicas_stopped(pytester):
        yield pytester


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


# -- 1. two runs in a row ------------------------------------------------------------------------


def test_second_run_attaches_warm_and_stop_runs_finalizers(project: pytest.Pytester) -> None:
    # No reuse_scope: global is the default (and replicas=2). Pre-warming sets the session
    # fixture up in both replicas, however the four tests are spread over them.
    project.makefile(".ini", pytest=ini("reuse_prewarm = warm"))
    project.makepyfile(test_a=SIX_TESTS)

    first, env1 = run_report(project)
    first.assert_outcomes(passed=6)
    assert env1["replicas_started"] == 2
    assert env1["replicas_attached"] == 0
    assert len({test["replica"] for test in env1["tests"].values()}) == 2, env1["tests"]
    setups = lines_of(project.path / "setups.txt")
    assert len(setups) == 2, setups
    assert all(alive(pid) for pid in setups)
    first.stdout.fnmatch_lines(["*reuse: 2 replicas stay warm*'pytest --reuse-stop'*"])
    assert not (project.path / "teardowns.txt").exists()  # still warm: nothing torn down

    second, env2 = run_report(project)
    second.assert_outcomes(passed=6)
    assert env2["replicas_started"] == 0
    assert env2["replicas_attached"] == 2
    assert lines_of(project.path / "setups.txt") == setups  # the session fixture stayed up
    assert {r["pid"] for r in env2["replicas"]} == set(setups)
    assert all(test["warm"] for test in env2["tests"].values()), env2["tests"]
    assert len(env2["tests"]) == 6
    second.stdout.fnmatch_lines(["*0 replicas started, 2 attached warm*"])
    second.stdout.fnmatch_lines(["*reuse: 2 replicas stay warm*'pytest --reuse-stop'*"])

    _, listed = status(project)
    assert sorted(pid for pid, _ in listed.values()) == sorted(setups)
    assert {state for _, state in listed.values()} == {"idle"}

    result = run(project, "--reuse-stop")
    assert result.ret == 0
    for pid in setups:
        result.stdout.fnmatch_lines([f"stopped g-* (pid {pid}); its finalizers ran"])
    assert wait_for(lambda: not any(alive(pid) for pid in setups))
    assert sorted(lines_of(project.path / "teardowns.txt")) == sorted(setups)
    assert records(project) == []
    _, listed = status(project)
    assert listed == {}


# -- 2. detached and quiet -----------------------------------------------------------------------

SLEEPER_TESTS = """
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse


def test_quick(warm):
    assert warm == os.getpid()


def publish(name, text):
    # Written whole, then renamed: a reader polling for the file never sees it empty.
    Path(name + ".tmp").write_text(text)
    os.replace(name + ".tmp", name)


def test_sleeper(warm):
    publish("started.txt", str(os.getpid()))
    try:
        time.sleep(30)
    except BaseException as exc:
        publish("aborted.txt", type(exc).__name__)
        raise
"""


def only_record(pytester: pytest.Pytester) -> dict[str, Any]:
    found = records(pytester)
    assert len(found) == 1, found
    return found[0]


def fd_target(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def test_replica_is_detached_from_the_run_that_started_it(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_scope = global", "reuse_replicas = 1"))
    project.makepyfile(test_a=SLEEPER_TESTS)

    # Reading the run's pipes to EOF ends when pytest exits: the replica holds none of them.
    started = time.monotonic()
    with subprocess.Popen(
        pytest_command(project, "-k", "quick"),
        cwd=project.path,
        env=pytest_environ(project),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as popen:
        try:
            out, err = popen.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.communicate(timeout=10)
            raise AssertionError("the run's pipes stayed open: a replica holds them") from None
    assert popen.returncode == 0, out.decode() + err.decode()
    assert time.monotonic() - started < 30
    assert b"1 passed" in out
    assert re.search(rb"reuse: 1 replica stays? warm for the next run", out), out

    record = only_record(project)
    pid = record["pid"]
    assert alive(pid), "the replica did not outlive the run"
    assert record["state"] == "idle"
    # A session of its own: not the run's (which was its own session leader), not ours.
    assert os.getsid(pid) != popen.pid
    assert os.getsid(pid) != os.getsid(0)
    assert os.getpgid(pid) != popen.pid
    assert fd_target(pid, 0) == os.devnull
    for fd in (1, 2):
        target = fd_target(pid, fd)
        assert not target.startswith("pipe:"), target
        assert target == record["log"], target

    # Ctrl-C in the run's terminal (SIGINT to its process group) mid-test ends the run, not
    # the replica: the replica abandons that test and is idle again for the next run.
    with subprocess.Popen(
        pytest_command(project, "-k", "sleeper"),
        cwd=project.path,
        env=pytest_environ(project),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as popen:
        try:
            assert wait_for((project.path / "started.txt").exists, RUN_TIMEOUT), "never started"
            os.killpg(popen.pid, signal.SIGINT)
            out, _ = popen.communicate(timeout=RUN_TIMEOUT)
        finally:
            if popen.poll() is None:
                popen.kill()
                popen.communicate(timeout=10)
    assert popen.returncode == pytest.ExitCode.INTERRUPTED, out.decode()
    assert int((project.path / "started.txt").read_text()) == pid
    assert alive(pid), "Ctrl-C in the run's terminal killed the replica"
    assert wait_for(lambda: (project.path / "aborted.txt").exists()), "the test was not aborted"
    assert (project.path / "aborted.txt").read_text() == "ClientGone"
    assert wait_for(lambda: only_record(project)["state"] == "idle")

    started = time.monotonic()
    result, env = run_report(project, "-k", "quick")
    result.assert_outcomes(passed=1)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    assert env["replicas"][0]["pid"] == pid
    assert time.monotonic() - started < 20  # not stuck behind the abandoned 30 s sleep
    assert lines_of(project.path / "setups.txt") == [pid]


# -- 3. only the owner, with the token, gets in ----------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end closes (EOF or reset); waits at most 5 s."""
    sock.settimeout(5)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_only_the_owner_with_the_token_may_connect(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=SLEEPER_TESTS)
    result, env = run_report(project, "-k", "quick")
    result.assert_outcomes(passed=1)
    assert env["replicas_started"] == 1

    registry = registry_dir(project)
    record = only_record(project)
    sock_path = Path(record["socket"])
    assert mode(registry) == 0o700
    assert mode(sock_path.parent) == 0o700
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    assert mode(sock_path) == 0o600
    assert mode(registry / "token") == 0o600
    assert mode(registry / "registry.json") == 0o600
    token = (registry / "token").read_text().strip()
    assert len(token) == 64

    with pytest.raises(OSError, match="refused"):
        connect(str(sock_path), "wrong-token", 5)
    with pytest.raises(OSError, match="refused"):
        connect(str(sock_path), "0" * 64, 5)

    # Garbage instead of a handshake: a frame too large to be one, text that is no frame at
    # all, and a well-formed frame that is not execnet data must each be closed by the replica.
    for garbage in (b"\xff\xff\xff\xff" + b"x" * 64, b"GET / HTTP/1.0", b"\x00\x00\x00\x05hello"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(5)
            raw.connect(str(sock_path))
            raw.sendall(garbage)
            if garbage.startswith(b"GET"):
                raw.shutdown(socket.SHUT_WR)  # the length prefix can never complete
            assert closed_by_peer(raw), f"the replica kept a connection that sent {garbage!r}"

    assert alive(record["pid"])
    assert only_record(project)["state"] == "idle"
    # It keeps serving its owner: the next run attaches and runs warm.
    result, env = run_report(project, "-k", "quick")
    result.assert_outcomes(passed=1)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    assert env["replicas"][0]["pid"] == record["pid"]
    # And the right token still gets in (it answers, then we hang up).
    channel = connect(str(sock_path), token, 5)
    channel.close()
    result, env = run_report(project, "-k", "quick")
    result.assert_outcomes(passed=1)
    assert env["replicas_attached"] == 1


# -- 4. never stale ------------------------------------------------------------------------------

STALE_CONFTEST = (
    CONFTEST
    + """

MARK = "c1"


@pytest.fixture
def conftest_mark():
    return MARK
"""
)

STALE_TESTS = """
import os
from pathlib import Path

import pytest

import helper

pytestmark = pytest.mark.reuse

TEST_MARK = "t1"


def test_observe(warm, conftest_mark):
    Path("observed.txt").write_text(f"{helper.VALUE} {conftest_mark} {TEST_MARK} {os.getpid()}")
"""


def observed(pytester: pytest.Pytester) -> tuple[str, int]:
    *values, pid = (pytester.path / "observed.txt").read_text().split()
    return " ".join(values), int(pid)


def test_any_edit_retires_the_warm_replica(project: pytest.Pytester) -> None:
    # reuse_reload = off: today's rule (tests/e2e/test_reload.py covers re-importing).
    project.makefile(".ini", pytest=ini("reuse_replicas = 1", "reuse_reload = off"))
    project.makeconftest(STALE_CONFTEST)
    project.makepyfile(helper="VALUE = 1\n", test_a=STALE_TESTS)
    result, env = run_report(project, "-v")
    result.assert_outcomes(passed=1)
    assert env["replicas_started"] == 1
    values, pid = observed(project)
    assert values == "1 c1 t1"

    # A run with no edit attaches: the control for every step below.
    result, env = run_report(project, "-v")
    result.assert_outcomes(passed=1)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    assert observed(project) == (values, pid)
    result.stdout.no_fnmatch_line("*is stale*")

    conftest = project.path / "conftest.py"
    test_a = project.path / "test_a.py"
    helper = project.path / "helper.py"
    steps: list[tuple[Callable[[], object], str, str]] = [
        (
            lambda: conftest.write_text(conftest.read_text().replace('"c1"', '"c22"')),
            "conftest.py changed (reuse_reload = off)",
            "1 c22 t1",
        ),
        (
            lambda: test_a.write_text(test_a.read_text().replace('"t1"', '"t333"')),
            "test_a.py changed (reuse_reload = off)",
            "1 c22 t333",
        ),
        (
            lambda: helper.write_text("VALUE = 4444\n"),
            "helper.py changed (reuse_reload = off)",
            "4444 c22 t333",
        ),
        (
            lambda: project.makepyfile(
                test_b="import pytest\n\n\n@pytest.mark.reuse\ndef test_new(warm):\n    pass\n"
            ),
            "test_b.py changed (reuse_reload = off)",
            "4444 c22 t333",
        ),
    ]
    teardowns: list[int] = []
    for edit, why, expected in steps:
        edit()
        result, env = run_report(project, "-v")
        out = result.stdout.str()
        assert result.ret == 0, out
        result.stdout.fnmatch_lines(
            [f"reuse: replica g-* is stale ({why}); starting afresh"], consecutive=False
        )
        assert env["replicas_started"] == 1, (why, env)
        new_values, new_pid = observed(project)
        assert new_values == expected, why
        assert new_pid != pid, f"{why}: the stale replica ran the test"
        assert wait_for(gone(pid)), f"{why}: the stale replica {pid} still runs"
        teardowns.append(pid)
        assert lines_of(project.path / "teardowns.txt") == teardowns, why  # finalizer ran
        pid = new_pid
    assert len(records(project)) == 1
    result.assert_outcomes(passed=2)

    result, env = run_report(project, "-v")
    result.assert_outcomes(passed=2)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    result.stdout.no_fnmatch_line("*is stale*")


FLAG_TESTS = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse


def test_flag(warm):
    Path("flag.txt").write_text(f"{os.environ.get('MY_FLAG')} {os.getpid()}")


def test_other(warm):
    pass
"""


def test_environment_variables_and_options_decide_the_environment(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1", "reuse_env_vars = MY_FLAG"))
    project.makepyfile(test_a=FLAG_TESTS)

    def flag() -> tuple[str, int]:
        value, pid = (project.path / "flag.txt").read_text().split()
        return value, int(pid)

    monkeypatch.setenv("MY_FLAG", "a")
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert env["replicas_started"] == 1
    value, pid_a = flag()
    assert value == "a"

    monkeypatch.setenv("MY_FLAG", "b")
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert (env["replicas_started"], env["replicas_attached"]) == (1, 0)
    value, pid_b = flag()
    assert (value, pid_b != pid_a) == ("b", True)
    # The other environment's replica is left alone, idle until its TTL.
    assert alive(pid_a)
    assert {(r["pid"], r["state"]) for r in records(project)} == {(pid_a, "idle"), (pid_b, "idle")}

    # Selection and verbosity do not shape the environment: still warm.
    for options in (["-k", "flag"], ["-v"], ["-q", "-k", "flag or other"]):
        result, env = run_report(project, *options)
        assert result.ret == 0, options
        assert (env["replicas_started"], env["replicas_attached"]) == (0, 1), options
        assert flag() == ("b", pid_b), options

    monkeypatch.setenv("MY_FLAG", "a")
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    assert flag() == ("a", pid_a)
    assert sorted(lines_of(project.path / "setups.txt")) == sorted([pid_a, pid_b])


# -- 5. TTLs with no pytest running --------------------------------------------------------------


def test_ttls_end_replicas_with_no_pytest_running(project: pytest.Pytester) -> None:
    project.makefile(
        ".ini",
        pytest=ini(
            "reuse_replicas = (1, 2)",
            "reuse_idle_ttl = 3s",
            "reuse_scaledown_ttl = 1s",
            "reuse_prewarm = warm",
        ),
    )
    project.makepyfile(test_a=SIX_TESTS)
    result, env = run_report(project)
    ended = time.monotonic()
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*reuse: 2 replicas stay warm*(each ends after 3 s without*"])
    pids = {r["pid"] for r in env["replicas"]}
    assert len(pids) == env["replicas_started"] == 2, env
    assert set(lines_of(project.path / "setups.txt")) == pids

    # Polled, not slept: first scaledown takes one (after 1 s idle), then idle_ttl the other.
    counts: list[tuple[float, int]] = []
    deadline = ended + WAIT_SECONDS
    while time.monotonic() < deadline:
        left = sum(alive(pid) for pid in pids)
        counts.append((time.monotonic() - ended, left))
        if not left:
            break
        time.sleep(0.1)
    assert counts[-1][1] == 0, f"replicas outlived their TTLs: {counts[-5:]}"
    assert any(left == 1 for _, left in counts), f"no scaledown before the idle TTL: {counts}"
    all_gone = counts[-1][0]
    assert all_gone > 2.0, f"gone after {all_gone:.1f} s: the 3 s idle TTL was not honoured"
    assert sorted(lines_of(project.path / "teardowns.txt")) == sorted(pids)  # finalizers ran
    assert records(project) == []
    _, listed = status(project)
    assert listed == {}


def test_run_scope_leaves_nothing_behind(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_scope = run"))
    project.makepyfile(
        test_a="""
        import os

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.mark.parametrize("n", range(4))
        def test_local_replica(warm, n):
            assert not os.environ["PYTEST_REUSE_REPLICA"].startswith("g-")
        """
    )
    result, env = run_report(project)
    result.assert_outcomes(passed=4)
    assert env["replicas_attached"] == 0
    result.stdout.no_fnmatch_line("*stay warm*")
    assert wait_for(lambda: not replica_pids(project.path), 5)
    setups = lines_of(project.path / "setups.txt")
    assert setups
    assert sorted(lines_of(project.path / "teardowns.txt")) == sorted(setups)
    assert records(project) == []
    result, env = run_report(project)
    assert env["replicas_attached"] == 0
    assert env["replicas_started"] >= 1


# -- 6. shared safely ----------------------------------------------------------------------------


class Sampler:
    """Counts replica processes and registry records in a background thread."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.peak_processes = 0
        self.peak_records = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_processes = max(self.peak_processes, len(replica_pids(self.pytester.path)))
            self.peak_records = max(self.peak_records, len(records(self.pytester)))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def popen_run(pytester: pytest.Pytester, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        pytest_command(pytester, *args),
        cwd=pytester.path,
        env=pytest_environ(pytester),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def finish(popen: subprocess.Popen[bytes]) -> str:
    try:
        out, _ = popen.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        popen.kill()
        out, _ = popen.communicate(timeout=10)
        raise AssertionError(f"run did not end:\n{out.decode()}") from None
    return out.decode()


def test_simultaneous_runs_share_at_most_max_replicas(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 2", "reuse_prewarm = warm"))
    project.makepyfile(
        test_a="""
        import os
        import time

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.mark.parametrize("n", range(4))
        def test_shared(warm, n):
            assert warm == os.getpid()
            time.sleep(0.2)
        """
    )
    with Sampler(project) as sampler:
        runs = [popen_run(project), popen_run(project)]
        outputs = [finish(popen) for popen in runs]
    for popen, out in zip(runs, outputs, strict=True):
        assert popen.returncode == 0, out
        assert "4 passed" in out, out
    assert sampler.samples > 5
    assert sampler.peak_processes <= 2, sampler.peak_processes
    assert sampler.peak_records <= 2, sampler.peak_records
    setups = lines_of(project.path / "setups.txt")
    # Failed once under load with four setups (two pairs of pids, never more than two alive):
    # what each run said and what the registry and the teardowns show, for the next time.
    assert 1 <= len(setups) <= 2, (
        setups,
        lines_of(project.path / "teardowns.txt"),
        records(project),
        outputs,
    )
    assert len(records(project)) == len(setups)
    assert {r["state"] for r in records(project)} == {"idle"}


def test_killed_client_frees_its_replica(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=SLEEPER_TESTS)
    popen = popen_run(project, "-k", "sleeper")
    try:
        assert wait_for((project.path / "started.txt").exists, RUN_TIMEOUT), "never started"
        popen.kill()  # SIGKILL: no chance to say goodbye
        popen.communicate(timeout=10)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.communicate(timeout=10)
    pid = int((project.path / "started.txt").read_text())
    killed_at = time.monotonic()
    # The replica abandons the 30 s test at once and is idle again, well within the sleep.
    assert wait_for(lambda: (project.path / "aborted.txt").exists(), 10), "test not aborted"
    assert (project.path / "aborted.txt").read_text() == "ClientGone"
    assert wait_for(lambda: only_record(project)["state"] == "idle", 10)
    assert only_record(project)["lease_owner"] is None
    assert alive(pid)
    result, env = run_report(project, "-k", "quick")
    result.assert_outcomes(passed=1)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
    assert env["replicas"][0]["pid"] == pid
    assert time.monotonic() - killed_at < 20
    assert lines_of(project.path / "setups.txt") == [pid]


def test_xdist_workers_share_the_replicas(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 2", "reuse_prewarm = warm"))
    project.makepyfile(test_a=SIX_TESTS)
    with Sampler(project) as sampler:
        result, env = run_report(project, "-n", "2")
    result.assert_outcomes(passed=6)
    assert sampler.peak_processes <= 2, sampler.peak_processes
    setups = lines_of(project.path / "setups.txt")
    assert 1 <= len(setups) <= 2, setups
    assert env["replicas_started"] == len(setups)
    assert {t["outcome"] for t in env["tests"].values()} == {"passed"}
    assert len(env["tests"]) == 6
    warm_pids = {r["pid"] for r in records(project)}
    assert warm_pids == set(setups)
    assert all(alive(pid) for pid in warm_pids)

    with Sampler(project) as sampler:
        result, env = run_report(project, "-n", "2")
    result.assert_outcomes(passed=6)
    assert sampler.peak_processes <= 2, sampler.peak_processes
    assert env["replicas_started"] == 0
    assert lines_of(project.path / "setups.txt") == setups
    attached = [r for r in env["replicas"] if r["attached"]]
    assert attached
    assert {r["pid"] for r in attached} <= set(setups)
    assert env["replicas_attached"] == len(attached), env
    assert len(env["tests"]) == 6


def test_plain_and_xdist_runs_share_one_environment(project: pytest.Pytester) -> None:
    """xdist's workers set distribution options of their own (loadgroup): those must not make
    their environment differ from a plain run's."""
    project.makefile(".ini", pytest=ini("reuse_replicas = 2", "reuse_prewarm = warm"))
    project.makepyfile(test_a=SIX_TESTS)
    result, env = run_report(project)
    result.assert_outcomes(passed=6)
    setups = lines_of(project.path / "setups.txt")
    assert env["replicas_started"] == len(setups) == 2
    result, env = run_report(project, "-n", "2")
    result.assert_outcomes(passed=6)
    assert env["replicas_started"] == 0, env
    assert lines_of(project.path / "setups.txt") == setups
    assert len(records(project)) == 2
    result, env = run_report(project)
    result.assert_outcomes(passed=6)
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 2)


MIXED_SCOPES = """
import pytest


@pytest.mark.reuse
def test_warm():
    pass


@pytest.mark.reuse("solo")
def test_run_scoped():
    pass
"""


def test_warm_replicas_survive_a_run_that_also_ends_run_scoped_ones(
    project: pytest.Pytester,
) -> None:
    """The end of a run waits for its run-scoped replicas to exit; the warm ones it released
    meanwhile must not be taken for them (their close is our own disconnect)."""
    project.makefile(
        ".ini", pytest=ini("reuse_replicas = 1", "reuse_policies =\n    solo: scope=run")
    )
    project.makepyfile(test_mixed=MIXED_SCOPES)
    result = run(project)
    result.assert_outcomes(passed=2)
    (first,) = records(project)
    for _ in range(3):
        result = run(project)
        result.assert_outcomes(passed=2)
        assert "1 replica stays warm" in result.stdout.str()
        assert alive(first["pid"]), "the run killed the warm replica it had just released"
        assert [r["pid"] for r in records(project)] == [first["pid"]]


# -- 7. faults -----------------------------------------------------------------------------------


def test_replica_killed_between_runs(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    old = only_record(project)
    os.kill(old["pid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(old["pid"]))

    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert (env["replicas_started"], env["replicas_attached"]) == (1, 0)
    new = only_record(project)
    assert new["pid"] != old["pid"]
    assert new["replica_id"] != old["replica_id"]

    os.kill(new["pid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(new["pid"]))
    result, listed = status(project)
    assert listed == {}
    result.stdout.fnmatch_lines(
        [
            "reuse: 0 warm replicas in *",
            f"*cleaned: removed record of replica {new['replica_id']}: process {new['pid']}*",
        ]
    )
    assert records(project) == []


def test_corrupt_registry_is_set_aside(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result, _ = run_report(project)
    result.assert_outcomes(passed=2)
    path = registry_dir(project) / "registry.json"
    old = only_record(project)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated mid-write

    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert env["replicas_started"] == 1
    assert list(registry_dir(project).glob("registry.json.corrupt-*")), "not set aside"
    new = only_record(project)
    assert new["pid"] != old["pid"]
    # The replica the lost registry listed finds its record gone and retires on its own.
    assert wait_for(lambda: not alive(old["pid"])), "an unlisted replica kept running"
    assert old["pid"] in lines_of(project.path / "teardowns.txt")

    path.write_text("{not json")
    result, listed = status(project)
    assert listed == {}
    result.stdout.fnmatch_lines(["*note: the replica registry * was unreadable*"])
    assert wait_for(lambda: not alive(new["pid"])), "an unlisted replica kept running"
    assert len(list(registry_dir(project).glob("registry.json.corrupt-*"))) == 2


def test_unusable_cache_directory_falls_back_to_run_scope(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(
        test_a="""
        import os

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.mark.parametrize("n", range(2))
        def test_here(warm, n):
            assert not os.environ["PYTEST_REUSE_REPLICA"].startswith("g-")
        """
    )
    # As root, permissions stop nothing: a regular file where the cache directory goes does.
    (project.path / ".pytest_cache").write_text("not a directory\n")
    first, env = run_report(project)
    first.assert_outcomes(passed=2, warnings=first.parseoutcomes().get("warnings", 0))
    assert env["replicas_attached"] == 0
    first.stdout.no_fnmatch_line("*stay warm*")
    assert wait_for(lambda: not replica_pids(project.path), 5)
    setups = lines_of(project.path / "setups.txt")
    assert setups
    assert sorted(lines_of(project.path / "teardowns.txt")) == sorted(setups)
    for command in ("--reuse-status", "--reuse-stop"):
        result = run(project, command)
        assert result.ret == 0, command
    result = run(project, "--reuse-status")
    result.stdout.fnmatch_lines(["reuse: no registry (*.pytest_cache/reuse*)"])
    # And the run itself said why nothing stays warm, naming the place it could not use.
    output = first.stdout.str() + first.stderr.str()
    assert ".pytest_cache/reuse" in output, "no word on why replicas are not kept warm"


def test_commands_with_no_replicas(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result = run(project, "--reuse-status")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["reuse: 0 warm replicas in *"])
    result = run(project, "--reuse-stop")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["reuse: no warm replicas to stop"])
    result, env = run_report(project, "--reuse-fresh")
    result.assert_outcomes(passed=2)
    assert env["replicas_started"] == 1
    first = only_record(project)

    # With one present, --reuse-fresh stops it (its finalizers run) and starts cold.
    result, env = run_report(project, "--reuse-fresh", "-v")
    result.assert_outcomes(passed=2)
    assert (env["replicas_started"], env["replicas_attached"]) == (1, 0)
    assert wait_for(lambda: not alive(first["pid"]))
    assert lines_of(project.path / "teardowns.txt") == [first["pid"]]
    assert only_record(project)["pid"] != first["pid"]


def test_without_the_cache_plugin(project: pytest.Pytester) -> None:
    # -p no:cacheprovider removes the cache_dir ini key the registry's place derives from.
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result = run(project, "-p", "no:cacheprovider")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2)
