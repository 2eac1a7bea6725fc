"""Replicas on other machines: host specs, placement, and end to end over a real ssh server.

The unit tests cover spec parsing, host groups, placement and the code checks without any
process. The end-to-end tests start a throwaway OpenSSH server on 127.0.0.1 (a free high port,
its own host key and client key in a temporary directory) and run suites across two "hosts":
two ssh aliases whose ``chdir`` are two copies of the project. Every process started here is
ended by pid, every subprocess is bounded, and each end-to-end test asserts that no process is
left working in its directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import execnet
import psutil
import pytest

from pytest_reuse_env import ReusePolicy
from pytest_reuse_env.hostspec import (
    HostPool,
    HostSpecError,
    first_difference,
    parse_hosts,
    parse_spec,
    project_files,
    relocate,
)
from tests import helpers

SSHD = "/usr/sbin/sshd"
RUN_TIMEOUT = 120.0
#: Bound of every helper subprocess (ssh-keygen, ssh, venv).
STEP_TIMEOUT = 60.0

# -- unit: specs and groups ----------------------------------------------------------------------


def test_spec_count_kind_and_name() -> None:
    host = parse_spec(
        "3*ssh=alice@box.example//python=python3//chdir=/srv/p", group="g", source="s"
    )
    assert (host.capacity, host.kind, host.name) == (3, "ssh", "box.example")
    assert (host.chdir, host.python, host.group) == ("/srv/p", "python3", "g")
    assert host.relocated
    assert not host.same_machine
    assert parse_spec("ssh=-p 2222 -i key me@10.0.0.5", group="g", source="s").name == "10.0.0.5"
    assert parse_spec("socket=10.0.0.7:8888", group="g", source="s").name == "10.0.0.7:8888"
    popen = parse_spec("popen//python=/opt/py/bin/python", group="g", source="s")
    assert (popen.kind, popen.capacity, popen.same_machine, popen.relocated) == (
        "popen",
        1,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("0*ssh=box", "at least 1"),
        ("ssh=box//via=gw", "unsupported key 'via'"),
        ("ssh=box//id=x", "unsupported key 'id'"),
        ("ssh=box//popen", "exactly one of"),
        ("python=python3", "exactly one of"),
        ("socket=box", "HOST:PORT"),
        ("socket=box:99999", "HOST:PORT"),
        ("popen=yes", "popen takes no value"),
        ("ssh=", "needs a value"),
        ("ssh=box//chdir", "chdir= needs a value"),
        ("ssh=box//chdir=/a//chdir=/b", "duplicate key"),
    ],
)
def test_spec_rules(text: str, rule: str) -> None:
    with pytest.raises(HostSpecError, match=re.escape(rule)):
        parse_spec(text, group="default", source="test")


def test_groups_tx_and_unique_names() -> None:
    lines = ["ssh=root@127.0.0.1", "gpu: 2*ssh=root@127.0.0.1", "# a comment", ""]
    table = parse_hosts(lines, [], source="ini")
    assert [h.name for h in table.groups["default"]] == ["127.0.0.1"]
    assert [(h.name, h.capacity) for h in table.groups["gpu"]] == [("127.0.0.1#2", 2)]
    assert table.groups["gpu"][0].source == "reuse_hosts line 2"
    assert table.hosts_for(None) == table.groups["default"]
    assert table.hosts_for("gpu") == table.groups["gpu"]
    assert table.hosts_for("local") is None
    # --reuse-tx replaces the ungrouped lines, not the groups.
    table = parse_hosts(lines, ["popen", "2*popen"], source="ini")
    assert [(h.kind, h.source) for h in table.groups["default"]] == [
        ("popen", "--reuse-tx"),
        ("popen", "--reuse-tx"),
    ]
    assert "gpu" in table.groups
    assert parse_hosts([], [], source="ini").hosts_for(None) is None


@pytest.mark.parametrize(
    ("lines", "tx", "rsync", "message"),
    [
        (["ssh=a//bogus=1"], [], False, "reuse_hosts line 1 'ssh=a//bogus=1' (ini)"),
        (["local: popen"], [], False, "'local' is reserved"),
        ([], ["socket=a"], False, "--reuse-tx 'socket=a'"),
        (["ssh=box"], [], True, "--reuse-rsync needs chdir=PATH"),
    ],
)
def test_host_usage_errors(lines: list[str], tx: list[str], rsync: bool, message: str) -> None:
    with pytest.raises(pytest.UsageError, match=re.escape(message)):
        parse_hosts(lines, tx, source="ini", rsync=rsync)


def test_unknown_group_is_a_usage_error() -> None:
    table = parse_hosts(["gpu: popen"], [], source="ini")
    table.check_group("gpu", "here")
    table.check_group(None, "here")
    with pytest.raises(pytest.UsageError, match=r"here: hosts='tpu' names no host group; known"):
        table.check_group("tpu", "here")


def test_policy_hosts_field() -> None:
    policy = ReusePolicy.parse("replicas=2 hosts=gpu")
    assert policy.hosts == "gpu"
    assert ReusePolicy.parse(policy.describe()) == policy
    assert ReusePolicy(hosts="default") == ReusePolicy()
    assert "hosts" not in ReusePolicy().describe()  # environment keys of old policies unchanged
    with pytest.raises(ValueError, match="hosts must be a host group name"):
        ReusePolicy(hosts="no such")


def test_gateway_spec_marks_the_launch() -> None:
    ssh = parse_spec("ssh=box//chdir=/p", group="g", source="s")
    spec = ssh.gateway_spec("r3", "pytest_reuse_launch=abc", "/tmp/ssh.log")
    assert spec.startswith("ssh=-o BatchMode=yes ")
    assert "-E /tmp/ssh.log box//chdir=/p//python=python3 -X pytest_reuse_launch=abc//id=r3" in spec
    popen = parse_spec("popen", group="g", source="s").gateway_spec("r1", "m=1")
    assert popen == f"popen//python={sys.executable} -X m=1//id=r1"


# -- unit: placement -----------------------------------------------------------------------------


@dataclass
class FakeReplica:
    alive: bool = True


def test_placement_prefers_most_free_capacity() -> None:
    a = parse_spec("2*ssh=a", group="g", source="s")
    b = parse_spec("3*ssh=b", group="g", source="s")
    pool: HostPool[FakeReplica] = HostPool(lambda r: r.alive)
    placed = []
    for _ in range(5):
        host = pool.pick([a, b])
        assert host is not None
        replica = FakeReplica()
        pool.add(host, replica)
        placed.append(host.name)
    assert placed == ["b", "a", "b", "a", "b"]
    assert pool.pick([a, b]) is None  # max across hosts: 5
    first_on_a = next(r for r in pool._replicas[a])
    first_on_a.alive = False  # a replica ended: its capacity is free again
    assert pool.pick([a, b]) == a
    assert pool.host_of(first_on_a) == a


def test_dropped_host_gets_no_more_work() -> None:
    a = parse_spec("ssh=a", group="g", source="s")
    b = parse_spec("ssh=b", group="g", source="s")
    pool: HostPool[FakeReplica] = HostPool(lambda r: r.alive)
    pool.drop(a, "unreachable")
    assert pool.pick([a, b]) == b
    assert pool.usable([a, b]) == [b]
    pool.drop(b, "refused")
    assert pool.pick([a, b]) is None
    assert pool.down == {a: "unreachable", b: "refused"}


# -- unit: the project's files and paths ---------------------------------------------------------


def test_project_files_and_first_difference(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    for root in (here, there):
        (root / "tests").mkdir(parents=True)
        (root / "tests" / "test_x.py").write_text("def test(): pass\n")
        (root / "conftest.py").write_text("")
        (root / "pytest.ini").write_text("[pytest]\n")
    files = project_files(
        here,
        [here / "tests" / "test_x.py"],
        [str(here / "conftest.py"), "/elsewhere/conftest.py"],
        here / "pytest.ini",
    )
    assert sorted(files) == ["conftest.py", "pytest.ini", "tests/test_x.py"]
    assert first_difference(str(there), files) is None
    (there / "tests" / "test_x.py").write_text("def test(): assert 0\n")
    assert (
        first_difference(str(there), files) == "tests/test_x.py differs from the controller's copy"
    )
    (there / "conftest.py").unlink()
    assert first_difference(str(there), files) == "conftest.py is missing"


def test_relocate_rewrites_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    start = {
        "replica_id": "r1@box",
        "args": ["--rootdir=/ctl/proj", "-v"],
        "invocation_dir": "/ctl/proj/sub",
        "sys_path": ["/ctl/proj", "/ctl/venv/lib/site-packages", "/ctl/proj/src"],
        "basetemp": "/ctl/tmp/b",
        "log_path": "/ctl/tmp/log",
        "option_overrides": {"basetemp": "/ctl/tmp/b"},
    }
    host = {
        "controller_root": "/ctl/proj",
        "relocated": True,
        "same_machine": False,
        "environ": {"PYTEST_REUSE_ENV_TEST_RELOCATE": "1"},
    }
    monkeypatch.delenv("PYTEST_REUSE_ENV_TEST_RELOCATE", raising=False)
    root = relocate(start, host)
    assert root == str(tmp_path)
    assert start["args"] == [f"--rootdir={tmp_path}", "-v"]
    assert start["invocation_dir"] == f"{tmp_path}/sub"
    assert start["sys_path"] == [str(tmp_path), f"{tmp_path}/src"]
    assert not str(start["basetemp"]).startswith("/ctl")
    assert os.environ["PYTEST_REUSE_ENV_TEST_RELOCATE"] == "1"
    shutil.rmtree(Path(str(start["basetemp"])).parent)


# -- end to end: a throwaway OpenSSH server ------------------------------------------------------


@dataclass(frozen=True)
class SshServer:
    config: Path  # an ssh_config with the aliases hosta and hostb
    port: int

    def spec(self, alias: str, chdir: Path, python: str = sys.executable) -> str:
        return f"ssh={alias}//ssh_config={self.config}//python={python}//chdir={chdir}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on {port} within {timeout} s")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.skip(f"{SSHD} or ssh is missing (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the throwaway sshd logs in as root: run as root")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)],
            check=True,
            timeout=STEP_TIMEOUT,
        )
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        "PermitRootLogin prohibit-password\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nPidFile none\nMaxStartups 50\nMaxSessions 50\n"
    )
    config = home / "ssh_config"
    config.write_text(
        f"Host hosta hostb\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
        f"  IdentityFile {home / 'client_key'}\n  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
    )
    with open(home / "sshd.log", "wb") as log:
        server = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(home / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        _wait_for_port(port, server, timeout=10.0)
        subprocess.run(
            ["ssh", "-F", str(config), "-o", "BatchMode=yes", "hosta", "true"],
            check=True,
            timeout=STEP_TIMEOUT,
        )
        yield SshServer(config, port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == (
            psutil.STATUS_ZOMBIE
        )


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")


CONFTEST = """
import os
import sys

