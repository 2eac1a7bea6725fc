"""End to end: the leak checks blame a test only for what it left behind. State held by fixtures
of a wider scope, by the session's event loop (concurrency > 1) or by the plugin's own
connections (``pytest -n`` sharing replicas) is never a test's leak, under ``reuse_leaks = fail``,
where a false positive would be an error."""

from __future__ import annotations

import pytest

from tests.helpers import run


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def ini(*lines: str) -> str:
    return "\n".join(["[pytest]", *lines]) + "\n"


def test_a_variable_a_function_fixture_removes_and_restores_is_no_leak(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(ini("reuse_scope = run", "reuse_replicas = 1", "reuse_leaks = fail"))
    pytester.makeconftest(
        """
        import os

        import pytest

        os.environ["PROJECT_VAR"] = "1"


        @pytest.fixture(scope="module")
        def resource():
            yield


        @pytest.fixture
        def without_var(monkeypatch):
            monkeypatch.delenv("PROJECT_VAR")
        """
    )
    pytester.makepyfile(
        test_env="""
        import os

        import pytest

        pytestmark = pytest.mark.reuse


        def test_a_first_sets_up_the_module_fixture(resource, without_var):
            assert "PROJECT_VAR" not in os.environ


        def test_b(resource, without_var):
            pass


        def test_c_leaks_for_real(resource):
            os.environ["LEAKED_VAR"] = "x"
        """
    )
    result = run(pytester, "-p", "no:randomly", "-rE")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["ERROR test_env.py::test_c_leaks_for_real - *environment variables changed: LEAKED_VAR*"]
    )
    assert "PROJECT_VAR" not in result.stdout.str()


def test_the_session_event_loop_of_concurrent_tests_is_no_leak(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(
        ini(
            "reuse_scope = run",
            "reuse_replicas = 1",
            "reuse_concurrency = 4",
            "reuse_leaks = fail",
            "asyncio_mode = auto",
            "asyncio_default_fixture_loop_scope = session",
            "asyncio_default_test_loop_scope = session",
        )
    )
    pytester.makepyfile(
        test_async="""
        import asyncio

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.mark.parametrize("n", range(8))
        async def test_sleeps(n):
            await asyncio.sleep(0.05)
        """
    )
    # pytest-asyncio on (helpers.run turns it off for the suite's other inner runs).
    result = run(
        pytester,
        plugins=(
            "-p",
            "no:hypothesispytest",
            "-p",
            "no:anyio",
            "-p",
            "reuse_env",
            "-p",
            "no:randomly",
        ),
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=8)
    assert "left state behind" not in result.stdout.str()


def test_the_plugins_own_connections_under_xdist_are_no_leak(pytester: pytest.Pytester) -> None:
    pytester.makeini(ini("reuse_scope = global", "reuse_replicas = (1, 2)", "reuse_leaks = fail"))
    pytester.makepyfile(
        test_sleep="""
        import time

        import pytest

        pytestmark = pytest.mark.reuse


        @pytest.mark.parametrize("n", range(12))
        def test_sleeps(n):
            time.sleep(0.2)
        """
    )
    try:
        result = run(pytester, "-p", "xdist", "-n", "4", "-p", "no:randomly")
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        result.assert_outcomes(passed=12)
        assert "file descriptors left open" not in result.stdout.str()
    finally:
        run(pytester, "--reuse-stop")
