"""What a replica that ends without finishing its work leaves behind: reports for the tests it
was running and the reason, for a crash, a timeout, a hung teardown or a start failure.

Every routed test gets exactly one set of reports: a test in flight on a replica that ends
fails once, with the reason; the tests it held and had not started go back to the queue (or,
when the environment gives up, fail as not run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.environment import Environment
from pytest_reuse_env.controller.launch.base import STILL_RUNNING
from pytest_reuse_env.controller.replica import Ending, EndKind, Replica, ReplicaState
from pytest_reuse_env.controller.reporting import (
    ReportReplayer,
    log_excerpt,
    start_log_note,
    stopped_early_message,
)

#: How much longer than its timeout an async test of a concurrent batch may run before the
#: controller kills its replica (the replica cancels it itself first).
TIMEOUT_GRACE_SECONDS: Final = 5.0

#: A replica on a configured host could not start: (a line for the user, whether the host's
#: group has hosts left), or None for a replica not on a configured host.
HostFailed = Callable[[Replica, str], "tuple[str, bool] | None"]


def enforce_deadlines(
    environment: Environment, now: float, *, start_timeout: float, teardown_timeout: float
) -> None:
    """Kill, with the reason, each replica past a deadline: still starting after
    ``reuse_start_timeout``, in one teardown past ``reuse_teardown_timeout``, or running a test
    past the policy's timeout. Their link closes next, and ``replica_closed`` reports."""
    for replica in environment.replicas:
        if replica.state is ReplicaState.STARTING and now - replica.asked_at > start_timeout:
            replica.kill(
                Ending(
                    EndKind.START_FAILED,
                    f"replica {replica.id} did not finish starting within {start_timeout:g} s"
                    " (reuse_start_timeout); killed",
                )
            )
    for replica in environment.replicas:
        if replica.state is ReplicaState.ENDED:
            continue  # what it was doing ended with it
        since = replica.teardown_since
        forced = replica.cause is not None and replica.cause.forced
        if since is not None and now - since > teardown_timeout and not forced:
            replica.kill(
                Ending(
                    EndKind.KILLED,
                    f"teardown did not finish within {teardown_timeout:g} s "
                    "(reuse_teardown_timeout); replica killed",
                )
            )
    test_timeout = environment.policy.timeout
    if not test_timeout:
        return
    # With concurrency the replica cancels an overrunning async test itself; the controller
    # steps in only if that did not happen (a blocked event loop).
    limit = test_timeout + (TIMEOUT_GRACE_SECONDS if environment.policy.concurrency > 1 else 0.0)
    for replica in environment.replicas:
        overran = [n for n, since in replica.running.items() if now - since > limit]
        since = replica.head_since
        if not replica.running and replica.in_flight and since is not None and now - since > limit:
            overran = [replica.in_flight[0]]  # running unannounced (the GIL held throughout?)
        forced = replica.cause is not None and replica.cause.forced
        if overran and not forced:
            replica.kill(
                Ending(
                    EndKind.KILLED,
                    # The policy's timeout: reuse_timeout, a named policy or the marker's own.
                    f"timed out after {test_timeout:g} s (the timeout of environment "
                    f"{environment.name!r}); replica killed",
                    test=overran[0],
                )
            )