import pytest


@pytest.fixture(autouse=True)
def record(request):
    # Written before the test body runs, so a crash cannot lose it.
    with open({log!r}, "a") as f:
        f.write(f"{{request.node.name}} {{os.getpid()}} {{os.getcwd()}} {{sys.executable}}\\n")
"""

SUITE = """
import os
import signal
import time

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("i", range(10))
def test_where(i):
    time.sleep(0.4)


def test_introspection():
    print("hello from the replica")
    assert [1, 2] == [1, 3]
"""


def make_project(
    pytester: pytest.Pytester, hosts: list[str], *, suite: str = SUITE, copies: int = 2
) -> list[Path]:
    """The project (tests in tests/) and ``copies`` identical copies under hosts/."""
    lines = "\n".join(f"    {h}" for h in hosts)
    pytester.makeini(
        f"[pytest]\ntestpaths = tests\nreuse_scope = run\nreuse_replicas = 2\n"
        f"reuse_hosts =\n{lines}\n"
    )
    tests = pytester.mkdir("tests")
    (tests / "conftest.py").write_text(CONFTEST.format(log=str(pytester.path / "where.txt")))
    (tests / "test_suite.py").write_text(suite)
    made = []
    for name in "ab"[:copies]:
        copy = pytester.path / "hosts" / name
        copy.mkdir(parents=True)
        shutil.copy(pytester.path / "tox.ini", copy / "tox.ini")
        shutil.copytree(tests, copy / "tests")
        made.append(copy)
    return made


def where(pytester: pytest.Pytester) -> dict[str, tuple[int, str, str]]:
    """``{test name: (pid, cwd, sys.executable)}`` (the last run of each test)."""
    found = {}
    for line in (pytester.path / "where.txt").read_text().splitlines():
        name, pid, cwd, executable = line.split()
        found[name] = (int(pid), cwd, executable)
    return found


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return helpers.run(pytester, "-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


# The copies' paths are in the ini, and the ini is one of the verified files: the hosts' specs
# must name the copies before they are made. They are fixed relative to pytester.path.
def copy_path(pytester: pytest.Pytester, name: str) -> Path:
    return pytester.path / "hosts" / name


def test_suite_runs_on_both_hosts(pytester: pytest.Pytester, sshd: SshServer) -> None:
    a, b = copy_path(pytester, "a"), copy_path(pytester, "b")
    make_project(pytester, [sshd.spec("hosta", a), sshd.spec("hostb", b)])
    result = run(pytester, "-v", "-rA")
    result.assert_outcomes(passed=10, failed=1)
    seen = where(pytester)
    assert {cwd for _, cwd, _ in seen.values()} == {str(a), str(b)}
    assert len({pid for pid, _, _ in seen.values()}) == 2
    assert os.getpid() not in {pid for pid, _, _ in seen.values()}
    result.stdout.fnmatch_lines_random(
        [
            "*r0@hosta warm*PASSED tests/test_suite.py::test_where*",
            "*r1@hostb warm*PASSED tests/test_suite.py::test_where*",
            "E       AssertionError: assert [1, 2] == [1, 3]",
            "E         At index 1 diff: 2 != 3",
            "*Captured stdout call*",
            "hello from the replica",
        ]
    )


def test_differing_copy_is_refused_and_its_work_moves(
    pytester: pytest.Pytester, sshd: SshServer
) -> None:
    a, b = copy_path(pytester, "a"), copy_path(pytester, "b")
    make_project(pytester, [sshd.spec("hosta", a), sshd.spec("hostb", b)])
    with (b / "tests" / "test_suite.py").open("a") as f:
        f.write("# edited on hostb only\n")
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=10, failed=1)
    assert {cwd for _, cwd, _ in where(pytester).values()} == {str(a)}
    result.stdout.fnmatch_lines(
        [
            "*host hostb (ssh=hostb//*) refused to start a replica: tests/test_suite.py differs "
            "from the controller's copy*; host hostb is dropped for this run and its share of "
            "the work goes to hosta*"
        ]
    )


KILLER_SUITE = """
import os
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("i", range(8))
def test_where(i):
    time.sleep(0.3)


