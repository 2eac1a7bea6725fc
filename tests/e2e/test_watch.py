"""``pytest --reuse-watch`` driven through real file edits, with and without a terminal.

Each test starts the watch session itself (a pseudo-terminal for the keys, or a pipe), reads
its output with a deadline on every read, ends it (``q``, Ctrl-C or SIGINT) and checks the
process is gone by pid; the suite's conftest checks no replica is left in the directory.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import PLUGIN_ARGS, run

#: Longest wait for one expected piece of output (a first run starts replicas: slow under load).
READ_SECONDS = 60.0
#: How long a quit may take (replicas tear down).
QUIT_SECONDS = 30.0

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")

#: app/core.py imports app/base.py: test_core.py imports base only through core.
BASE = "ZERO = 0\n"
CORE = "from app import base\n\ndef add(a, b):\n    return a + b + base.ZERO\n"
OTHER = "def mul(a, b):\n    return a * b\n"
TEST_CORE = (
    "import pytest\nfrom app import core\n\npytestmark = pytest.mark.reuse\n\n"
    "def test_add_one():\n    assert core.add(1, 1) == 2\n\n"
    "def test_add_two():\n    assert core.add(2, 2) == 4\n"
)
TEST_OTHER = (
    "import pytest\nfrom app import other\n\npytestmark = pytest.mark.reuse\n\n"
    "def test_mul_one():\n    assert other.mul(1, 1) == 1\n\n"
    "def test_mul_two():\n    assert other.mul(2, 2) == 4\n"
)


class WatchSession:
    """One ``pytest --reuse-watch`` process and what it has printed so far."""

    def __init__(self, pytester: pytest.Pytester, *args: str, tty: bool) -> None:
        command = [sys.executable, "-m", "pytest", *PLUGIN_ARGS, "--reuse-watch", *args]
        env = dict(os.environ, PY_COLORS="0", COLUMNS="100")
        # As pytester's runpytest_subprocess (helpers.run) sets it: the same environment key.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(pytester.path), env.get("PYTHONPATH")])
        )
        self.master: int | None = None
        if tty:
            master, slave = os.openpty()
            self.master = master

            def own_terminal() -> None:  # the pty becomes the session's terminal: ^C works
                import fcntl
                import termios

                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self.process = subprocess.Popen(
                command,
                cwd=pytester.path,
                env=env,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                preexec_fn=own_terminal,
            )
            os.close(slave)
            self.fd = master
        else:
            self.process = subprocess.Popen(
                command,
                cwd=pytester.path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert self.process.stdout is not None
            self.fd = self.process.stdout.fileno()
        self.output = b""
        self._seen = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # the pty's other end closed
            return False
        self.output += data
        return bool(data)

    def expect(self, pattern: str, seconds: float = READ_SECONDS) -> str:
        """Wait for ``pattern`` (a regex) in output not matched before; returns the text up
        to and including it."""
        deadline = time.monotonic() + seconds
        while True:
            text = self.text[self._seen :]
            found = re.search(pattern, text)
            if found:
                self._seen += found.end()
                return text[: found.end()]
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and not self._read(0)):
                raise AssertionError(f"no {pattern!r} within {seconds} s; output:\n{self.text}")
            self._read(min(left, 0.2))

    def quiet_for(self, pattern: str, seconds: float) -> None:
        """``pattern`` does not show up within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(0.1)
        assert not re.search(pattern, self.text[self._seen :]), self.text

    @property
    def text(self) -> str:
        return _ANSI.sub(b"", self.output).decode(errors="replace").replace("\r", "")

    def send(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)

    def wait_for_exit(self) -> int:
        deadline = time.monotonic() + QUIT_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0):
            pass
        code = self.process.poll()
        assert code is not None, f"the watch session did not end; output:\n{self.text}"
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nreuse_scope = run\n")
    pytester.mkpydir("app")
    (pytester.path / "app" / "base.py").write_text(BASE)
    (pytester.path / "app" / "core.py").write_text(CORE)
    (pytester.path / "app" / "other.py").write_text(OTHER)
    (pytester.path / "test_core.py").write_text(TEST_CORE)
    (pytester.path / "test_other.py").write_text(TEST_OTHER)
    return pytester


