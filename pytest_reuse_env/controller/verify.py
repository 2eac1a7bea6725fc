"""``--reuse-verify-cold``: is a failure the test's own, or the warm replica's?

Every test that failed in a warm replica (one that had run other tests before it) is re-run
once, alone, in a fresh replica. The reported outcome stays the original one; the original
report gains a section that says what the fresh run showed and, when it passed there, which
tests ran before it in the warm replica: the usual suspects for an order-dependent failure.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.clock import SYSTEM_CLOCK, Clock
from pytest_reuse_env.controller.launcher import ReplicaLauncher
from pytest_reuse_env.controller.replica import Replica
from pytest_reuse_env.policy import ReusePolicy

#: At most this many warm failures are re-run in one session.
MAX_VERIFIED: Final = 20
#: Fresh replicas at once.
PARALLEL: Final = 2
#: Longest one verification may take (start, collection, the test).
VERIFY_SECONDS: Final = 300.0
#: Tests named as having run before a warm failure.
SHOWN_BEFORE: Final = 10


@final
@dataclass
class WarmFailure:
    nodeid: str
    environment: str
    policy: ReusePolicy
    replica_id: str
    ran_before: list[str]
    cold_outcome: str | None = None
    cold_replica: str | None = None
    detail: list[str] = field(default_factory=list)


@final
class ColdVerifier:
    """Collects warm failures during the run and re-runs them in fresh replicas at its end."""

    def __init__(self, launcher: ReplicaLauncher, clock: Clock = SYSTEM_CLOCK) -> None:
        self.launcher = launcher
        self.clock = clock
        self.failures: dict[str, WarmFailure] = {}
        self._running: dict[Replica, WarmFailure] = {}
        # What each message from a fresh replica means for its verification; the rest of what
        # a replica says (READY, LOGSTART, ...) tells nothing here.
        self.table: dict[str, Callable[[Replica, WarmFailure, Any], None]] = {
            name: self.nothing_to_learn for name in protocol.REPLICA_MESSAGES
        }
        self.table.update(
            {
                protocol.REPORT: self.cold_report,
                protocol.TEST: self.cold_test,
                protocol.TESTS: self.cold_tests,
                protocol.UNKNOWN_NODEID: self.not_collected,
                protocol.START_FAILED: self.start_failed,
                protocol.CHANNEL_CLOSED: self.replica_closed,
            }
        )

    def record(self, report: pytest.TestReport, replica: Replica, policy: ReusePolicy) -> None:
        """Called with every replayed report."""
        if not report.failed or not getattr(report, protocol.REPORT_WARM, False):
            return
        if report.nodeid in self.failures:
            return
        before = replica.ran[:-1] if replica.ran[-1:] == [report.nodeid] else list(replica.ran)
        self.failures[report.nodeid] = WarmFailure(
            report.nodeid, replica.environment_name, policy, replica.id, before
        )

    def run(self, terminal: Any) -> None:
        """Re-run the recorded failures, then annotate their reports in ``terminal.stats``."""
        todo = list(self.failures.values())[:MAX_VERIFIED]
        if not todo:
            return
        if terminal is not None:
            terminal.write_sep(
                "-", f"reuse: re-running {len(todo)} warm failures in fresh replicas"
            )
        for start in range(0, len(todo), PARALLEL):
            self._verify(todo[start : start + PARALLEL])
        for failure in todo:
            self._annotate(failure, terminal)

    def _verify(self, batch: list[WarmFailure]) -> None:
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._running = {}
        for failure in batch:
            replica = self.launcher.launch_fresh(failure.environment, failure.policy, events)
            failure.cold_replica = replica.id
            replica.send(protocol.run([failure.nodeid]))
            replica.retire("verified")
            self._running[replica] = failure
        deadline = self.clock.monotonic() + VERIFY_SECONDS
        while self._running and self.clock.monotonic() < deadline:
            try:
                replica, message = events.get(timeout=0.5)
            except queue.Empty:
                continue
            self.dispatch(replica, message)
        for replica, failure in self._running.items():
            failure.cold_outcome = failure.cold_outcome or "timed out"
            replica.terminate(wait=1.0)

    def dispatch(self, replica: Replica, message: protocol.Message) -> None:
        """Handle one message of a fresh replica; an unknown one ends its verification."""
        failure = self._running.get(replica)
        if failure is None:
            return
        name, payload = message
        handler = self.table.get(name)
        if handler is None:
            failure.cold_outcome = (
                f"could not verify: replica {replica.id} sent a message this controller does "
                f"not know: {name!r}"
            )
            replica.terminate(wait=2.0)
            del self._running[replica]
            return
        handler(replica, failure, payload)

    def nothing_to_learn(self, replica: Replica, failure: WarmFailure, payload: Any) -> None:
        pass

    def cold_test(
        self, replica: Replica, failure: WarmFailure, raw: str | protocol.TestPayload
    ) -> None:
        """A whole test at once: its reports, full or compact (a quiet pass)."""
        for event in protocol.test_payload(raw)["events"]:
            if event[0] in (protocol.FULL_REPORT, protocol.PASSED):
                self.cold_report(replica, failure, event[1] if len(event) == 2 else event)

    def cold_tests(self, replica: Replica, failure: WarmFailure, lines: str) -> None:
        """Quiet passes sent together (``replica/held.py``), each a TEST."""
        for _ended, text in protocol.tests_entries(lines):
            self.cold_test(replica, failure, text)

    def cold_report(self, replica: Replica, failure: WarmFailure, payload: str | list[Any]) -> None:
        if isinstance(payload, list):  # compact: a phase that passed quietly
            data = {"outcome": "passed", "when": payload[1]}
        else:
            data = protocol.decode_report(payload)
        if data.get("outcome") == "failed":
            failure.cold_outcome = "failed"
            failure.detail.append(f"{data.get('when')}: failed")
        elif failure.cold_outcome is None:
            failure.cold_outcome = "passed"

    def not_collected(self, replica: Replica, failure: WarmFailure, payload: Any) -> None:
        failure.cold_outcome = "not collected"

    def start_failed(self, replica: Replica, failure: WarmFailure, payload: Any) -> None:
        failure.cold_outcome = "could not start"

    def replica_closed(self, replica: Replica, failure: WarmFailure, payload: None) -> None:
        if failure.cold_outcome is None:
            failure.cold_outcome = f"crashed ({replica.exit_description(wait=2.0)})"
        replica.terminate(wait=2.0)
        del self._running[replica]

    def _annotate(self, failure: WarmFailure, terminal: Any) -> None:
        if failure.cold_outcome == "passed":
            title = "reuse: fails only in a warm replica"
            shown = failure.ran_before[-SHOWN_BEFORE:]
            more = len(failure.ran_before) - len(shown)
            text = (
                f"It passed when re-run alone in a fresh replica ({failure.cold_replica}).\n"
                f"In replica {failure.replica_id} it ran after {len(failure.ran_before)} "
                f"test{'s' if len(failure.ran_before) != 1 else ''}"
                + (f" ({more} earlier ones not shown)" if more else "")
                + ", most recent last:\n"
                + "\n".join(f"  {nodeid}" for nodeid in shown)
            )
        else:
            title = "reuse: fails in a fresh replica too"
            text = (
                f"Re-run alone in a fresh replica ({failure.cold_replica}): "
                f"{failure.cold_outcome}. The failure is the test's own, not the warm state's."
            )
        if terminal is None:
            return
        for key in ("failed", "error"):
            for report in terminal.stats.get(key, []):
                if getattr(report, "nodeid", None) == failure.nodeid and report.failed:
                    report.sections.append((title, text))
