"""What reuse did, for people and for tools: the terminal section and the JSON report.

The summary is built from two sources, so it works the same under pytest-xdist:

- the reports themselves: every report that came from a replica carries ``reuse_replica`` and
  ``reuse_warm`` (added on the replica side), which tells who ran each test, cold or warm;
- environment figures (plain dicts from ``Environment.figures``): replicas started and
  retired, their setup times, notes. Inside an xdist worker they travel to xdist's controller in
  ``config.workeroutput``.

JSON report schema (``--reuse-report=PATH``), version 1::

    {
      "version": 1,
      "environments": [{
        "name": str, "policy": str,             # the policy in its ini form
        "replicas_started": int, "replicas_attached": int,   # attached: warm, from a past run
        "start_failures": int,
        "retired": {reason: int},               # "end of run", "scaledown", "idle", "crash"
        "tests_cold": int, "tests_warm": int,   # cold: the first test a replica ran
        "peak_busy": int,                       # most replicas running tests at once
        "peak_tests": int,                      # most tests running at once (concurrency)
        "tests_stolen": int,                    # tests a replica that ran dry took from another
        "concurrency": int,                     # tests one replica runs at once
        "test_phase_seconds": float,            # first test start to last test finish
        "max_replicas": int,
        "setup_seconds_total": float,           # setup this run paid: replicas it started
        "setup_seconds_mean": float,            # start, collection, pre-warm, first test's setup
        "plain_setup_seconds": float,           # what plain pytest would pay: the mean setup
                                                # once per process that ran the tests
        "saved_seconds_estimate": float,        # plain minus paid, never below 0
        "skipped_seconds": float,               # setup of the warm replicas this run attached
        "modules_reimported": int,              # files warm replicas re-imported for edits
        "fixtures_kept": int,                   # warm fixtures kept through those edits
        "fixtures_rebuilt": int,                # warm fixtures torn down (they depended on one)
        "kept_fixture_seconds": float,          # setup the kept fixtures saved against plain
                                                # pytest in this run: their mean cost in a
                                                # replica, once per process that ran the tests
        "replicas_keeping": int,                # warm replicas that kept fixtures
        "notes": [str],                         # starvation and capacity advice
        "replicas": [{"id": str, "pid": int | null, "setup_seconds": float | null,
                      "tests_run": int, "ended": str | null, "attached": bool,
                      "spare": bool,            # started before collection (prestart.py)
                      "first_test_seconds": float | null}]   # start decision to first test
      }],
      "tests": {nodeid: {"replica": str, "warm": bool, "outcome": str}}
    }
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import pytest

from pytest_reuse_env import protocol, scaling

if TYPE_CHECKING:
    from pytest_reuse_env.controller.environment import Environment
    from pytest_reuse_env.controller.replica import Replica

JSON_VERSION: Final = 1
#: A test's outcomes that count as failing (its ``tests`` entry in the JSON report).
FAILING: Final = ("failed", "error")
#: How xdist's controller merges each figure of ``Environment.figures`` that its workers hand
#: over: every key the figures have is here (tests/unit/test_summary.py checks), so a new
#: figure cannot be forgotten in the merge. "same": equal in every worker (the policy's);
#: "sum": added up; "max": the largest; "counter": counts by key, added up; "replicas": one
#: entry per replica id, tests_run added up; "union": each distinct entry once; "derived":
#: recomputed from the merged replicas.
MERGE: Final[dict[str, str]] = {
    "name": "same",
    "policy": "same",
    "max_replicas": "same",
    "concurrency": "same",
    "replicas_started": "sum",
    "start_failures": "sum",
    "tests_cold": "sum",
    "tests_warm": "sum",
    "peak_busy": "sum",
    "peak_tests": "sum",
    "tests_stolen": "sum",
    "setup_seconds_total": "sum",
    "modules_reimported": "sum",
    "fixtures_kept": "sum",
    "fixtures_rebuilt": "sum",
    "kept_fixture_seconds": "sum",
    "replicas_keeping": "sum",
    "test_phase_seconds": "max",
    "retired": "counter",
    "replicas": "replicas",
    "notes": "union",
    "replicas_attached": "derived",
}


def merge_figures(into: dict[str, Any], entry: dict[str, Any]) -> None:
    """Fold one worker's figures of an environment into ``into`` (by ``MERGE``)."""
    for key, value in entry.items():
        rule = MERGE.get(key, "same")
        if key not in into:
            into[key] = value
        elif rule == "sum":
            into[key] += value
        elif rule == "max":
            into[key] = max(into[key], value)
        elif rule == "counter":
            into[key] = dict(Counter(into[key]) + Counter(value))
        elif rule == "replicas":
            into[key] = [*into[key], *value]
        elif rule == "union":
            into[key] = [*into[key], *(v for v in value if v not in into[key])]


