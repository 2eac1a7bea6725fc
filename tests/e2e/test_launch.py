"""End to end: what a test sees of the process a replica is, and a replica that cannot start.

Under every launch strategy a test must find the process plain pytest would give it:
``__main__`` and ``sys.argv`` as in the controller, ``tmp_path`` in the system temp directory
(per user) rather than inside the project, and a detached replica's temp directory safe from
the controller's retention while the replica lives. A replica that cannot start shows its own
traceback in every scope, keeps its log, and is never announced as warm.

Every inner run is bounded; global replicas are stopped at the end of each test (and the root
conftest fails a test that leaves a process running in its directory).
"""

from __future__ import annotations

import ast
import getpass
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run

SCOPES = ("run", "global")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Short test summary lines are cut to the terminal width: keep the messages whole.
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("PYTEST_REUSE_ENV_ALLOW_SHORT_TTL", "1")


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester directory whose warm replicas are stopped at the end."""
    try:
        yield pytester
    finally:
        stopped = run(pytester, "--reuse-stop")
        assert stopped.ret == 0, stopped.stdout.str() + stopped.stderr.str()


def ini(scope: str) -> str:
    return f"[pytest]\nreuse_scope = {scope}\n"


# -- __main__ --------------------------------------------------------------------------------

MAIN_PROBE = """
import sys
from pathlib import Path

import pytest


@pytest.mark.reuse
def test_main(request):
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    seen = {
        "file": getattr(main, "__file__", None),
        "spec": getattr(spec, "name", None),
        "package": getattr(main, "__package__", None),
        "argv0": sys.argv[0],
    }
    out = Path(str(request.config.rootpath)) / f"main-{request.config.getoption('reuse')}.txt"
    out.write_text(repr(seen))
"""


@pytest.mark.parametrize("scope", SCOPES)
def test_main_module_is_the_one_plain_pytest_has(project: pytest.Pytester, scope: str) -> None:
    project.makeini(ini(scope))
    project.makepyfile(test_main=MAIN_PROBE)
    plain = run(project, "--reuse=off")
    plain.assert_outcomes(passed=1)
    reused = run(project, "-rA")
    reused.assert_outcomes(passed=1)

    expected = ast.literal_eval((project.path / "main-off.txt").read_text())
    seen = ast.literal_eval((project.path / "main-on.txt").read_text())
    # pytester runs "python -m pytest": __main__ is pytest's __main__.py.
    assert expected["spec"] == "pytest.__main__", expected
    assert Path(expected["file"]).name == "__main__.py", expected
    assert seen == expected


# -- tmp_path ----------------------------------------------------------------------------------

TMP_PROBE = """
import os
from pathlib import Path

import pytest


@pytest.mark.reuse
def test_tmp(tmp_path, request):
    (tmp_path / "mine.txt").write_text("x")
    log = Path(str(request.config.rootpath)) / "tmp_paths.txt"
    with log.open("a") as f:
        f.write(f"{request.config.getoption('reuse')} {os.getpid()} {tmp_path}\\n")
"""


def run_without_basetemp(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run(pytester, *args, basetemp=False)


def tmp_paths(pytester: pytest.Pytester) -> list[tuple[str, int, Path]]:
    lines = (pytester.path / "tmp_paths.txt").read_text().split("\n")
    return [(w[0], int(w[1]), Path(w[2])) for w in (line.split() for line in lines) if w]


def test_global_tmp_path_lives_in_the_users_temp_directory_and_outlives_retention(
    project: pytest.Pytester,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    temproot = tmp_path_factory.mktemp("temproot")
    monkeypatch.setenv("PYTEST_DEBUG_TEMPROOT", str(temproot))
    user_root = temproot / f"pytest-of-{getpass.getuser()}"
    # Six runs must fit in the replica's idle time, however loaded the machine.
    project.makeini(ini("global") + "reuse_replicas = 1\nreuse_idle_ttl = 600\n")
    project.makepyfile(test_tmp=TMP_PROBE)

    first = run_without_basetemp(project)
    assert first.ret == 0, first.stdout.str() + first.stderr.str()
    plain = run_without_basetemp(project, "--reuse=off")
    assert plain.ret == 0, plain.stdout.str()
    (_, replica_pid, replica_tmp), (_, plain_pid, plain_tmp) = tmp_paths(project)
    assert replica_pid != plain_pid
    # Where plain pytest puts it: a numbered directory of the user's, outside the project (a
    # nested pytest run there must not find the project's ini).
    assert plain_tmp.parent.parent == user_root, plain_tmp
    assert replica_tmp.parent.parent == user_root, replica_tmp
    assert not replica_tmp.is_relative_to(project.path), replica_tmp
    assert replica_tmp.parent != plain_tmp.parent, "the replica has a basetemp of its own"

    # More plain runs than pytest keeps (tmp_path_retention_count = 3): the live replica's
    # directory survives the controllers' clean-ups, and the warm replica still serves.
    for _ in range(4):
        assert run_without_basetemp(project, "--reuse=off").ret == 0
    assert (replica_tmp / "mine.txt").exists(), sorted(p.name for p in user_root.iterdir())
    assert not plain_tmp.exists(), "pytest's own retention still works"
    warm = run_without_basetemp(project)
    assert warm.ret == 0, warm.stdout.str() + warm.stderr.str()
    mode, pid, warm_tmp = tmp_paths(project)[-1]
    assert (mode, pid) == ("on", replica_pid), "the same warm replica served"
    assert warm_tmp.parent == replica_tmp.parent


# -- a replica that cannot start ---------------------------------------------------------------

FAILING_SESSIONSTART = """
import os


def pytest_sessionstart(session):
    if os.environ.get("PYTEST_REUSE_REPLICA"):
        raise RuntimeError("replica-only-sessionstart-failure")
"""

TWO_TESTS = """
import pytest


@pytest.mark.reuse
def test_marked():
    pass


def test_local():
    pass
"""


@pytest.mark.parametrize("scope", SCOPES)
def test_start_failure_shows_the_traceback_keeps_the_log_and_claims_nothing_warm(
    project: pytest.Pytester, scope: str
) -> None:
    # A hook that raises makes pytest end the replica's session with INTERNALERROR (exit code
    # 3), printed to a terminal nobody reads.
    project.makeini(ini(scope))
    project.makeconftest(FAILING_SESSIONSTART)
    project.makepyfile(test_two=TWO_TESTS)

    result = run(project, "-rA")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert result.parseoutcomes() == {"passed": 1, "errors": 1}, out
    assert re.search(r"^ERROR test_two.py::test_marked - .*could not start", out, re.M), out
    assert "RuntimeError: replica-only-sessionstart-failure" in out
    assert "conftest.py" in out
    kept = re.search(r"the replica's log is kept: (\S+)", out)
    assert kept is not None, out
    assert "replica-only-sessionstart-failure" in Path(kept.group(1)).read_text()
    assert not re.search(r"stays? warm", out), out
    status = run(project, "--reuse-status")
    assert "reuse: 0 warm replicas" in status.stdout.str(), status.stdout.str()