def test_killed():
    marker = Path({marker!r})
    if not marker.exists():  # only the first time: a rerun would pass
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_replica_killed_mid_test(pytester: pytest.Pytester, sshd: SshServer) -> None:
    a, b = copy_path(pytester, "a"), copy_path(pytester, "b")
    suite = KILLER_SUITE.format(marker=str(pytester.path / "killed.txt"))
    make_project(pytester, [sshd.spec("hosta", a), sshd.spec("hostb", b)], suite=suite)
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=8, failed=1)
    killed = int((pytester.path / "killed.txt").read_text())
    result.stdout.fnmatch_lines(
        [
            f"FAILED tests/test_suite.py::test_killed - replica r*@host* (pid {killed}) crashed "
            "while running tests/test_suite.py::test_killed: host host* lost: ssh ended with*"
        ]
    )
    assert not psutil.pid_exists(killed)


def test_unreachable_host_is_reported_and_skipped(
    pytester: pytest.Pytester, sshd: SshServer
) -> None:
    a = copy_path(pytester, "a")
    closed = free_port()
    dead = f"ssh=-p {closed} root@127.0.0.1//python={sys.executable}//chdir={a}"
    make_project(pytester, [dead, sshd.spec("hosta", a)], copies=1)
    started = time.monotonic()
    result = run(pytester, "-rA")
    assert time.monotonic() - started < 60
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*could not reach host 127.0.0.1 ({dead}, reuse_hosts line 1): could not reach it "
            f"(ssh: ssh: connect to host 127.0.0.1 port {closed}: Connection refused); host "
            "127.0.0.1 is dropped for this run and its share of the work goes to hosta*"
        ]
    )