def environment_notes(
    environment: Environment, items: list[pytest.Item], *, feeders: int | None, on_hosts: bool
) -> list[str]:
    """Advice for the summary: starvation, global scope on configured hosts, concurrency that
    cannot help. ``feeders`` is None inside an xdist worker (its controller sees them all)."""
    policy = environment.policy
    notes = []
    if environment.clamped_from is not None:
        notes.append(
            f"replicas clamped to {environment.limits.max_replicas} (the policy asks for up to "
            f"{environment.clamped_from}): at most reuse_replica_limit replicas at once, by "
            "default this machine's cores; raise it in the ini to allow more"
        )
    # A run that goes one test at a time (-x, --maxfail, --sw, pytest-order) uses one replica
    # whatever the policy: advice to raise replicas would not change that.
    if feeders is not None and not environment.serial:
        limits = scaling.ScalingLimits(
            min(policy.min_replicas, environment.limits.max_replicas),
            environment.limits.max_replicas,
            policy.concurrency,
            policy.scaledown_ttl_seconds,
            policy.idle_ttl_seconds,
        )
        starving = scaling.starvation_warning(limits, feeders=feeders)
        if starving:
            notes.append(starving)
    if policy.scope == "global" and on_hosts:
        notes.append(
            "scope=global is local-only: replicas on configured hosts (reuse_hosts) lived for "
            "this run"
        )
    if policy.concurrency > 1 and items and not _any_async(items):
        notes.append(
            f"concurrency {policy.concurrency} has no effect here: the environment holds only "
            "sync tests (or async ones that cannot share a loop), which run one at a time"
        )
    return notes


