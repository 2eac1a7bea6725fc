"""Async tests run concurrently inside replicas, end to end (issue: concurrency)."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import COMPAT_OFF, run

pytest.importorskip("pytest_asyncio")

INNER = ("-p", "reuse_env", "-p", "no:hypothesispytest", "-p", "no:anyio", *COMPAT_OFF)


def make_ini(pytester: pytest.Pytester, concurrency: int, extra: str = "") -> None:
    pytester.makeini(
        f"""
        [pytest]
        reuse_replicas = 1
        reuse_scope = run
        reuse_concurrency = {concurrency}
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        {extra}
        """
    )


BARRIER_SUITE = """
    import asyncio, os
    import pytest

    N = int(os.environ["BARRIER_N"])
    barrier = None

    @pytest.fixture(scope="session")
    def shared():
        return {"setups": 1}

    @pytest.mark.reuse
    @pytest.mark.parametrize("i", range(N))
    async def test_meet(shared, i):
        global barrier
        if barrier is None:
            barrier = asyncio.Barrier(N)
        await asyncio.wait_for(barrier.wait(), timeout=5)
"""


def test_n_tests_meet_at_a_barrier_only_with_concurrency_n(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_barrier=BARRIER_SUITE)
    monkeypatch.setenv("BARRIER_N", "8")
    make_ini(pytester, 8)
    result = run(pytester, "--reuse-report=r.json", plugins=INNER)
    result.assert_outcomes(passed=8)
    env = json.loads((pytester.path / "r.json").read_text())["environments"][0]
    assert env["peak_tests"] == 8
    # One fewer slot than the barrier needs: nobody gets through.
    make_ini(pytester, 7)
    result = run(pytester, plugins=INNER)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 7, result.stdout.str()
    result.stdout.fnmatch_lines(["*TimeoutError*"])


def test_crash_mid_batch_reports_every_test_in_flight(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_crash="""
        import asyncio, os
        import pytest

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(3))
        async def test_waits(i):
            await asyncio.sleep(2)

        @pytest.mark.reuse
        async def test_dies():
            await asyncio.sleep(0.3)
            os._exit(7)

        @pytest.mark.reuse
        async def test_after():
            await asyncio.sleep(0)
        """
    )
    make_ini(pytester, 8)
    result = run(pytester, "-rf", plugins=INNER)
    text = result.stdout.str()
    for name in ("test_dies", "test_waits[0]", "test_waits[1]", "test_waits[2]"):
        assert re.search(
            rf"FAILED test_crash.py::{re.escape(name)} - replica r0 \(pid \d+\) crashed while", text
        ), text
    assert "exit code 7" in text
    assert "running concurrently with" in text
    # What the dead replica held but had not started runs on its replacement.
    result.assert_outcomes(failed=4, passed=1)


def test_timeout_cancels_only_the_slow_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
        import asyncio
        import pytest

        @pytest.mark.reuse
        async def test_slow():
            await asyncio.sleep(30)

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(4))
        async def test_quick(i):
            await asyncio.sleep(0.5)
        """
    )
    make_ini(pytester, 5, "reuse_timeout = 1")
    result = run(pytester, plugins=INNER)
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines(["*test_slow*", "*ConcurrentTestTimeout*"])
    assert "crashed" not in result.stdout.str(), "the replica itself was not killed"


def test_output_is_attributed_to_its_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_out="""
        import asyncio
        import pytest

        @pytest.mark.reuse
        @pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
        async def test_talks(name):
            for step in range(3):
                print(f"{name}-{step}")
                await asyncio.sleep(0.05)
            assert name != "beta"
        """
    )
    make_ini(pytester, 3)
    result = run(pytester, "-rA", plugins=INNER)
    result.assert_outcomes(failed=1, passed=2)
    text = result.stdout.str()
    beta = text.split("test_talks[beta]", 1)[1].split("test_talks[", 1)[0]
    assert "beta-0" in beta
    assert "beta-2" in beta
    assert "alpha-" not in beta
    assert "gamma-" not in beta
    assert "reuse: ran concurrently with" in beta


def test_concurrency_on_sync_tests_is_noted_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_sync="""
        import pytest

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(3))
        def test_plain(i):
            pass
        """
    )
    make_ini(pytester, 4)
    result = run(pytester, plugins=INNER)
    result.assert_outcomes(passed=3)
    notes = [line for line in result.outlines if "has no effect here" in line]
    assert len(notes) == 1, result.stdout.str()
