"""Elastic environments end to end: pre-warming, retirement by TTL within a run, the summary,
the JSON report and the -v labels. The scaling rules themselves are unit-tested with a fake
clock in test_scaling.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helpers import COMPAT_OFF, run

INNER = (
    "-p",
    "reuse_env",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:anyio",
    "-p",
    "no:asyncio",
    *COMPAT_OFF,
)


def report(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    result = run(pytester, "--reuse-report=r.json", *args, timeout=90, plugins=INNER)
    return result, json.loads((pytester.path / "r.json").read_text())


def test_prewarm_sets_the_fixture_up_before_the_first_test_arrives(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        """
        [pytest]
        reuse_replicas = 1
        reuse_scope = run
        reuse_prewarm = model
        """
    )
    pytester.makepyfile(
        test_warm="""
        import os, time
        import pytest

        @pytest.fixture(scope="session")
        def model():
            time.sleep(1.0)
            with open("setup.log", "a") as f:
                f.write(f"{os.getpid()} {time.monotonic()}\\n")
            return "m"

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(3))
        def test_uses(model, i):
            with open("tests.log", "a") as f:
                f.write(f"{os.getpid()} {time.monotonic()}\\n")
        """
    )
    result = run(pytester, "--durations=0", "-vv", timeout=90, plugins=INNER)
    result.assert_outcomes(passed=3)
    (setup,) = (pytester.path / "setup.log").read_text().splitlines()
    first_test = (pytester.path / "tests.log").read_text().splitlines()[0]
    assert setup.split()[0] == first_test.split()[0], "same replica"
    assert float(setup.split()[1]) < float(first_test.split()[1])
    # No test paid the second of setup: every setup phase is quick.
    setups = [
        float(m.group(1))
        for m in re.finditer(r"^([\d.]+)s setup ", result.stdout.str(), re.MULTILINE)
    ]
    assert setups, result.stdout.str()
    assert max(setups) < 0.5, setups


def test_unused_prewarm_fixture_is_a_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\nreuse_prewarm = nosuch\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.reuse\ndef test_a():\n    pass\n")
    result = run(pytester, timeout=90, plugins=INNER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*prewarm fixture 'nosuch' is not used by any collected test*"])


SUITE = """
    import os, time
    import pytest

    @pytest.fixture(scope="session")
    def heavy():
        time.sleep(0.3)

    @pytest.mark.reuse
    @pytest.mark.parametrize("i", range(6))
    def test_marked(heavy, i):
        time.sleep(0.05)

    @pytest.mark.reuse("solo")
    def test_solo():
        pass
