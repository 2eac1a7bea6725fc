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