def replica_closed(
    environment: Environment,
    replica: Replica,
    reports: ReportReplayer,
    host_failed: HostFailed,
) -> None:
    """A replica's link closed while the run still wanted it: say how it ended, report what
    it was running, and requeue (or fail, when the environment gives up) what it held."""
    if replica.state is ReplicaState.ENDED:
        return
    cause = replica.cause
    if replica.said_finished and not replica.in_flight:
        replica.terminate()
        environment.replica_ended(replica, replica.retirement())
        return
    if replica.said_finished and (cause is None or not cause.forced):
        # It ended its session with tests still to run and never said why: not a success.
        cause = Ending(
            EndKind.KILLED,
            f"its pytest session ended (exit code {replica.exit_code}) with tests still to run",
        )
    was_ready = replica.ready_at is not None
    start_failure = (
        cause.reason if cause is not None and cause.kind is EndKind.START_FAILED else None
    )
    if replica.attached and not was_ready and start_failure is None:
        # A warm replica dropped the connection before answering (another client held it a
        # moment longer, or it retired meanwhile): not a failure, lease again.
        environment.replica_ended(replica, Ending(EndKind.LEFT))
        return
    if start_failure is not None:
        # It said why it failed and may still be running: end it, then say how it ended.
        replica.terminate(wait=2.0)
        how = replica.exit_description(wait=0)
    else:
        how = replica.exit_description()
        replica.terminate(wait=0.5)
    if not was_ready:
        _start_failed(environment, replica, how, start_failure, reports, host_failed)
        return
    replica.presume_running()
    current = replica.current
    logged = replica.current_logged
    phases = list(replica.current_phases)
    running = list(replica.running)
    if current is not None and current not in running:
        running.insert(0, current)
    ending = cause if cause is not None and cause.kind is EndKind.KILLED else None
    environment.replica_ended(replica, ending or Ending(EndKind.CRASHED, how))
    for nodeid in running:
        why = ending.reason if ending is not None else how
        if ending is None and how == STILL_RUNNING:
            why = "the process was still running when its connection closed; it was killed"
        if ending is not None and ending.test not in (None, nodeid):
            why = f"{ending.test} {why}"
        others = [n for n in running if n != nodeid]
        together = f" (running concurrently with {', '.join(others)})" if others else ""
        message = (
            f"replica {replica.id} (pid {replica.pid}) "
            f"{_what_happened(replica, ending, nodeid, how)} "
            f"while running {nodeid}{together}: {why}{log_excerpt(replica)}"
        )
        if nodeid == current:
            reports.crash(nodeid, phases, message, replica, logged_start=logged)
        else:  # a concurrent test: announced, not yet logged
            reports.crash(nodeid, ["setup"], message, replica, logged_start=False)
    if environment.crash_loop:
        reason = (
            f"not run: environment {environment.name!r} stopped after "
            f"{environment.restarts} replica crashes (limit reuse_max_restarts="
            f"{environment.max_restarts})"
        )
        for nodeid in environment.give_up(reason):
            reports.fail_unrun(nodeid, reason)


def _what_happened(replica: Replica, ending: Ending | None, nodeid: str, how: str) -> str:
    """ "timed out" for a test past its timeout (the reuse marker's, or pytest-timeout's, whose
    thread method ends the process after its banner), "was killed" for another deadline, "lost
    its connection" when the process still ran, "crashed" otherwise: a timeout is not a crash."""
    if ending is not None and ending.test == nodeid:
        return "timed out"
    if ending is not None:
        return "was killed"
    if _PYTEST_TIMEOUT_BANNER in replica.log_tail():
        return "timed out (pytest-timeout ended the process)"
    if how == STILL_RUNNING:
        return "lost its connection"
    return "crashed"


#: What pytest-timeout's thread method writes to stderr (the replica's log) before it exits.
_PYTEST_TIMEOUT_BANNER: Final = "+ Timeout +"


def stopped_early(
    environment: Environment,
    replica: Replica,
    payload: protocol.StoppedEarlyPayload,
    reports: ReportReplayer,
    now: float,
    *,
    requeue: bool,
) -> None:
    """A replica's session is ending unasked (STOPPED_EARLY): each test it was running fails
    once with the reason; the ones it only held run elsewhere (``requeue``) or, when the run
    stops, not at all; it counts towards reuse_max_restarts."""
    for nodeid in [n for n in payload["nodeids"] if n in replica.in_flight]:
        message = stopped_early_message(replica, payload, nodeid)
        if nodeid == replica.current:
            reports.crash(nodeid, list(replica.current_phases), message, replica, logged_start=True)
        else:  # not logged yet: started in a concurrent batch, or about to start
            phases = ["setup"] if nodeid in replica.running else []
            reports.crash(nodeid, phases, message, replica, logged_start=False)
        replica.reported_for(nodeid, now)
    held = replica.give_back()
    if requeue:
        environment.queue.extendleft(reversed(held))
    environment.restarts += 1
    environment.retire(replica, "stopped early")
    if requeue and environment.crash_loop:
        reason = (
            f"not run: environment {environment.name!r} stopped after "
            f"{environment.restarts} replicas crashed or stopped early (limit "
            f"reuse_max_restarts={environment.max_restarts})"
        )
        for nodeid in environment.give_up(reason):
            reports.fail_unrun(nodeid, reason)


def _start_failed(
    environment: Environment,
    replica: Replica,
    how: str,
    start_failure: str | None,
    reports: ReportReplayer,
    host_failed: HostFailed,
) -> None:
    environment.replica_ended(replica, Ending(EndKind.START_FAILED, start_failure or how))
    reason = (
        f"replica {replica.id} (pid {replica.pid}) could not start ({how}):\n"
        f"{start_failure or 'no traceback: the process ended early'}"
        f"{start_log_note(replica, start_failure)}"
    )
    environment.last_start_failure = reason
    dropped = host_failed(replica, start_failure or how)
    if dropped is not None:  # a host the others take over, or a list of files: the whole run
        if dropped[0]:
            reports.warn(dropped[0])
        if dropped[1]:
            return
    if not environment.ever_ready or environment.crash_loop or dropped is not None:
        for nodeid in environment.give_up(reason):
            reports.fail_unrun(nodeid, reason)