@pytest.fixture(scope="session")
def other_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second virtual environment's interpreter that sees this one's packages (a .pth)."""
    venv = tmp_path_factory.mktemp("venv2")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=STEP_TIMEOUT,
    )
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        timeout=STEP_TIMEOUT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "reuse_env_test.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def test_other_interpreter(pytester: pytest.Pytester, other_python: str) -> None:
    make_project(pytester, [f"popen//python={other_python}"], copies=0)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=10, failed=1)
    assert {exe for _, _, exe in where(pytester).values()} == {other_python}
    result.stdout.fnmatch_lines(["*r0@popen warm*PASSED*"])


def test_missing_plugin_on_the_host_is_named(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    venv = tmp_path_factory.mktemp("bare")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    make_project(pytester, [f"popen//python={venv}/bin/python"], copies=0)
    result = run(pytester)
    result.assert_outcomes(errors=11)
    result.stdout.fnmatch_lines(
        [
            f"*host popen: cannot import 'pytest_reuse_env' with {venv}/bin/python*; host popen "
            "is dropped for this run: no host of group 'default' is left*"
        ]
    )


def test_rsync_into_an_empty_directory(pytester: pytest.Pytester, sshd: SshServer) -> None:
    target = pytester.path / "remote"  # does not exist yet: execnet creates it
    make_project(pytester, [sshd.spec("hosta", target)], copies=0)
    (pytester.path / ".git").mkdir()
    (pytester.path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    result = run(pytester, "--reuse-rsync")
    result.assert_outcomes(passed=10, failed=1)
    assert {cwd for _, cwd, _ in where(pytester).values()} == {str(target)}
    assert (target / "tests" / "test_suite.py").read_text() == SUITE
    assert not (target / ".git").exists()


def test_bad_host_config_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_hosts =\n    ssh=box//bogus=1\n")
    pytester.makepyfile("def test(): pass")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*reuse_hosts line 1 'ssh=box//bogus=1' (ini key reuse_hosts*"])
    pytester.makeini("[pytest]\nreuse_hosts =\n    gpu: popen\n")
    pytester.makepyfile("import pytest\n@pytest.mark.reuse(hosts='tpu')\ndef test(): pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*@pytest.mark.reuse at test_bad_host_config_is_a_usage_error.py::test: hosts='tpu' "
            "names no host group; known groups: default, gpu, local*"
        ]
    )


OVERHEAD_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("i", range({count}))
def test_trivial(i):
    pass
"""


