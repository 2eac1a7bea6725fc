"""End to end: registry, lock, log and socket-directory faults never stop a run (issue 12).

Each fault makes the run fall back to ``scope="run"`` with one warning naming the path and the
fix (never INTERNALERROR), ``--reuse-status``/``--reuse-stop`` report it, strangers on a
replica's socket never keep the next run out, the commands close what they open, and a
``--reuse=off`` run says that warm replicas still run.

This suite runs as root, which permission bits do not stop. Each "not writable" case is
simulated so that it still fails for root, as its test says: a regular file where a directory
belongs, a read-only bind mount in a private mount namespace (``unshare -m``), a directory
chowned to ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_global import (
    CONFTEST,
    FLAG_TESTS,
    ini,
    only_record,
    pytest_command,
    pytest_environ,
    records,
    registry_dir,
    run_report,
)
from tests.helpers import RUN_TIMEOUT, alive, replicas_stopped, run, wait_for

FALLBACK = "scope=global is unavailable in this run, so its replicas end with the run"
#: How long a run may take when the registry's lock is held: the bounded wait plus the run.
BUSY_RUN_SECONDS = 25.0

LOCK_HOLDER = """
import sys, time
import filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(25)
"""


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # warnings are not cut to the terminal's width
    monkeypatch.setenv("PYTEST_REUSE_ENV_ALLOW_SHORT_TTL", "1")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester directory whose replicas are stopped (and checked gone by pid) at the end."""
    pytester.makeconftest(CONFTEST)
    with replicas_stopped(pytester):
        yield pytester


def one_fallback_warning(result: pytest.RunResult, *expected: str) -> str:
    """The run passed with exactly one fallback warning, which names ``expected``."""
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output
    assert output.count(FALLBACK) == 1, output
    line = next(line for line in output.splitlines() if FALLBACK in line)
    # The warnings summary wraps long messages: read the whole paragraph.
    paragraph = output[output.index(line) :].split("\n\n")[0].replace("\n", " ")
    for text in expected:
        assert text in paragraph, paragraph
    assert "fix:" in paragraph, paragraph
    return paragraph


def passed_with_warnings(result: pytest.RunResult, passed: int) -> None:
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == passed, result.stdout.str()
    assert set(outcomes) <= {"passed", "warning", "warnings"}, outcomes
    assert result.ret == 0


# -- registry faults --------------------------------------------------------------------------


