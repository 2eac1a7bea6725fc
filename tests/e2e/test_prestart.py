"""End to end: spare replicas (``prestart.py``, ``controller/launch/spare.py``).

The second run of a command that started a run-scoped replica gets it from a spare started as
the plugin registered, with the same outcomes; a spare that is not what a fresh replica would
be (a conftest set an environment variable) is ended and a fresh one started; a command that
routes nothing any more ends its spare and forgets its hint. No run leaves a process behind.

The inner runs go without pytester's ``--basetemp`` (``basetemp=False``): that option differs
on every run, so no two would be the same command.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from tests.helpers import ONE_RUN_SCOPED_REPLICA_INI as INI
from tests.helpers import processes_under, run, wait_for

TESTS = """
import os
import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("i", range(5))
def test_quick(i):
    assert os.environ.get("PYTEST_REUSE_REPLICA"), "ran in a replica"
"""


def reuse_run(pytester: pytest.Pytester) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = run(pytester, "--reuse-report=r.json", basetemp=False)
    report = pytester.path / "r.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    report.unlink(missing_ok=True)
    assert wait_for(lambda: not processes_under(pytester.path)), (
        f"left running: {processes_under(pytester.path)}\n{result.stdout.str()}"
    )
    return result, data


def spares_used(data: dict[str, Any]) -> list[bool]:
    return [r["spare"] for env in data["environments"] for r in env["replicas"]]


def hints(pytester: pytest.Pytester) -> dict[str, int]:
    path = pytester.path / ".pytest_cache" / "reuse" / "prestart.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_the_second_run_of_a_command_gets_its_replica_from_a_spare(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_quick=TESTS)
    first, data = reuse_run(pytester)
    first.assert_outcomes(passed=5)
    assert spares_used(data) == [False], "nothing hinted yet"
    assert list(hints(pytester).values()) == [1]
    second, data = reuse_run(pytester)
    second.assert_outcomes(passed=5)
    assert spares_used(data) == [True], second.stdout.str()
    second.stdout.fnmatch_lines(["*1 replica started (1 from spares)*"])
    assert list(hints(pytester).values()) == [1]


def test_a_spare_missing_what_the_controller_exported_is_ended_for_a_fresh_replica(
    pytester: pytest.Pytester,
) -> None:
    """A conftest exports a variable from the controller only (for its workers, as with
    xdist): a replica started after that inherits it; the spare, started before, would not."""
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import os

        def pytest_configure(config):
            if not hasattr(config, "workerinput"):
                os.environ["SERVICE_URL"] = "http://127.0.0.1:8000"
        """
    )
    pytester.makepyfile(
        test_env="""
        import os
        import pytest

        @pytest.mark.reuse
        def test_inherited():
            assert os.environ.get("SERVICE_URL") == "http://127.0.0.1:8000"
        """
    )
    for _ in range(2):
        result, data = reuse_run(pytester)
        result.assert_outcomes(passed=1)
        assert spares_used(data) == [False]


def test_a_command_that_routes_nothing_any_more_ends_its_spare_and_forgets(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_quick=TESTS)
    reuse_run(pytester)[0].assert_outcomes(passed=5)
    assert hints(pytester)
    pytester.makepyfile(test_quick="def test_plain():\n    pass\n")
    result, data = reuse_run(pytester)  # its spare started, and is ended: nothing left
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*= reuse =*")
    assert data.get("environments", []) == []
    assert hints(pytester) == {}, "forgotten: the next run starts no spare"


#: A plugin loaded before the spares fork: it registers an exit handler, and the tests say
#: which process they ran in.
FORK_PROBE_PLUGIN = """
import atexit
import os

atexit.register(lambda: open("exits.txt", "a").write(f"{os.getpid()}\\n"))
"""

FORK_PROBE_TESTS = """
import os
import pytest

@pytest.mark.reuse
def test_where():
    with open("/proc/self/cmdline", "rb") as mine:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as parent:
            forked = mine.read() == parent.read()
    with open("where.txt", "a") as f:
        f.write(f"{os.getppid()} {os.getpid()} {forked}\\n")
"""


