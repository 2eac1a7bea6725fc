"""The scenarios: a suite each, the contenders that run it, and what their numbers mean.

The first contender of a scenario is its reference ("plain pytest"): every other contender must
run the same tests with the same outcomes, and ratios are taken against its median.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import median

from benchmarks.measure import RunResult
from benchmarks.probe import PluginSetup
from benchmarks.suites import (
    FIXTURE_MEGABYTES_ENV,
    FIXTURE_SECONDS_ENV,
    async_suite,
    expensive_suite,
    trivial_suite,
)

# Plugins installed for other scenarios stay out of the way (pytest-asyncio-cooperative also
# breaks xdist runs); every contender of a sync scenario gets the same blocks.
NO_ASYNC = ("-p", "no:asyncio", "-p", "no:asyncio-cooperative")
PYTEST_ASYNCIO = (
    "-p",
    "no:asyncio-cooperative",
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
)
COOPERATIVE = (
    "-p",
    "no:asyncio",
)

EXPENSIVE_SECONDS = 2.0
EXPENSIVE_TESTS = 200
EXPENSIVE_REPLICAS = 2
TARGET_RATIO = 1.3
TRIVIAL_TESTS = 2000
ASYNC_TESTS = 200
ASYNC_SLEEP = 0.05
SCALE_TESTS = 60
SCALE_SLEEP = 0.1
SCALE_FIXTURE_SECONDS = 1.0
SCALE_MAX_REPLICAS = 3
MEMORY_TESTS = 100
MEMORY_MEGABYTES = 64
#: per_test_overhead's plugin contender without leak checks.
LEAKS_OFF = "reuse_env, leak checks off"


@dataclass(frozen=True)
class Contender:
    """One way of running a scenario's suite."""

    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    needs_plugin: bool = False
    # Run once untimed, then time a second run against what the first left warm.
    warm_first: bool = False
    # Distributions the contender needs besides pytest (checked before running).
    requires: tuple[str, ...] = ()


@dataclass
class ContenderResult:
    """What a contender measured so far; ``unavailable`` ends its measuring."""

    contender: Contender
    runs: list[RunResult] = field(default_factory=list)
    warmups: list[RunResult] = field(default_factory=list)
    unavailable: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return median(r.seconds for r in self.runs) if self.runs and self.usable else None

    @property
    def usable(self) -> bool:
        return self.unavailable is None and self.error is None

    @property
    def setups(self) -> list[int]:
        return [r.setups for r in self.runs]

    @property
    def peak_rss(self) -> int | None:
        peaks = [r.peak_rss for r in self.runs if r.peak_rss is not None]
        return int(median(peaks)) if peaks and self.usable else None


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    files: Mapping[str, str]
    tests: int
    contenders: tuple[Contender, ...]
    timeout: float
    sample_memory: bool = False
    # Looks at one run as soon as it is done: a reason the contender is "not available", or None.
    run_check: Callable[[Contender, RunResult], str | None] | None = None
    # Looks at all results once measuring is done and adds notes.
    verdict: Callable[[dict[str, ContenderResult]], None] | None = None


def ratio(result: ContenderResult, reference: ContenderResult) -> float | None:
    if result.median is None or not reference.median:
        return None
    return result.median / reference.median


def expensive_setup(plugin: PluginSetup) -> Scenario:
    """A 2 s session fixture and 200 quick tests: plain, floor, -n 2, reuse (cold, warm)."""
    cost = {FIXTURE_SECONDS_ENV: str(EXPENSIVE_SECONDS)}
    reuse = (*plugin.on_args, "-o", f"reuse_replicas={EXPENSIVE_REPLICAS}")
    contenders = (
        Contender("plain pytest", (*NO_ASYNC, *plugin.off_args), cost),
        Contender(
            "floor (fixture cost 0)", (*NO_ASYNC, *plugin.off_args), {FIXTURE_SECONDS_ENV: "0"}
        ),
        Contender(
            "pytest -n 2",
            (*NO_ASYNC, *plugin.off_args, "-n", "2"),
            cost,
            requires=("pytest-xdist",),
        ),
        Contender(
            "reuse_env, scope=run",
            (*NO_ASYNC, *reuse, "-o", "reuse_scope=run"),
            cost,
            needs_plugin=True,
        ),
        Contender(
            "reuse_env warm, scope=global",
            (*NO_ASYNC, *reuse, "-o", "reuse_scope=global"),
            cost,
            needs_plugin=True,
            warm_first=True,
        ),
    )

    def verdict(results: dict[str, ContenderResult]) -> None:
        plain = results["plain pytest"]
        one_run = results["reuse_env, scope=run"]
        r = ratio(one_run, plain)
        if r is not None:
            most = max(one_run.setups)
            met = r <= TARGET_RATIO and most <= EXPENSIVE_REPLICAS
            one_run.notes.append(
                f"target <= {TARGET_RATIO}x plain and <= {EXPENSIVE_REPLICAS} setups: "
                f"{'met' if met else 'missed'} ({r:.2f}x, {most} setups)"
            )
        warm = results["reuse_env warm, scope=global"]
        if warm.usable and warm.runs:
            if any(s > 0 for s in warm.setups):
                warm.notes.append(
                    "cold (global scope not available): the timed second run "
                    "set the fixture up again"
                )
            else:
                warm.notes.append("warm: the timed second run set nothing up")

    return Scenario(
        name="expensive_setup",
        summary=f"{EXPENSIVE_SECONDS:g} s session fixture, {EXPENSIVE_TESTS} quick tests marked "
        "reuse",
        files=expensive_suite(EXPENSIVE_TESTS),
        tests=EXPENSIVE_TESTS,
        contenders=contenders,
        timeout=45,
        verdict=verdict,
    )


