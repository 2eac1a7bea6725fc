"""The benchmark CLI: ``python -m benchmarks`` or ``python benchmarks/run.py``.

Runs the chosen scenarios' contenders interleaved (A B C, A B C, ...), each a bounded subprocess,
then prints a table and writes JSON. A contender that cannot run is reported "not available" with
the reason; a contender whose tests or outcomes differ from the reference makes its scenario an
error, with no time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

if not __package__:  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import probe
from benchmarks.measure import RunResult, run_pytest, stop_marked
from benchmarks.report import ScenarioResult, package_version, render, to_json, write_json
from benchmarks.scenarios import SCENARIOS, ContenderResult, Scenario
from benchmarks.suites import write_suite

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
#: What ``--quick`` runs: the figures a change to the plugin is most likely to move.
QUICK_SCENARIOS = ("nothing_routed", "expensive_setup", "edit_loop")
#: How far past its goal a figure may be in ``--quick`` before the guard fails.
QUICK_MARGIN = 0.25


def outcome_differences(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    differences = []
    for key in sorted(reference.keys() | other.keys()):
        mine, theirs = reference.get(key, "absent"), other.get(key, "absent")
        if mine != theirs:
            differences.append(f"{key}: reference {mine}, here {theirs}")
    return differences


def abandon(results: dict[str, ContenderResult], reason: str) -> None:
    """Mark every contender still waiting for its first run as not run, with ``reason``."""
    for result in results.values():
        if result.usable and not result.runs:
            result.unavailable = reason


class Harness:
    def __init__(self, *, rounds: int, budget: float, plugin: probe.PluginSetup) -> None:
        self.rounds = rounds
        self.deadline = time.monotonic() + budget
        self.plugin = plugin
        self.marker = f"reuse-bench-{uuid.uuid4().hex}"

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def run_once(self, scenario: Scenario, result: ContenderResult, cwd: Path) -> RunResult:
        contender = result.contender
        env = {**self.plugin.env, **contender.env}
        return run_pytest(
            contender.args,
            cwd=cwd,
            env=env,
            marker=self.marker,
            timeout=scenario.timeout,
            sample_memory=scenario.sample_memory,
        )

    def measure(
        self,
        scenario: Scenario,
        result: ContenderResult,
        cwd: Path,
        reference: dict[str, str] | None,
    ) -> RunResult | None:
        """One round of one contender: its timed run (after a warm-up run if it wants one)."""
        contender = result.contender
        try:
            if contender.warm_first:
                warmup = self.run_once(scenario, result, cwd)
                if warmup.problem:
                    result.unavailable = f"warm-up run: {warmup.problem}"
                    return None
                result.warmups.append(warmup)
            if contender.before_timed is not None:
                contender.before_timed(cwd, len(result.runs) + 1)
            run = self.run_once(scenario, result, cwd)
        finally:
            stop_marked(self.marker)
        if run.problem:
            result.unavailable = run.problem
            return None
        if reference is not None:
            differences = outcome_differences(reference, run.outcomes)
            if differences:
                result.error = (
                    f"outcomes differ from {scenario.contenders[0].name} in "
                    f"{len(differences)} test(s), e.g. {differences[0]}"
                )
                return None
        if scenario.run_check is not None:
            problem = scenario.run_check(contender, run)
            if problem:
                result.runs.append(run)
                result.unavailable = problem
                return None
        result.runs.append(run)
        return run

    def scenario(self, scenario: Scenario) -> ScenarioResult:
        results = {c.name: ContenderResult(c) for c in scenario.contenders}
        outcome = ScenarioResult(scenario, results)
        for result in results.values():
            missing = [d for d in result.contender.requires if package_version(d) is None]
            if missing:
                result.unavailable = (
                    f"{', '.join(missing)} not installed (pip install -e '.[bench]')"
                )
            elif result.contender.needs_plugin and self.plugin.unavailable:
                result.unavailable = self.plugin.unavailable
        if not results[scenario.contenders[0].name].usable:
            outcome.unavailable = (
                f"the reference cannot run: {results[scenario.contenders[0].name].unavailable}"
            )
            abandon(results, "not run: the reference cannot run")
            return outcome
        reference_name = scenario.contenders[0].name
        reference: dict[str, str] | None = None
        with tempfile.TemporaryDirectory(prefix=f"reuse-bench-{scenario.name}-") as tmp:
            cwd = Path(tmp)
            write_suite(cwd, scenario.files)
            # One untimed run first: the suite's bytecode is cached before anything is timed.
            self.say(f"[{scenario.name}] priming bytecode caches")
            self.run_once(scenario, results[reference_name], cwd)
            stop_marked(self.marker)
            rounds = max(self.rounds, *(c.min_rounds for c in scenario.contenders))
            for round_number in range(1, rounds + 1):
                for name, result in results.items():
                    if not result.usable:
                        continue
                    if round_number > max(self.rounds, result.contender.min_rounds):
                        continue
                    # Past the budget only first rounds run: every scenario gets a number.
                    if round_number > 1 and time.monotonic() > self.deadline:
                        continue
                    self.say(f"[{scenario.name}] round {round_number}/{rounds}: {name}")
                    run = self.measure(scenario, result, cwd, reference)
                    if run is not None and name == reference_name and reference is None:
                        reference = run.outcomes
                    if name == reference_name and not result.usable:
                        outcome.errors.append(
                            f"the reference ({name}) did not run: "
                            f"{result.unavailable or result.error}"
                        )
                        abandon(results, "not run: the reference did not run")
                        return outcome
                    if run is not None:
                        self.say(
                            f"    {run.seconds:.2f} s, {len(run.outcomes)} tests, "
                            f"{run.setups} fixture setup(s)"
                        )
                    else:
                        self.say(f"    {result.unavailable or result.error}")
        for result in results.values():
            if result.error:
                outcome.errors.append(f"{result.contender.name}: {result.error}")
            elif result.usable and 0 < len(result.runs) < self.rounds:
                result.notes.append(f"{len(result.runs)} of {self.rounds} rounds (time budget)")
            elif len(result.runs) > self.rounds:
                result.notes.append(f"median of {len(result.runs)} rounds")
        if reference is not None and len(reference) != scenario.tests:
            outcome.errors.append(
                f"the reference ran {len(reference)} tests, expected {scenario.tests}"
            )
        if scenario.verdict is not None:
            scenario.verdict(results)
        return outcome


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n"
        + "\n".join(
            f"  {name:<18}{(build.__doc__ or '').strip()}" for name, build in SCENARIOS.items()
        ),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds per scenario (default 3); medians are reported",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the JSON results (default {DEFAULT_JSON})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the regression guard: scenarios {', '.join(QUICK_SCENARIOS)}, one round, and "
        f"exit 1 when a figure misses its goal by more than {QUICK_MARGIN:.0%} (the machine's "
        "noise); under a minute",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=QUICK_MARGIN,
        help=f"with --quick: how far past its goal a figure may be (default {QUICK_MARGIN:g}, "
        "i.e. 25%%); CI, on a shared machine, passes more",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=240.0,
        help="seconds after which only first rounds still run (default 240)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.scenario = args.scenario or list(QUICK_SCENARIOS)
        args.rounds = 1
    if args.margin < 0:
        parser.error(f"--margin must be at least 0, got {args.margin}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reuse-bench-") as scratch:
        return benchmark(args, probe.detect(Path(scratch)))


def benchmark(args: argparse.Namespace, plugin: probe.PluginSetup) -> int:
    print(
        "bytecode caching: on (PYTHONDONTWRITEBYTECODE is removed from every run's environment)",
        file=sys.stderr,
    )
    print(
        f"plugin: {plugin.origin} ({' '.join(plugin.on_args)})"
        + (f" -- not available: {plugin.unavailable}" if plugin.unavailable else ""),
        file=sys.stderr,
        flush=True,
    )
    harness = Harness(rounds=args.rounds, budget=args.budget, plugin=plugin)
    outcome: list[ScenarioResult] = []
    try:
        for name in args.scenario or list(SCENARIOS):
            outcome.append(harness.scenario(SCENARIOS[name](plugin)))
    finally:
        stop_marked(harness.marker)
    print(render(outcome))
    write_json(to_json(outcome, rounds=args.rounds, plugin_origin=plugin.origin), args.json)
    print(f"\nJSON written to {args.json}")
    failed = any(s.status == "error" for s in outcome)
    if args.quick:
        failed = guard(outcome, args.margin) or failed
    return 1 if failed else 0


def guard(outcome: list[ScenarioResult], margin: float) -> bool:
    """Print every goal's verdict; True when one is missed by more than ``margin``."""
    print(f"\nregression guard (goal + {margin:.0%}):")
    broken = False
    for scenario in outcome:
        for result in scenario.results.values():
            for goal in result.goals:
                ok = goal.within(margin)
                broken = broken or not ok
                verdict = "ok" if ok else "FAILED"
                print(
                    f"  {verdict:<6} {scenario.scenario.name} / {result.contender.name}: "
                    f"{goal.describe()}"
                )
            if result.contender.needs_plugin and not result.usable:
                broken = True
                print(
                    f"  FAILED {scenario.scenario.name} / {result.contender.name}: "
                    f"{result.unavailable or result.error}"
                )
    return broken


if __name__ == "__main__":
    raise SystemExit(main())