def fork_probe(pytester: pytest.Pytester, **env: str) -> list[tuple[int, int, str]]:
    """Two runs of one command with the probe plugin: each run's (controller pid, replica
    pid, forked) as its test saw it (the exit handler's lines are in exits.txt)."""
    pytester.makeini(INI)
    pytester.makepyfile(fork_probe=FORK_PROBE_PLUGIN, test_where=FORK_PROBE_TESTS)
    for name, value in env.items():
        pytester._monkeypatch.setenv(name, value)
    for _ in range(2):
        result = run(pytester, "-p", "fork_probe", basetemp=False)
        result.assert_outcomes(passed=1)
        assert wait_for(lambda: not processes_under(pytester.path))
    lines = (pytester.path / "where.txt").read_text().split()
    return [(int(lines[n]), int(lines[n + 1]), lines[n + 2]) for n in range(0, len(lines), 3)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="spares fork on Linux only")
def test_a_spare_is_forked_from_the_pytest_process_and_runs_its_exit_handlers_once(
    pytester: pytest.Pytester,
) -> None:
    # As a popen replica, which imports the plugin and registers the handler itself, the
    # forked one runs it (logging.shutdown is such a handler: buffered records are written).
    seen = fork_probe(pytester)
    assert [forked for _, _, forked in seen] == ["False", "True"], "a popen replica, then a fork"
    exits = (pytester.path / "exits.txt").read_text().split()
    for controller, replica, _ in seen:
        assert str(controller) in exits
        assert str(replica) in exits
    assert len(exits) == len(set(exits)), f"an exit handler ran twice in one pid: {exits}"


def test_spares_are_popen_interpreters_with_pytest_reuse_fork_0(
    pytester: pytest.Pytester,
) -> None:
    seen = fork_probe(pytester, PYTEST_REUSE_FORK="0")
    assert [forked for _, _, forked in seen] == ["False", "False"]


# -- environments with a test in every file start at session start ---------------------------

#: A test file of the run with no routed test: it says when a replica imports it.
UNROUTED = """
import os

if os.environ.get("PYTEST_REUSE_REPLICA"):
    open("imported-in-a-replica", "w").close()


def test_here():
    assert not os.environ.get("PYTEST_REUSE_REPLICA")
"""


def every_file_hints(pytester: pytest.Pytester) -> list[list[str]]:
    path = pytester.path / ".pytest_cache" / "reuse" / "every-file.json"
    return list(json.loads(path.read_text()).values()) if path.exists() else []


def test_an_environment_with_a_test_in_every_file_starts_before_collection_next_run(
    pytester: pytest.Pytester,
) -> None:
    """Its replica collects the run's arguments, alongside the pytest process: a file added
    since, with no routed test, is imported there too (as under reuse_all) and its test still
    runs here; the hint then no longer names the environment, and the next run's replica
    collects only its own files again."""
    pytester.makeini(INI)
    pytester.makepyfile(test_quick=TESTS, test_more=TESTS)
    first, _ = reuse_run(pytester)
    first.assert_outcomes(passed=10)
    assert every_file_hints(pytester) == [
        ["replicas=1 idle_ttl=30 concurrency=1 scaledown_ttl=30 scope=run"]
    ]
    pytester.makepyfile(test_unrouted=UNROUTED)
    second, data = reuse_run(pytester)
    second.assert_outcomes(passed=11)
    assert spares_used(data) == [True]
    assert (pytester.path / "imported-in-a-replica").exists(), "collected the whole run"
    assert every_file_hints(pytester) == [], "not every file holds a routed test any more"
    (pytester.path / "imported-in-a-replica").unlink()
    third, _ = reuse_run(pytester)
    third.assert_outcomes(passed=11)
    assert not (pytester.path / "imported-in-a-replica").exists(), "only its own files"


def test_a_hinted_environment_no_test_uses_any_more_ends_with_the_run(
    pytester: pytest.Pytester,
) -> None:
    """The policy changed since the hint (the ini asks for another scaledown_ttl): the hinted
    environment's replica starts, gets no test and ends; the tests run in the new one."""
    pytester.makeini(INI)
    pytester.makepyfile(test_quick=TESTS)
    reuse_run(pytester)[0].assert_outcomes(passed=5)
    pytester.makeini(INI + "reuse_scaledown_ttl = 45\n")
    result, data = reuse_run(pytester)  # reuse_run checks no process is left
    result.assert_outcomes(passed=5)
    ran = {r["id"] for env in data["environments"] for r in env["replicas"] if r["tests_run"]}
    assert len(ran) == 1, data
    assert every_file_hints(pytester) == [
        ["replicas=1 idle_ttl=30 concurrency=1 scaledown_ttl=45 scope=run"]
    ]
    again, data = reuse_run(pytester)
    again.assert_outcomes(passed=5)
    assert spares_used(data) == [True], again.stdout.str()