def test_overhead_ssh_against_local(
    pytester: pytest.Pytester, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per-test cost of one ssh replica against one local replica (500 trivial tests)."""
    count = 500
    a = copy_path(pytester, "a")
    make_project(
        pytester, [sshd.spec("hosta", a)], suite=OVERHEAD_SUITE.format(count=count), copies=1
    )
    (pytester.path / "tests" / "conftest.py").write_text("")
    (a / "tests" / "conftest.py").write_text("")
    timings = {}
    for label, extra in (("ssh", ()), ("local", ("-o", "reuse_hosts="))):
        report = pytester.path / f"{label}.json"
        result = run(pytester, "-q", "-o", "reuse_replicas=1", f"--reuse-report={report}", *extra)
        result.assert_outcomes(passed=count)
        # First test's start to last test's finish: the replica's start-up is not in it.
        timings[label] = json.loads(report.read_text())["environments"][0]["test_phase_seconds"]
    per_test_ms = {k: 1000 * v / count for k, v in timings.items()}
    with capsys.disabled():
        print(
            f"\nreuse overhead, {count} trivial tests, one replica: "
            f"ssh {per_test_ms['ssh']:.2f} ms/test, local {per_test_ms['local']:.2f} ms/test"
        )
    assert per_test_ms["ssh"] < 50


def test_socket_host(pytester: pytest.Pytester) -> None:
    """``socket=HOST:PORT``: a replica in a process started by execnet's socketserver."""
    a = copy_path(pytester, "a")
    port = free_port()
    make_project(pytester, [f"socket=127.0.0.1:{port}//chdir={a}"], copies=1)
    script = Path(execnet.__file__).parent / "script" / "socketserver.py"
    # That machine's temporary directory: the replica's log and basetemp go there.
    remote_tmp = pytester.path / "remote-tmp"
    remote_tmp.mkdir()
    with open(pytester.path / "socketserver.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(script), f"127.0.0.1:{port}"],
            cwd=pytester.path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "TMPDIR": str(remote_tmp)},
        )
    try:
        _wait_for_port(port, server, timeout=10.0)
        result = run(pytester, "-v", "-o", "reuse_replicas=1")
        result.assert_outcomes(passed=10, failed=1)
        assert {(pid, cwd) for pid, cwd, _ in where(pytester).values()} == {(server.pid, str(a))}
        result.stdout.fnmatch_lines([f"*r0@127.0.0.1:{port} warm*PASSED*"])
        # The replica that ended removed its directory there (it may finish after this run).
        deadline = time.monotonic() + 10.0
        while any(remote_tmp.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not list(remote_tmp.iterdir())
    finally:
        server.kill()
        server.wait(timeout=10)
    assert not psutil.pid_exists(server.pid)


def test_host_that_never_answers_is_bounded(pytester: pytest.Pytester) -> None:
    """ssh to a port that accepts and never speaks: given up after reuse_host_timeout, and the
    launch's ssh process is killed (by the marker on its command line)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        spec = f"ssh=-p {port} root@127.0.0.1//python={sys.executable}"
        make_project(pytester, [spec], copies=0)
        started = time.monotonic()
        result = run(pytester, "-o", "reuse_host_timeout=2")
        assert time.monotonic() - started < 30
    result.assert_outcomes(errors=11)
    result.stdout.fnmatch_lines(
        [
            f"*could not reach host 127.0.0.1 ({spec}, reuse_hosts line 1): could not reach it "
            "within 2 s (reuse_host_timeout); killed pid *"
        ]
    )