def closing_line(kept_warm: list[Replica], environments: list[Environment]) -> str:
    """The line after pytest's last: what stays warm, for how long, how to stop it."""
    names = {replica.environment_name for replica in kept_warm}
    ttls = sorted({env.policy.idle_ttl_seconds for env in environments if env.name in names})
    idle = f"{ttls[0]:g} s" if len(ttls) == 1 else f"{ttls[0]:g} to {ttls[-1]:g} s"
    count = len(kept_warm)
    # An attached replica was warm before this run asked for it (collection failed, say, before
    # its READY was read): only a replica this run started can still be starting.
    starting = sum(1 for r in kept_warm if r.ready_at is None and not r.attached)
    if starting:
        still = " (still starting)" if count == 1 else f" ({starting} of them still starting)"
    else:
        still = ""
    return (
        f"reuse: {count} replica{'s stay' if count != 1 else ' stays'} warm for the next run"
        f"{still} (each ends after {idle} without a test); stop them now with "
        "'pytest --reuse-stop'"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@final
class ReuseSummary:
    """Collects what reuse did during the run and writes it at the end."""

    def __init__(self, config: pytest.Config, report_path: str | None) -> None:
        self.config = config
        self.report_path = report_path
        self.tests: dict[str, dict[str, Any]] = {}
        self.figures: list[dict[str, Any]] = []
        #: What stays warm after the run, how long, how to stop it: the section's last line
        #: (pytest's "N passed in X s" stays the last line of the output).
        self.closing: str | None = None

    # -- sources -----------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        replica = getattr(report, protocol.REPORT_REPLICA, None)
        if replica is None:
            return
        warm = bool(getattr(report, protocol.REPORT_WARM, False))
        entry = self.tests.setdefault(
            report.nodeid,
            {"replica": replica, "warm": warm, "outcome": "passed"},
        )
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"

    def add_figures(self, figures: list[dict[str, Any]]) -> None:
        self.figures.extend(figures)

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """xdist's controller: a worker finished; take its environments' figures."""
        output = getattr(node, "workeroutput", None) or {}
        self.add_figures(list(output.get(protocol.WORKEROUTPUT_KEY, [])))

    # -- output ------------------------------------------------------------------------------

    def environments(self) -> list[dict[str, Any]]:
        """Figures merged by environment name (xdist workers each hold their own)."""
        merged: dict[str, dict[str, Any]] = {}
        # Processes that ran an environment's tests: plain pytest sets it up once in each.
        feeders: Counter[str] = Counter()
        for entry in self.figures:
            if entry["tests_cold"] or entry["tests_warm"]:
                feeders[entry["name"]] += 1
            into = merged.setdefault(entry["name"], {})
            merge_figures(into, entry)
        for env in merged.values():
            # xdist workers each count their own: a replica used by two workers is one replica,
            # and their peaks cannot all have happened at once beyond the policy's max.
            by_id: dict[str, dict[str, Any]] = {}
            for replica in env["replicas"]:
                same = [r for r in env["replicas"] if r["id"] == replica["id"]]
                # Attached only if no worker of this run started it: the one that did knows
                # its setup time.
                started = [r for r in same if not r.get("attached")]
                by_id.setdefault(replica["id"], dict(started[0] if started else replica))
                by_id[replica["id"]]["tests_run"] = sum(r["tests_run"] for r in same)
            env["replicas"] = list(by_id.values())
            env["retired"] = dict(env.get("retired", {}))
            env["replicas_attached"] = sum(1 for r in env["replicas"] if r.get("attached"))
            env["peak_busy"] = min(env["peak_busy"], env["max_replicas"])
            env["peak_tests"] = min(env["peak_tests"], env["peak_busy"] * env["concurrency"])
            # What becoming warm cost each replica (start, collection, pre-warming, its first
            # test's setup), measured where it happened, in this run or the one that started it.
            costs = [r["setup_seconds"] for r in env["replicas"] if r["setup_seconds"]]
            env["setup_seconds_mean"] = _mean(costs)
            # Against plain pytest in this run, not against an invented fresh process per test.
            env["plain_setup_seconds"] = env["setup_seconds_mean"] * feeders[env["name"]]
            env["saved_seconds_estimate"] = max(
                0.0, env["plain_setup_seconds"] - env["setup_seconds_total"]
            )
            # Each replica that kept a fixture reports what it had cost there; plain pytest
            # would set it up once per process that ran the tests, not once per replica.
            keeping = env.get("replicas_keeping", 0)
            if keeping:
                env["kept_fixture_seconds"] = min(
                    env["kept_fixture_seconds"],
                    env["kept_fixture_seconds"] / keeping * feeders[env["name"]],
                )
            # Setup the warm replicas it attached had paid in earlier runs.
            env["skipped_seconds"] = sum(
                r["setup_seconds"] or 0.0 for r in env["replicas"] if r.get("attached")
            )
        return list(merged.values())

    def as_json(self) -> dict[str, Any]:
        return {"version": JSON_VERSION, "environments": self.environments(), "tests": self.tests}

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        environments = self.environments()
        if not environments:
            return
        tr = terminalreporter
        tr.write_sep("=", "reuse")
        for env in environments:
            retired = ", ".join(f"{n} {reason}" for reason, n in sorted(env["retired"].items()))
            attached = env["replicas_attached"]
            spares = sum(1 for r in env["replicas"] if r.get("spare"))
            tr.write_line(
                f"{env['name']} ({env['policy']}): "
                f"{_count(env['replicas_started'], 'replica')} started"
                + (f" ({spares} from spares)" if spares else "")
                + (f", {attached} attached warm" if attached else "")
                + f" (setup {env['setup_seconds_mean']:.2f} s each), "
                f"{_count(env['tests_warm'], 'test')} warm, {env['tests_cold']} cold, "
                f"peak {env['peak_busy']} busy"
                + (
                    f" ({env['peak_tests']} tests at once)"
                    if env["peak_tests"] > env["peak_busy"]
                    else ""
                )
                + f"; retired: {retired or 'none'}; "
                f"setup {env['setup_seconds_total']:.1f} s in all, plain pytest "
                f"~{env['plain_setup_seconds']:.1f} s"
                + (
                    f": saved ~{env['saved_seconds_estimate']:.1f} s by attaching warm replicas"
                    if env["saved_seconds_estimate"] >= 0.05
                    else ""
                )
            )
            reload_line = _reload_summary(env)
            if reload_line:
                tr.write_line(f"  {reload_line}")
            if env["start_failures"]:
                failed = _count(env["start_failures"], "replica")
                tr.write_line(f"  {failed} failed to start", red=True)
            for note in env["notes"]:
                tr.write_line(f"  note: {note}", yellow=True)
        hint = self._warm_failures_hint()
        if hint:
            tr.write_line(hint, yellow=True)
        if self.report_path:
            tr.write_line(f"reuse report written to {self.report_path}")
        if self.closing is not None:
            tr.write_line(self.closing)

    def _warm_failures_hint(self) -> str | None:
        """Tests failed in a replica that had run others before them: state those left (a
        module-level dict a test changed, a library's cache) can make a test fail only there,
        which plain pytest, importing everything afresh, never shows. Say how to tell."""
        warm = [n for n, t in self.tests.items() if t["warm"] and t["outcome"] in FAILING]
        if not warm or self.config.getoption("reuse_verify_cold", False):
            return None
        return (
            f"{_count(len(warm), 'test')} failed in a warm replica, after other tests ran in "
            "its process: --reuse-verify-cold re-runs each alone in a fresh replica and says "
            "whether it fails only warm"
        )

    def pytest_sessionfinish(self) -> None:
        if self.report_path:
            path = Path(self.report_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.as_json(), indent=2, sort_keys=True) + "\n")