@pytest.fixture
def sessions() -> Iterator[list[WatchSession]]:
    started: list[WatchSession] = []
    yield started
    for session in started:
        pid = session.process.pid
        session.kill()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def save(path: Path, text: str) -> None:
    """A save as an editor makes it: new content, a new mtime."""
    path.write_text(text)
    now = time.time()
    os.utime(path, (now, now + 0.01))


def outcome_line(text: str) -> str:
    """The last summary line's counts ("2 failed, 2 passed"), with or without -q."""
    lines = re.findall(r"^(?:=+ )?(\d+ \w+.*?) in [0-9.]+s", text, re.MULTILINE)
    assert lines, text
    return str(lines[-1])


def test_without_a_terminal_a_save_runs_the_affected_tests_first(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    # One replica: tests run in the order they are sent.
    watch = WatchSession(project, "-v", "-o", "reuse_replicas=1", tty=False)
    sessions.append(watch)
    first = watch.expect(r"waiting for changes; Ctrl-C quits \(keys need a terminal\)")
    assert "reuse watch #1: first run: 4 tests" in first
    assert outcome_line(first) == "4 passed"

    save(project.path / "app" / "core.py", CORE.replace("a + b", "a - b"))
    broken = watch.expect(r"waiting for changes")
    assert "reuse watch #2: app/core.py changed: 2 tests affected, then 2 more" in broken
    ran = re.findall(r"(?:PASSED|FAILED) (test_\w+\.py)::", broken)
    assert ran[:2] == ["test_core.py", "test_core.py"], broken
    assert outcome_line(broken) == "2 failed, 2 passed"
    plain = run(project, "--reuse=off", "-q")
    assert outcome_line(broken) == outcome_line(plain.stdout.str())

    # A module no test imports: no round.
    save(project.path / "notes.py", "X = 1\n")
    watch.quiet_for(r"reuse watch #3", 1.5)
    watch.expect(r"reuse watch: notes.py: no test imports it\nreuse watch: waiting for changes")

    # The failures run first, then the rest: the edit of test_other.py affects two more.
    save(project.path / "test_other.py", TEST_OTHER.replace("== 4", "== 4  # again"))
    again = watch.expect(r"waiting for changes")
    assert "reuse watch #3: test_other.py changed: 4 tests affected" in again
    assert outcome_line(again) == "2 failed, 2 passed"

    save(project.path / "app" / "core.py", CORE)
    fixed = watch.expect(r"waiting for changes")
    assert "reuse watch #4: app/core.py changed: 2 tests affected, then 2 more" in fixed
    assert outcome_line(fixed) == "4 passed"

    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 0  # the last round passed
    assert "\x1b[2J" not in watch.output.decode(errors="replace"), "stdout is no terminal"


def test_affected_only_runs_nothing_else(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    watch = WatchSession(project, "--reuse-watch-affected", tty=False)
    sessions.append(watch)
    watch.expect(r"waiting for changes")
    save(project.path / "test_other.py", TEST_OTHER.replace("mul(2, 2) == 4", "mul(2, 2) == 5"))
    round_two = watch.expect(r"waiting for changes")
    assert "reuse watch #2: test_other.py changed: 2 tests affected" in round_two
    assert "more" not in round_two.splitlines()[0]
    assert outcome_line(round_two) == "1 failed, 1 passed"
    # A module test_core.py imports only through app/core.py: its tests, and the failure.
    save(project.path / "app" / "base.py", "ZERO = 1\n")
    round_three = watch.expect(r"waiting for changes")
    assert "reuse watch #3: app/base.py changed: 3 tests affected\n" in round_three
    assert outcome_line(round_three) == "3 failed"
    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 1  # the last round failed


def test_keys_in_a_terminal(project: pytest.Pytester, sessions: list[WatchSession]) -> None:
    save(project.path / "test_other.py", TEST_OTHER.replace("mul(2, 2) == 4", "mul(2, 2) == 5"))
    watch = WatchSession(project, tty=True)
    sessions.append(watch)
    first = watch.expect(
        r"keys: Enter re-run all, f failures, p file pattern, k -k expr\w+, q quit"
    )
    assert outcome_line(first) == "1 failed, 3 passed"

    watch.send(b"f")
    failures = watch.expect(r"keys: Enter")
    assert "reuse watch #2: re-running failures: 1 test" in failures
    assert outcome_line(failures) == "1 failed"
    assert "\x1b[2J" in watch.output.decode(errors="replace")  # stdout is a terminal: cleared

    watch.send(b"p")
    watch.expect(r"file name pattern \(regex\) \(empty clears\): ")
    watch.send(b"core\n")
    pattern = watch.expect(r"keys: Enter")
    assert "reuse watch #3: re-running all: 2 tests (files matching 'core')" in pattern
    assert outcome_line(pattern) == "2 passed"

    watch.send(b"k")
    watch.expect(r"-k expression \(empty clears\): ")
    watch.send(b"two\n")
    keyword = watch.expect(r"keys: Enter")
    assert "reuse watch #4: re-running all: 1 test (files matching 'core', -k 'two')" in keyword
    assert outcome_line(keyword) == "1 passed"

    watch.send(b"p")
    watch.expect(r"\(empty clears\): ")
    watch.send(b"\n")
    watch.expect(r"reuse watch #5: re-running all: 2 tests \(-k 'two'\)(.|\n)*keys: Enter")
    watch.send(b"k")
    watch.expect(r"\(empty clears\): ")
    watch.send(b"\n")
    cleared = watch.expect(r"reuse watch #6: re-running all: 4 tests\n(.|\n)*keys: Enter")
    assert outcome_line(cleared) == "1 failed, 3 passed"

    watch.send(b"\n")
    everything = watch.expect(r"keys: Enter")
    assert "reuse watch #7: re-running all: 4 tests" in everything

    watch.send(b"q")
    assert watch.wait_for_exit() == 1


def test_ctrl_c_keeps_global_replicas_warm(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    project.makeini("[pytest]\nreuse_scope = global\n")
    watch = WatchSession(project, tty=True)
    sessions.append(watch)
    watch.expect(r"keys: Enter")
    watch.send(b"\x03")
    assert watch.wait_for_exit() == 0
    assert "stay warm for the next run" in watch.text
    warm = run(project, "-q")  # attaches to the replica the watch session left
    assert "attached warm" in warm.stdout.str(), warm.stdout.str()
    assert outcome_line(warm.stdout.str()) == "4 passed"
    stopped = run(project, "--reuse-stop")
    assert stopped.ret == 0


def test_ctrl_c_during_a_round_ends_the_session_as_plain_pytest_does(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    watch = WatchSession(project, "-o", "reuse_replicas=1", tty=True)
    sessions.append(watch)
    watch.expect(r"keys: Enter")
    slow = TEST_OTHER.replace(
        "def test_mul_one():\n",
        "def test_mul_one():\n    import time\n    time.sleep(60)\n",
    )
    save(project.path / "test_other.py", slow)
    watch.expect(r"reuse watch #2: test_other.py changed")
    time.sleep(1.0)  # the sleeping test is under way
    watch.send(b"\x03")
    assert watch.wait_for_exit() == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in watch.text
    assert re.search(r"retired: .*\b1 stopped early", watch.text), watch.text
    # The suite's conftest checks no replica outlived the session.


def test_a_conftest_edit_restarts_the_process(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    fixture = "import pytest\n\n@pytest.fixture\ndef answer():\n    return {}\n"
    project.makeconftest(fixture.format(42))
    watch = WatchSession(project, tty=False)
    sessions.append(watch)
    watch.expect(r"waiting for changes")
    # A fixture's value: the conftest is registered again in place; every test is affected.
    save(project.path / "conftest.py", fixture.format(43))
    in_place = watch.expect(r"waiting for changes")
    assert "reuse watch #2: conftest.py changed: 4 tests affected" in in_place
    # A hook: no process can take that in place; the watch session starts afresh.
    hook = "\ndef pytest_collection_modifyitems(items):\n    items.reverse()\n"
    save(project.path / "conftest.py", fixture.format(43) + hook)
    restarted = watch.expect(r"reuse watch #1: first run: 4 tests(.|\n)*waiting for changes")
    assert "restarting pytest" in restarted
    assert watch.process.poll() is None  # the process we started, exec'd: not a child
    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 0


def test_a_replica_crash_during_watch_is_reported_and_replaced(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    # One replica: the round can only go on, and the next one run, on a replacement.
    watch = WatchSession(project, "-o", "reuse_replicas=1", tty=False)
    sessions.append(watch)
    watch.expect(r"waiting for changes")
    crashing = TEST_CORE.replace(
        "def test_add_two():\n", "def test_add_two():\n    import os\n    os._exit(3)\n"
    )
    save(project.path / "test_core.py", crashing)
    crashed = watch.expect(r"waiting for changes")
    assert re.search(r"test_add_two.*crash", crashed, re.IGNORECASE | re.DOTALL), crashed
    assert outcome_line(crashed) == "1 failed, 3 passed"
    save(project.path / "test_core.py", TEST_CORE)
    recovered = watch.expect(r"waiting for changes")
    assert outcome_line(recovered) == "4 passed"
    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 0
    assert re.search(r"2 replicas started.*retired: 1 crash, 1 end of run", watch.text), watch.text


def test_n_is_refused(project: pytest.Pytester) -> None:
    result = run(project, "--reuse-watch", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--reuse-watch * cannot be combined with -n/--dist*"])


def test_a_plugin_that_runs_the_tests_itself_is_refused(project: pytest.Pytester) -> None:
    # A normal run warns and runs every test in the pytest process; a watch would run none.
    project.makepyfile(looper="def pytest_runtestloop(session):\n    return None\n")
    result = run(project, "-p", "looper", "--reuse-watch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--reuse-watch needs replicas, but plugin 'looper' runs the tests itself*-p no:looper*"]
    )


def test_a_data_file_read_at_import_starts_a_round_for_the_tests_that_read_it(
    project: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    # Test parameters read from a file when the module is imported (replica/datareads.py).
    (project.path / "cases.txt").write_text("1\n2\n")
    (project.path / "test_cases.py").write_text(
        "from pathlib import Path\n\nimport pytest\n\npytestmark = pytest.mark.reuse\n\n"
        "CASES = (Path(__file__).parent / 'cases.txt').read_text().split()\n\n\n"
        "@pytest.mark.parametrize('case', CASES)\n"
        "def test_case(case):\n    assert int(case) < 10\n"
    )
    watch = WatchSession(project, "--reuse-watch-affected", tty=False)
    sessions.append(watch)
    assert outcome_line(watch.expect(r"waiting for changes")) == "6 passed"
    save(project.path / "cases.txt", "1\n2\n30\n")
    round_two = watch.expect(r"waiting for changes")
    assert "reuse watch #2: cases.txt changed: 3 tests affected\n" in round_two
    assert outcome_line(round_two) == "1 failed, 2 passed"
    # A file nothing read: no round.
    save(project.path / "notes.txt", "x\n")
    watch.quiet_for(r"reuse watch #3", 1.5)
    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 1  # the last round failed


def test_one_test_at_a_time_keeps_its_replica_from_round_to_round(
    pytester: pytest.Pytester, sessions: list[WatchSession]
) -> None:
    """Under ``-x`` a round's last test is not the session's last: its replica must not be
    told to finish (as a run's last test's is), or each round would start another."""
    pytester.makeini("[pytest]\nreuse_scope = run\nreuse_replicas = 1\n")
    test = (
        "import os\nimport pytest\n\npytestmark = pytest.mark.reuse\n\n"
        "def test_where():\n"
        "    with open('pids.txt', 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
    )
    (pytester.path / "test_where.py").write_text(test)
    watch = WatchSession(pytester, "-x", tty=False)
    sessions.append(watch)
    assert outcome_line(watch.expect(r"waiting for changes")) == "1 passed"
    save(pytester.path / "test_where.py", test + "\n# edited\n")
    assert outcome_line(watch.expect(r"reuse watch: waiting for changes")) == "1 passed"
    pids = (pytester.path / "pids.txt").read_text().split()
    assert len(pids) == 2, pids
    assert pids[0] == pids[1], f"one replica for both rounds: {pids}"
    watch.process.send_signal(signal.SIGINT)
    assert watch.wait_for_exit() == 0