def per_test_overhead(plugin: PluginSetup) -> Scenario:
    """2000 trivial tests: what each test costs through a worker or a replica."""
    one_replica = (*plugin.on_args, "-o", "reuse_replicas=1", "-o", "reuse_scope=run")
    contenders = (
        Contender("plain pytest", (*NO_ASYNC, *plugin.off_args)),
        Contender(
            "pytest -n 1", (*NO_ASYNC, *plugin.off_args, "-n", "1"), requires=("pytest-xdist",)
        ),
        Contender(
            "reuse_env, 1 replica",
            (*NO_ASYNC, *one_replica),
            needs_plugin=True,
        ),
        # Leak checks (reuse_leaks, default warn) snapshot the process around every test:
        # the same run without them shows what they cost a test.
        Contender(
            LEAKS_OFF,
            (*NO_ASYNC, *one_replica, "-o", "reuse_leaks=off"),
            needs_plugin=True,
        ),
    )

    def verdict(results: dict[str, ContenderResult]) -> None:
        plain = results["plain pytest"].median
        for result in results.values():
            if (
                result.median is not None
                and plain is not None
                and result.contender.name != ("plain pytest")
            ):
                extra = (result.median - plain) / TRIVIAL_TESTS * 1000
                result.notes.append(f"{extra:+.2f} ms per test vs plain")
        checked, unchecked = results["reuse_env, 1 replica"], results[LEAKS_OFF]
        if checked.median is not None and unchecked.median is not None:
            cost = (checked.median - unchecked.median) / TRIVIAL_TESTS * 1000
            checked.notes.append(f"leak checks: {cost:+.3f} ms per test vs {LEAKS_OFF!r}")

    return Scenario(
        name="per_test_overhead",
        summary=f"{TRIVIAL_TESTS} trivial tests marked reuse, one environment",
        files=trivial_suite(TRIVIAL_TESTS),
        tests=TRIVIAL_TESTS,
        contenders=contenders,
        timeout=45,
        verdict=verdict,
    )


def async_io(plugin: PluginSetup) -> Scenario:
    """200 tests awaiting 50 ms: pytest-asyncio, -cooperative, reuse at concurrency 1/20/200."""
    serial = ASYNC_TESTS * ASYNC_SLEEP
    contenders = [
        Contender(
            "pytest-asyncio (auto)",
            (*PYTEST_ASYNCIO, *plugin.off_args),
            requires=("pytest-asyncio",),
        ),
        Contender(
            "pytest-asyncio-cooperative",
            (*COOPERATIVE, *plugin.off_args),
            requires=("pytest-asyncio-cooperative",),
        ),
    ]
    for concurrency in (1, 20, 200):
        contenders.append(
            Contender(
                f"reuse_env, concurrency={concurrency}",
                (
                    *PYTEST_ASYNCIO,
                    *plugin.on_args,
                    "-o",
                    "reuse_replicas=1",
                    "-o",
                    "reuse_scope=run",
                    "-o",
                    f"reuse_concurrency={concurrency}",
                ),
                needs_plugin=True,
            )
        )

    def run_check(contender: Contender, run: RunResult) -> str | None:
        concurrent = "concurrency=" in contender.name and not contender.name.endswith("=1")
        if concurrent and run.seconds >= serial / 2:
            return (
                f"ran serially ({run.seconds:.1f} s for {ASYNC_TESTS} x "
                f"{ASYNC_SLEEP * 1000:.0f} ms awaits): concurrency > 1 not built"
            )
        return None

    return Scenario(
        name="async_io",
        summary=f"{ASYNC_TESTS} async tests each awaiting asyncio.sleep({ASYNC_SLEEP}); "
        "reuse_env with 1 replica",
        files=async_suite(ASYNC_TESTS, ASYNC_SLEEP),
        tests=ASYNC_TESTS,
        contenders=tuple(contenders),
        timeout=45,
        run_check=run_check,
    )


