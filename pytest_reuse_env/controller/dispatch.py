"""What the controller does with each message a replica sends: one handler per message name,
named after the event, dispatched from one table.

A message name the table does not know, or a message out of turn (a second READY, the end of
a test that never started), is a protocol error: it is never dropped silently. The replica is
named in a warning and killed with the reason, so the test it was running fails once with that
reason and the tests it held run elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller import outcomes
from pytest_reuse_env.controller.clock import Clock
from pytest_reuse_env.controller.environment import Environment
from pytest_reuse_env.controller.replica import (
    Ending,
    EndKind,
    Replica,
    ReplicaProtocolError,
    ReplicaState,
)
from pytest_reuse_env.controller.reporting import ReportReplayer, not_collected_message
from pytest_reuse_env.controller.summary import describe_reload
from pytest_reuse_env.policy import ReusePolicy

#: A message handler; what it returns is not read (``test_done`` says whether it reported).
Handler = Callable[[Replica, Any], object]
#: Why a replica that answered READY cannot serve this run (stale code, missing tests), or None.
StaleCheck = Callable[[Replica, protocol.ReadyPayload, list[str]], "str | None"]
#: Called with every replayed report (``--reuse-verify-cold`` records warm failures).
ReportSeen = Callable[[pytest.TestReport, Replica, ReusePolicy], None]


@final
class ReplicaEvents:
    """The controller's handlers of replica messages, and the table that picks one."""

    def __init__(
        self,
        environments: Callable[[], Iterable[Environment]],
        reports: ReportReplayer,
        clock: Clock,
        *,
        wanted: Callable[[Environment], list[str]],
        stale: StaleCheck,
        host_failed: outcomes.HostFailed,
        say: Callable[[str], None],
        report_seen: ReportSeen | None = None,
    ) -> None:
        self._environments = environments
        self.reports = reports
        self._clock = clock
        self._wanted = wanted
        self._stale = stale
        self._host_failed = host_failed
        self._say = say
        self._report_seen = report_seen
        self.prewarm_errors: set[str] = set()
        #: A test in a replica interrupted the run (KeyboardInterrupt, pytest.exit), and the
        #: reason to stop it with; the controller ends the run as plain pytest would.
        self.stopped_by: tuple[protocol.StoppedEarlyPayload, str] | None = None
        #: The end of the run: replicas were asked to stop, so a closed link is a retirement.
        self.closing = False
        self.table: dict[str, Handler] = {
            protocol.READY: self.replica_ready,
            protocol.START_FAILED: self.start_failed,
            protocol.STARTED: self.batch_test_started,
            protocol.TEST: self.test_done,
            protocol.TESTS: self.tests_done,
            protocol.LOGSTART: self.test_started,
            protocol.REPORT: self.test_reported,
            protocol.LOGFINISH: self.test_finished,
            protocol.WARNING: self.warning_recorded,
            protocol.UNKNOWN_NODEID: self.unknown_nodeid,
            protocol.TEARDOWN_ERROR: self.teardown_failed,
            protocol.RECYCLE: self.recycle_requested,
            protocol.RETURNED: self.tests_returned,
            protocol.STOPPED_EARLY: self.session_stopped_early,
            protocol.WORKEROUTPUT: self.lease_output,
            protocol.FINISHED: self.session_finished,
            protocol.CHANNEL_CLOSED: self.replica_closed,
        }

    def dispatch(self, replica: Replica, message: protocol.Message) -> None:
        """Handle one message from ``replica``."""
        if replica.state is ReplicaState.ENDED:
            return  # a replica this run let go (released, retired, killed): its last words
        name, payload = message
        if isinstance(payload, dict) and not replica.of_this_lease(payload.get("lease")):
            return  # about a test of an earlier client (it outlived that run): not ours
        handler = self.table.get(name)
        if handler is None:
            self.protocol_error(replica, f"sent a message this controller does not know: {name!r}")
            return
        try:
            handler(replica, payload)
        except ReplicaProtocolError as exc:
            self.protocol_error(replica, str(exc))

    def protocol_error(self, replica: Replica, what: str) -> None:
        """The replica cannot be trusted to report truthfully: warn, naming it, and kill it
        with the reason (its test in flight fails with it; what it held runs elsewhere)."""
        reason = f"replica {replica.id} (pid {replica.pid}) {what}; killed"
        self.reports.warn(reason)
        kind = EndKind.START_FAILED if replica.ready_at is None else EndKind.KILLED
        replica.kill(Ending(kind, reason))

    def environment_of(self, replica: Replica) -> Environment:
        for environment in self._environments():
            if replica in environment.history:
                return environment
        raise LookupError(replica)

    # -- handlers, one per message -----------------------------------------------------------

    def replica_ready(self, replica: Replica, payload: protocol.ReadyPayload) -> None:
        environment = self.environment_of(replica)
        replica.ready(payload, self._clock.monotonic())
        stale = self._stale(replica, payload, self._wanted(environment))
        if stale is not None:
            self._say(f"reuse: replica {replica.id} is stale ({stale}); starting afresh")
            environment.retire(replica, f"stale: {stale}")
            return
        reload = payload.get("reload")
        if reload:  # a warm replica caught up with edited files (replica/reload.py)
            environment.replica_reloaded(reload)
            line = describe_reload(replica.id, reload)
            if line:
                self._say(line)
        for error in payload["prewarm_errors"]:
            if error not in self.prewarm_errors:
                self.prewarm_errors.add(error)
                self.reports.warn(f"replica {replica.id}: {error}")
        for nodeid in environment.replica_ready(replica):
            self.reports.fail_unrun(nodeid, not_collected_message(replica, nodeid))

    def start_failed(self, replica: Replica, payload: protocol.FailurePayload) -> None:
        replica.start_failed(payload["traceback"])

    def batch_test_started(self, replica: Replica, payload: protocol.NodeidPayload) -> None:
        self.environment_of(replica).test_started(replica, payload["nodeid"], logged=False)

    def test_done(
        self, replica: Replica, raw: str | protocol.TestPayload, ended: float | None = None
    ) -> bool:
        """TEST: a whole test at once (it ended before it was announced, at ``ended`` when it
        was held back); False when it is not shown (cancelled, or an earlier client's)."""
        payload = protocol.test_payload(raw)
        if not replica.of_this_lease(payload["lease"]):
            # An earlier client's test (a persistent replica's held file or late message): not
            # ours. TEST and TESTS are text, which ``dispatch``'s check of a lease passes by.
            return False
        nodeid = payload["nodeid"]
        if replica.was_cancelled(nodeid) and not replica.ended_before_cancel(nodeid, ended):
            return False  # it ran before CANCEL arrived (-x): plain pytest would not have run it
        if nodeid not in replica.in_flight:
            raise ReplicaProtocolError(f"ran {nodeid}, which it was not sent")
        self.environment_of(replica).test_started(replica, nodeid, logged=True)
        self.reports.logstart(nodeid, payload.get("location"))
        warm = payload["warm"]
        for event in payload["events"]:
            kind = event[0]
            if kind == protocol.PASSED:
                report = self.reports.expand(nodeid, event, replica.id, warm, payload["lease"])
                self._replay(replica, report, warm)
            elif kind == protocol.FULL_REPORT:
                self.test_reported(replica, event[1])
            elif kind == protocol.LOGSTART:  # another attempt (pytest-rerunfailures)
                self.test_started(replica, {"nodeid": nodeid, "location": ("", None, "")})
            else:
                self.warning_recorded(replica, event[1])
        self.test_finished(replica, payload, ended)
        return True

    def tests_done(self, replica: Replica, lines: str) -> None:
        """TESTS: quiet passes a replica held back (``replica/held.py``), each a TEST that
        ended when the replica says (its pace, its next test's start, as if each had come
        alone)."""
        now = self._clock.monotonic()
        for ended, text in protocol.tests_entries(lines):
            self.test_done(replica, text, ended=min(ended, now))

    def _take_held(self, replica: Replica) -> None:
        """The quiet passes a replica that ended had held back and may not have sent
        (``replica/held.py``): each still in flight is reported as its TEST would have been,
        so the test it died running is the first one left."""
        if replica.held_file is None:
            return
        recovered = set()
        for ended, text in protocol.read_held(replica.held_file):
            payload = protocol.test_payload(text)
            nodeid = payload["nodeid"]
            # One it sent before it died is neither in flight nor cancelled: reported already.
            unreported = nodeid in replica.in_flight or replica.was_cancelled(nodeid)
            if unreported and self.test_done(replica, payload, ended=ended):
                recovered.add(nodeid)
        replica.held_reported(recovered)

    def test_started(self, replica: Replica, payload: protocol.LogPayload) -> None:
        nodeid = payload["nodeid"]
        if replica.was_cancelled(nodeid):
            return
        since = self._clock.monotonic() - payload.get("elapsed", 0.0)
        self.environment_of(replica).test_started(replica, nodeid, logged=True, since=since)
        self.reports.logstart(nodeid, payload.get("location"))

    def test_reported(self, replica: Replica, payload: str | list[Any]) -> None:
        if isinstance(payload, list):  # compact, of an announced test
            nodeid, warm, lease = payload[-3:]
            if not replica.of_this_lease(lease) or replica.was_cancelled(nodeid):
                return
            report = self.reports.expand(nodeid, payload, replica.id, warm, lease)
            self._replay(replica, report, warm)
            return
        data = protocol.decode_report(payload)
        if not replica.of_this_lease(data.get(protocol.REPORT_LEASE)):
            return  # a test of an earlier client's, finished after that run died
        if replica.was_cancelled(data.get("nodeid", "")):
            return
        self._replay(replica, self.reports.rebuild(data), bool(data.get(protocol.REPORT_WARM)))

    def _replay(self, replica: Replica, report: pytest.TestReport, warm: bool) -> None:
        if self._report_seen is not None:
            self._report_seen(report, replica, self.environment_of(replica).policy)
        replica.reported(
            report.when or "", report.passed, warm, report.duration, self._clock.monotonic()
        )
        self.reports.replay(report, replica)

    def test_finished(
        self,
        replica: Replica,
        payload: protocol.LogPayload | protocol.TestPayload,
        ended: float | None = None,
    ) -> None:
        nodeid = payload["nodeid"]
        if replica.was_cancelled(nodeid):
            return
        warm = replica.current_warm
        self.environment_of(replica).test_finished(replica, nodeid, warm=warm, ended=ended)
        self.reports.logfinish(nodeid)

    def warning_recorded(self, replica: Replica, payload: protocol.WarningPayload) -> None:
        if replica.was_cancelled(payload["nodeid"]):
            return
        self.reports.replica_warning(payload)

    def unknown_nodeid(self, replica: Replica, payload: protocol.NodeidPayload) -> None:
        nodeid = payload["nodeid"]
        replica.not_collected(nodeid, self._clock.monotonic())
        self.reports.fail_unrun(nodeid, not_collected_message(replica, nodeid))

    def teardown_failed(self, replica: Replica, payload: protocol.FailurePayload) -> None:
        self.reports.teardown_error(replica, payload["traceback"])

    def recycle_requested(self, replica: Replica, payload: protocol.RecyclePayload) -> None:
        environment = self.environment_of(replica)
        self._say(
            f"reuse: recycling replica {replica.id} after {payload['nodeid']}: {payload['detail']}"
        )
        environment.take_back(replica)
        environment.retire(replica, f"recycle ({payload['kind']})")

    def tests_returned(self, replica: Replica, payload: list[str]) -> None:
        """Tests handed back unrun (STEAL's answer; after RECYCLE, echoes already requeued)."""
        self.environment_of(replica).requeue_returned(replica, payload)

    def session_stopped_early(
        self, replica: Replica, payload: protocol.StoppedEarlyPayload
    ) -> None:
        """Its session is ending unasked: its running tests fail with the reason, what it
        held runs elsewhere, and an interrupt stops the whole run (see ``stopped_by``)."""
        environment = self.environment_of(replica)
        interrupt = payload["kind"] != "error"
        now = self._clock.monotonic()
        outcomes.stopped_early(
            environment, replica, payload, self.reports, now, requeue=not interrupt
        )
        replica.session_ending(now)
        if interrupt and self.stopped_by is None:
            self.stopped_by = (payload, f"{payload['message']} (in replica {replica.id})")
            for each in self._environments():
                each.cancel()  # as in plain pytest, nothing more starts

    def lease_output(self, replica: Replica, payload: dict[str, Any]) -> None:
        """WORKEROUTPUT: for xdist's ``pytest_testnodedown`` (``nodes.py``), which the
        controller hands every message first; a run-scoped replica's is its last word."""
        replica.served_all()

    def session_finished(self, replica: Replica, payload: protocol.FinishedPayload) -> None:
        replica.session_finished(payload.get("exit_code"))

    def replica_closed(self, replica: Replica, payload: None) -> None:
        environment = self.environment_of(replica)
        self._take_held(replica)
        if self.closing:
            if replica.state is ReplicaState.ENDED:  # let exit at the end (only_exiting)
                return
            replica.terminate()
            environment.replica_ended(replica, replica.retirement())
            return
        outcomes.replica_closed(environment, replica, self.reports, self._host_failed)