def _reload_summary(env: dict[str, Any]) -> str | None:
    """One line on how warm replicas caught up with edits, or None if none had to."""
    modules = env.get("modules_reimported", 0)
    rebuilt = env.get("fixtures_rebuilt", 0)
    if not modules and not rebuilt:
        return None
    kept = env.get("fixtures_kept", 0)
    return (
        f"through edits: {_count(modules, 'file')} re-imported, "
        f"{_count(kept, 'warm fixture')} kept (~{env.get('kept_fixture_seconds', 0.0):.1f} s "
        f"of setup saved against plain pytest), {rebuilt} rebuilt"
    )


def describe_reload(replica_id: str, reload: protocol.ReloadPayload) -> str | None:
    """The ``-v`` line for one warm replica that caught up with edits, or None if it had
    nothing to do: "reuse: g-1 re-imported app/core.py; kept db; rebuilt index (depends on
    app/search.py)"."""
    if not reload["reimported"] and not reload["rebuilt"]:
        return None
    parts = [f"re-imported {', '.join(reload['reimported']) or 'nothing'}"]
    parts.append(f"kept {', '.join(reload['kept']) or 'no warm fixture'}")
    if reload["rebuilt"]:
        parts.append("rebuilt " + ", ".join(f"{name} ({why})" for name, why in reload["rebuilt"]))
    return f"reuse: {replica_id} " + "; ".join(parts) + f" ({reload['seconds']:.2f} s)"


def _any_async(items: list[pytest.Item]) -> bool:
    # Imported here: only a run whose policy allows concurrency asks.
    from pytest_reuse_env.replica.asyncbatch.eligible import is_async_item

    return any(is_async_item(item) for item in items)