def scale_up(plugin: PluginSetup) -> Scenario:
    """A backlog that needs 3 replicas: fixed replicas=3 against elastic (1, 3)."""
    cost = {FIXTURE_SECONDS_ENV: str(SCALE_FIXTURE_SECONDS)}
    run_scope = ("-o", "reuse_scope=run")
    contenders = (
        Contender("plain pytest", (*NO_ASYNC, *plugin.off_args), cost),
        Contender(
            f"reuse_env, replicas={SCALE_MAX_REPLICAS}",
            (*NO_ASYNC, *plugin.on_args, *run_scope, "-o", f"reuse_replicas={SCALE_MAX_REPLICAS}"),
            cost,
            needs_plugin=True,
        ),
        Contender(
            f"reuse_env, replicas=(1, {SCALE_MAX_REPLICAS})",
            (
                *NO_ASYNC,
                *plugin.on_args,
                *run_scope,
                "-o",
                f"reuse_replicas=(1, {SCALE_MAX_REPLICAS})",
            ),
            cost,
            needs_plugin=True,
        ),
    )

    def verdict(results: dict[str, ContenderResult]) -> None:
        elastic = results[f"reuse_env, replicas=(1, {SCALE_MAX_REPLICAS})"]
        if elastic.usable and elastic.runs:
            most = max(elastic.setups)
            if most < SCALE_MAX_REPLICAS:
                elastic.notes.append(
                    f"scaled to {most} replica(s), not {SCALE_MAX_REPLICAS}: "
                    "elastic scale-up not built, or too slow"
                )
            else:
                elastic.notes.append(f"scaled up to {most} replicas")

    return Scenario(
        name="scale_up",
        summary=f"{SCALE_TESTS} tests each sleeping {SCALE_SLEEP} s, "
        f"{SCALE_FIXTURE_SECONDS:g} s session fixture",
        files=expensive_suite(SCALE_TESTS, files=3, sleep=SCALE_SLEEP),
        tests=SCALE_TESTS,
        contenders=contenders,
        timeout=45,
        verdict=verdict,
    )


def memory(plugin: PluginSetup) -> Scenario:
    """Peak resident memory of the whole process tree: plain pytest against 2 replicas."""
    cost = {FIXTURE_SECONDS_ENV: "1", FIXTURE_MEGABYTES_ENV: str(MEMORY_MEGABYTES)}
    contenders = (
        Contender("plain pytest", (*NO_ASYNC, *plugin.off_args), cost),
        Contender(
            "reuse_env, 2 replicas",
            (*NO_ASYNC, *plugin.on_args, "-o", "reuse_replicas=2", "-o", "reuse_scope=run"),
            cost,
            needs_plugin=True,
        ),
    )

    def verdict(results: dict[str, ContenderResult]) -> None:
        plain = results["plain pytest"].peak_rss
        for result in results.values():
            if result.peak_rss is None:
                continue
            processes = max(r.peak_processes for r in result.runs)
            note = f"peak RSS {result.peak_rss / 2**20:.0f} MiB summed over {processes} process(es)"
            if plain and result.contender.name != "plain pytest":
                note += f", {result.peak_rss / plain:.2f}x plain pytest's"
            result.notes.append(note)

    return Scenario(
        name="memory",
        summary=f"peak resident memory of the process tree; session fixture holds "
        f"{MEMORY_MEGABYTES} MiB",
        files=expensive_suite(MEMORY_TESTS),
        tests=MEMORY_TESTS,
        contenders=contenders,
        timeout=45,
        sample_memory=True,
        verdict=verdict,
    )


SCENARIOS: dict[str, Callable[[PluginSetup], Scenario]] = {
    "expensive_setup": expensive_setup,
    "per_test_overhead": per_test_overhead,
    "async_io": async_io,
    "scale_up": scale_up,
    "memory": memory,
}
