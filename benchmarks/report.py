"""The results as a table for people and as JSON for tools."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.scenarios import ContenderResult, Scenario, ratio


@dataclass
class ScenarioResult:
    scenario: Scenario
    results: dict[str, ContenderResult]
    errors: list[str] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def reference(self) -> ContenderResult:
        return self.results[self.scenario.contenders[0].name]

    @property
    def status(self) -> str:
        if self.errors:
            return "error"
        return f"not available: {self.unavailable}" if self.unavailable else "ok"


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def contender_json(result: ContenderResult, reference: ContenderResult) -> dict[str, Any]:
    r = ratio(result, reference)
    return {
        "args": list(result.contender.args),
        "env": dict(result.contender.env),
        "status": ("not available" if result.unavailable else "error" if result.error else "ok"),
        "reason": result.unavailable or result.error,
        "seconds": [round(run.seconds, 3) for run in result.runs],
        "median_seconds": None if result.median is None else round(result.median, 3),
        "ratio_to_reference": None if r is None else round(r, 3),
        "fixture_setups": result.setups,
        "warmup_fixture_setups": [run.setups for run in result.warmups],
        "peak_rss_bytes": result.peak_rss,
        "notes": result.notes,
        "goals": [
            {"what": g.what, "measured": g.measured, "limit": g.limit, "unit": g.unit, "met": g.met}
            for g in result.goals
        ],
    }


def to_json(outcome: list[ScenarioResult], *, rounds: int, plugin_origin: str) -> dict[str, Any]:
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "versions": {
            name: package_version(name)
            for name in (
                "pytest",
                "pytest-xdist",
                "pytest-asyncio",
                "pytest-asyncio-cooperative",
                "execnet",
                "pytest-reuse-env",
            )
        },
        "plugin_origin": plugin_origin,
        "rounds": rounds,
        "scenarios": {
            s.scenario.name: {
                "summary": s.scenario.summary,
                "tests": s.scenario.tests,
                "reference": s.reference.contender.name,
                "status": s.status,
                "errors": s.errors,
                "contenders": {
                    name: contender_json(result, s.reference) for name, result in s.results.items()
                },
            }
            for s in outcome
        },
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def render(outcome: list[ScenarioResult]) -> str:
    lines: list[str] = []
    for s in outcome:
        lines.append("")
        lines.append(f"{s.scenario.name}: {s.scenario.summary}  [{s.status}]")
        for error in s.errors:
            lines.append(f"  ERROR: {error}")
        width = max(len(name) for name in s.results) + 2
        lines.append(f"  {'contender':<{width}}{'median s':>9}{'x ref':>8}{'setups':>10}  notes")
        for name, result in s.results.items():
            if result.median is None:
                reason = result.unavailable or result.error or "no runs"
                label = (
                    "ERROR: "
                    if result.error
                    else ""
                    if reason.startswith("not run")
                    else "not available: "
                )
                lines.append(f"  {name:<{width}}{'-':>9}{'-':>8}{'-':>10}  {label}{reason}")
                continue
            r = ratio(result, s.reference)
            setups = "/".join(str(n) for n in result.setups)
            if not s.scenario.files.get("conftest.py"):
                setups = "-"
            notes = "; ".join(result.notes)
            lines.append(
                f"  {name:<{width}}{result.median:>9.2f}"
                f"{'-' if r is None else f'{r:.2f}':>8}{setups:>10}  {notes}"
            )
    lines.append("")
    lines.append(
        "median s: median wall time over the rounds; x ref: against the scenario's first "
        "row; setups: expensive-fixture setups in each timed run."
    )
    return "\n".join(lines)
