"""README's Performance table from one run's JSON: ``python -m benchmarks.table RESULTS.json``.

One row per contender: the median of its rounds, their spread (fastest to slowest), the ratio
to the scenario's reference (its first contender) and the fixture setups of the timed runs;
then every goal the run checked, met or not. Prints reStructuredText for README.rst.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

WIDTHS = (52, 8, 13, 7, 14)
HEADER = ("scenario and contender", "median s", "spread s", "x ref", "fixture setups")


#: Short titles (a simple table's first column is bounded); other scenarios show their summary.
TITLES = {
    "expensive_setup": "2 s session fixture, 200 quick tests",
    "per_test_overhead": "2000 trivial tests (per-test overhead)",
    "async_io": "200 async tests awaiting 50 ms",
    "scale_up": "60 tests of 0.1 s, 1 s fixture (scale-up)",
    "memory": "memory: a fixture holding 64 MiB, 100 tests",
    "many_tests": "20,000 trivial tests, 2 replicas",
    "nothing_routed": "one unmarked test (nothing routed)",
    "edit_loop": "edit loop: 2 s fixture, 200 tests, one edit",
}


def _row(cells: tuple[str, ...]) -> str:
    first, *rest = cells
    columns = zip(rest, WIDTHS[1:], strict=True)
    return (first.ljust(WIDTHS[0]) + " " + " ".join(c.rjust(w) for c, w in columns)).rstrip()


def _rule() -> str:
    return " ".join("=" * w for w in WIDTHS)


def _seconds(value: float) -> str:
    return f"{value:.2f}"


def contender_row(name: str, data: dict[str, Any], *, setups_shown: bool) -> str:
    if data["status"] != "ok" or not data["seconds"]:
        return _row((name, "-", "-", "-", str(data.get("reason") or data["status"])[:14]))
    runs = data["seconds"]
    spread = f"{_seconds(min(runs))}-{_seconds(max(runs))}" if len(runs) > 1 else "-"
    setups = data["fixture_setups"]
    shown = str(max(setups)) if setups_shown and setups else ""
    return _row(
        (
            name,
            _seconds(data["median_seconds"]),
            spread,
            f"{data['ratio_to_reference']:.2f}",
            shown,
        )
    )


def table(results: dict[str, Any]) -> str:
    lines = [_rule(), _row(HEADER), _rule()]
    for key, scenario in results["scenarios"].items():
        lines.append(f"**{TITLES.get(key, scenario['summary'])}**")
        contenders = scenario["contenders"]
        setups_shown = any(any(c["fixture_setups"]) for c in contenders.values())
        for name, data in contenders.items():
            lines.append(contender_row(name, data, setups_shown=setups_shown))
    lines.append(_rule())
    return "\n".join(lines)


def goals(results: dict[str, Any]) -> str:
    lines = []
    for scenario_name, scenario in results["scenarios"].items():
        for name, data in scenario["contenders"].items():
            for goal in data["goals"]:
                verdict = "met" if goal["met"] else "NOT met"
                lines.append(
                    f"- {scenario_name} / {name}: {goal['what']} {goal['measured']:.3g}"
                    f"{goal['unit']} (goal <= {goal['limit']:.3g}{goal['unit']}): {verdict}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.table", description=__doc__)
    parser.add_argument("results", type=Path, help="the JSON a run of python -m benchmarks wrote")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    print(table(results))
    print()
    print(goals(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