"""


def test_summary_json_and_verbose_labels(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        reuse_replicas = 2
        reuse_scope = run
        reuse_policies =
            solo: replicas=1
        """
    )
    pytester.makepyfile(test_suite=SUITE)
    result, data = report(pytester, "-v")
    result.assert_outcomes(passed=7)
    text = result.stdout.str()
    # -v: which replica ran each test, and whether it was that replica's first.
    labels = re.findall(r"^\[(r\d+) (cold|warm)\] .*(PASSED|FAILED)", text, re.MULTILINE)
    assert len(labels) == 7
    firsts: dict[str, str] = {}
    for replica, state, _ in labels:
        firsts.setdefault(replica, state)
    assert set(firsts.values()) == {"cold"}, "each replica's first test is labelled cold"
    assert sum(state == "cold" for _, state, _ in labels) == len(firsts)
    # The terminal section.
    result.stdout.fnmatch_lines(
        [
            "*= reuse =*",
            "default (replicas=2 *scope=run): 2 replicas started (setup * s each), "
            "4 tests warm, 2 cold, peak 2 busy; retired: 2 end of run; "
            "setup * s in all, plain pytest ~* s",
            "solo (replicas=1 *): 1 replica started *0 tests warm, 1 cold*",
            "*note: capacity 1 (at most 1 replica x concurrency 1)*",
            "*reuse report written to r.json*",
        ]
    )
    # The JSON report, with the documented schema.
    assert data["version"] == 1
    envs = {env["name"]: env for env in data["environments"]}
    assert set(envs) == {"default", "solo"}
    default = envs["default"]
    for key in (
        "policy",
        "replicas_started",
        "replicas_attached",
        "start_failures",
        "retired",
        "tests_cold",
        "tests_warm",
        "peak_busy",
        "peak_tests",
        "setup_seconds_total",
        "setup_seconds_mean",
        "plain_setup_seconds",
        "saved_seconds_estimate",
        "skipped_seconds",
        "notes",
        "replicas",
        "test_phase_seconds",
        "max_replicas",
    ):
        assert key in default, key
    assert default["replicas_started"] == 2
    assert (default["tests_warm"], default["tests_cold"]) == (4, 2)
    assert default["retired"] == {"end of run": 2}
    assert default["setup_seconds_mean"] > 0.3, "includes the first test's fixture setup"
    # Plain pytest sets the environment up once; this run started two replicas: nothing saved.
    assert default["plain_setup_seconds"] == pytest.approx(default["setup_seconds_mean"])
    assert default["saved_seconds_estimate"] == 0.0
    assert sum(r["tests_run"] for r in default["replicas"]) == 6
    assert all(r["ended"] == "end of run" for r in default["replicas"])
    assert len(data["tests"]) == 7
    assert {t["outcome"] for t in data["tests"].values()} == {"passed"}
    assert envs["solo"]["notes"], "starvation advice for max replicas and concurrency both 1"


def test_idle_replicas_retire_within_a_long_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While unmarked tests keep the run going, an idle environment shrinks to min by
    scaledown_ttl and then to nothing by idle_ttl (test-only short TTLs)."""
    monkeypatch.setenv("PYTEST_REUSE_ENV_ALLOW_SHORT_TTL", "1")
    pytester.makeini(
        """
        [pytest]
        reuse_replicas = (1, 2)
        reuse_scope = global
        reuse_scaledown_ttl = 500ms
        reuse_idle_ttl = 1500ms
        """
    )
    pytester.makepyfile(
        test_a_marked="""
        import time
        import pytest

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(4))
        def test_marked(i):
            time.sleep(0.2)
        """,
        test_b_local="""
        import time
        import pytest

        @pytest.mark.parametrize("i", range(20))
        def test_local_work(i):
            time.sleep(0.2)
        """,
    )
    try:
        result, data = report(pytester, "-v")
    finally:
        run(pytester, "--reuse-stop", timeout=60, plugins=INNER)
    result.assert_outcomes(passed=24)
    env = data["environments"][0]
    assert env["replicas_started"] == 2
    assert env["retired"].get("scaledown") == 1, env["retired"]
    assert env["retired"].get("idle") == 1, env["retired"]
    # Nothing stays warm: both retired during the run.
    assert "stay warm" not in result.stdout.str()


UNEVEN = """
import os
import time

import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("i", range(120))
def test_uneven(i):
    # Replica r0 is slow, r1 quick: r1 runs dry first and takes what r0 has not started.
    time.sleep(0.1 if os.environ.get("PYTEST_REUSE_REPLICA") == "r0" else 0.001)
"""


def test_a_replica_that_runs_dry_takes_tests_from_a_slower_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 2\nreuse_scope = run\n")
    pytester.makepyfile(test_uneven=UNEVEN)
    result, data = report(pytester, "--junitxml=j.xml")
    result.assert_outcomes(passed=120)
    (env,) = data["environments"]
    ran = {r["id"]: r["tests_run"] for r in env["replicas"]}
    assert sum(ran.values()) == 120, ran
    assert env["tests_stolen"] >= 1, env
    assert ran["r1"] > ran["r0"], ran
    junit = (pytester.path / "j.xml").read_text()
    assert junit.count("<testcase ") == 120, "each test reported once"
    assert sorted(data["tests"]) == sorted(f"test_uneven.py::test_uneven[{i}]" for i in range(120))