def test_registry_json_that_is_a_directory(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    path = registry_dir(project) / "registry.json"
    path.mkdir(parents=True)
    result = run(project)
    passed_with_warnings(result, 2)
    one_fallback_warning(result, str(path), "Is a directory", f"remove {path}")
    result.stdout.no_fnmatch_line("*stays warm*")

    status = run(project, "--reuse-status")
    assert status.ret == 0
    status.stdout.fnmatch_lines([f"reuse: the registry in * cannot be used: *{path}*"])
    stop = run(project, "--reuse-stop")
    assert stop.ret == 1, "could not stop anything: not a success"
    stop.stdout.fnmatch_lines([f"reuse: cannot stop warm replicas: *{path}*"])
    assert "Traceback" not in stop.stdout.str() + stop.stderr.str()
    path.rmdir()


def test_registry_lock_held_by_another_process(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    directory = registry_dir(project)
    directory.mkdir(parents=True, mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(directory / "registry.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = run(project, timeout=BUSY_RUN_SECONDS)
        took = time.monotonic() - started
        passed_with_warnings(result, 2)
        one_fallback_warning(result, "registry lock held for more than 3 s", "registry.lock")
        assert took < BUSY_RUN_SECONDS - 5, f"the run waited {took:.1f} s for a busy lock"
        status = run(project, "--reuse-status", timeout=15.0)
        assert status.ret == 0
        status.stdout.fnmatch_lines(["reuse: the registry in * cannot be used: *lock held*"])
    finally:
        holder.kill()
        holder.wait(10.0)
        if holder.stdout is not None:
            holder.stdout.close()


def test_log_directory_that_cannot_be_written(project: pytest.Pytester) -> None:
    # Root writes anywhere permission bits forbid: a regular file where logs/ belongs fails.
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    directory = registry_dir(project)
    directory.mkdir(parents=True, mode=0o700)
    (directory / "logs").write_text("not a directory\n")
    result = run(project)
    passed_with_warnings(result, 2)
    one_fallback_warning(result, str(directory / "logs"), "not a directory")
    (directory / "logs").unlink()


def unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not unshare_works(), reason="needs root and mount namespaces (unshare -m)")
def test_read_only_registry_with_warm_replicas(project: pytest.Pytester) -> None:
    # Read-only for root too: a read-only bind mount of the cache, in a private mount
    # namespace of the inner run only.
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    warm = only_record(project)

    cache = project.path / ".pytest_cache"
    report = project.path / "ro-report.json"
    command = " ".join(
        [
            f"mount --bind {cache} {cache} && mount -o remount,bind,ro {cache} &&",
            "exec",
            *pytest_command(project, f"--reuse-report={report}"),
        ]
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=project.path,
        env=pytest_environ(project),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "INTERNALERROR" not in output
    assert output.count(FALLBACK) == 1, output
    assert "Read-only file system" in output
    assert "2 passed" in output
    # The warm replica was not touched, and is still there for a writable run.
    assert alive(warm["pid"])
    assert records(project) == [warm]
    result, env = run_report(project)
    result.assert_outcomes(passed=2)
    assert env["replicas_attached"] == 1


def in_a_full_cache(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    """A run whose ``.pytest_cache`` is a full 64 KiB tmpfs, in a private mount namespace."""
    cache = project.path / ".pytest_cache"
    cache.mkdir(exist_ok=True)
    command = " ".join(
        [
            f"mount -t tmpfs -o size=64k,mode=0700 tmpfs {cache} &&",
            f"(dd if=/dev/zero of={cache}/fill bs=4k count=64 2>/dev/null; true) &&",
            "exec",
            *pytest_command(project, *args),
        ]
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=project.path,
        env=pytest_environ(project),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@pytest.mark.skipif(not unshare_works(), reason="needs root and mount namespaces (unshare -m)")
def test_a_full_disk_under_the_registry(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    done = in_a_full_cache(project)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "INTERNALERROR" not in output
    assert output.count(FALLBACK) == 1, output
    assert "No space left on device" in output
    assert "fix: free some space on that file system" in output
    assert "2 passed" in output
    status = in_a_full_cache(project, "--reuse-status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "reuse: the registry in " in status.stdout
    assert "No space left on device" in status.stdout
    stop = in_a_full_cache(project, "--reuse-stop")
    assert stop.returncode == 1, "could not stop anything: not a success"
    assert "reuse: cannot stop warm replicas: " in stop.stdout
    assert "Traceback" not in stop.stdout + stop.stderr


# -- the socket directory under $TMPDIR --------------------------------------------------------


@pytest.fixture
def short_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short $TMPDIR for the inner runs (sockets fall back there when paths are long)."""
    path = Path(tempfile.mkdtemp(prefix="i", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(path))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="another user's directory needs root to make")
def test_socket_directory_created_first_by_another_user(
    project: pytest.Pytester, short_tmpdir: Path
) -> None:
    # Another local user creates $TMPDIR/pytest-reuse-<uid> first (simulated: chown nobody).
    squatted = short_tmpdir / f"pytest-reuse-{os.geteuid()}"
    squatted.mkdir(mode=0o700)
    os.chown(squatted, 65534, 65534)
    # A cache deep enough that sockets cannot live in it (sun_path is 107 bytes).
    project.makefile(".ini", pytest=ini("reuse_replicas = 1", f"cache_dir = {'c' * 100}"))
    project.makepyfile(test_a=FLAG_TESTS)
    report = project.path / "report.json"
    first = run(project, f"--reuse-report={report}")
    first.assert_outcomes(passed=2)
    assert FALLBACK not in first.stdout.str()
    first.stdout.fnmatch_lines(["*1 replica stays warm*"])
    second = run(project)
    second.assert_outcomes(passed=2)
    assert FALLBACK not in second.stdout.str()
    private = [p for p in short_tmpdir.iterdir() if p != squatted]
    assert len(private) == 1, list(short_tmpdir.iterdir())
    info = os.lstat(private[0])
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid())
    assert private[0].name.startswith(f"pytest-reuse-{os.geteuid()}-")
    stop = run(project, "--reuse-stop")
    assert stop.ret == 0
    stop.stdout.fnmatch_lines(["stopped g-*"])


# -- directories the plugin creates are 0700, whoever creates them ------------------------------


def test_removed_cache_is_not_recreated_by_retiring_replicas(project: pytest.Pytester) -> None:
    project.makefile(
        ".ini", pytest=ini("reuse_replicas = 1", "reuse_idle_ttl = 2s", "reuse_scaledown_ttl = 1s")
    )
    project.makepyfile(test_a=FLAG_TESTS)
    result = run(project)
    result.assert_outcomes(passed=2)
    warm = only_record(project)
    subprocess.run(["rm", "-rf", str(project.path / ".pytest_cache")], check=True)
    assert wait_for(lambda: not alive(warm["pid"])), "the replica outlived its registry"
    directory = registry_dir(project)
    assert not directory.exists(), (
        f"re-created with mode {stat.S_IMODE(directory.stat().st_mode):o}"
    )

    result = run(project)
    result.assert_outcomes(passed=2)
    assert FALLBACK not in result.stdout.str()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    result.stdout.fnmatch_lines(["*1 replica stays warm*"])


def test_own_registry_directory_readable_by_others_is_tightened(
    project: pytest.Pytester,
) -> None:
    # What an old version, or filelock, left behind: our directory, 0755.
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    directory = registry_dir(project)
    directory.mkdir(parents=True)
    os.chmod(directory, 0o755)
    result = run(project)
    result.assert_outcomes(passed=2)
    assert FALLBACK not in result.stdout.str()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


# -- strangers on a replica's socket ------------------------------------------------------------


def test_idle_unauthenticated_connections_do_not_block_the_next_run(
    project: pytest.Pytester,
) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    result = run(project)
    result.assert_outcomes(passed=2)
    warm = only_record(project)
    strangers = []
    try:
        for _ in range(4):
            stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stranger.connect(warm["socket"])
            strangers.append(stranger)
        result, env = run_report(project)
        result.assert_outcomes(passed=2)
        assert (env["replicas_started"], env["replicas_attached"]) == (0, 1)
        assert alive(warm["pid"])
    finally:
        for stranger in strangers:
            stranger.close()
    log = Path(warm["log"])

    def refusals() -> list[str]:
        return [line for line in log.read_text().splitlines() if "refused a connection" in line]

    assert wait_for(lambda: len(refusals()) == 4), refusals()
    time.sleep(0.5)  # nothing more comes: each refusal is logged once
    assert len(refusals()) == 4, refusals()


# -- the commands close what they open ----------------------------------------------------------


def test_stop_and_fresh_under_filterwarnings_error(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1", "filterwarnings = error"))
    project.makepyfile(test_a=FLAG_TESTS)
    run(project).assert_outcomes(passed=2)
    fresh = run(project, "--reuse-fresh")
    fresh.assert_outcomes(passed=2)
    assert fresh.ret == 0, fresh.stdout.str() + fresh.stderr.str()
    stop = run(project, "--reuse-stop")
    output = stop.stdout.str() + stop.stderr.str()
    assert stop.ret == 0, output
    assert "ResourceWarning" not in output
    stop.stdout.fnmatch_lines(["stopped g-*"])


# -- --reuse=off says that warm replicas still run ----------------------------------------------


def test_reuse_off_names_the_warm_replicas(project: pytest.Pytester) -> None:
    project.makefile(".ini", pytest=ini("reuse_replicas = 1"))
    project.makepyfile(test_a=FLAG_TESTS)
    off = run(project, "--reuse=off")
    off.assert_outcomes(passed=2)
    assert "warm replica" not in off.stdout.str()
    run(project).assert_outcomes(passed=2)
    warm = only_record(project)
    off = run(project, "--reuse=off")
    off.assert_outcomes(passed=2)
    lines = [line for line in off.stdout.lines if "warm replica" in line]
    assert lines == [
        "reuse: off for this run, but 1 warm replica of this project is still running "
        f"(pid {warm['pid']}) and may hold resources such as ports or files; stop it with: "
        "pytest --reuse-stop"
    ]
