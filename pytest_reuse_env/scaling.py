"""When an environment starts and retires replicas: pure decisions from (state, now) to actions.

This module decides and the pool acts. It does no I/O, starts no threads or processes, never reads
a clock (every function that depends on time takes ``now``: monotonic seconds) and imports nothing
from the rest of the package, so the rules can be tested over hours of simulated time in
milliseconds.

The caller's side of the contract, per environment:

- ``replicas`` lists every replica that is not retiring: a retired replica leaves the view at
  once, even while it is still shutting down.
- A replica is ``STARTING`` until it is ready, then ``IDLE`` (no test in flight, ``idle_since`` =
  when it last became idle) or ``BUSY``. A replica that takes work gets a fresh ``idle_since``
  when it next becomes idle, so work arriving resets its scaledown clock.
- ``last_activity`` is the latest start or finish of any test (environment creation if none).
- ``last_scaledown`` is the time of the last ``RetireReplica(reason="scaledown")`` applied.

The rules (from the issue "Elastic environments"; choices where it was silent are marked *):

1. Minimum: while fewer than ``min_replicas`` replicas are live, start the difference (reason
   ``"min"``), except while the environment is idle-expired (rule 3).
2. Backlog: free capacity is the sum, over live replicas (starting ones included: they will soon
   be free), of ``concurrency`` minus tests in flight. While ``queued`` exceeds it, start as many
   replicas as the backlog needs, in one decision, up to ``max_replicas`` live replicas
   (reason ``"backlog"``).
3. idle_ttl: once nothing is queued or in flight and ``now >= last_activity + idle_ttl``, every
   replica is retired (reason ``"idle"``), the minimum and starting ones included. *The
   environment then stays at zero: "idle-expired" is derived from the state, not stored, so it
   ends exactly when work is queued again, and rule 1 then restarts the minimum.
4. scaledown_ttl (anti-thrash): while more than ``min_replicas`` are live, one idle replica is
   retired once some idle replica has been idle a full ``scaledown_ttl``, counted from the later
   of its ``idle_since`` and ``last_scaledown``. So at most one replica goes per ``scaledown_ttl``
   period: a burst that ends together shrinks one replica at a time, not all at once.
5. *The replica retired by scaledown is the newest idle one (latest ``started_at``), even when an
   older one is the one that has been idle longest: one idle replica for a whole
   ``scaledown_ttl`` proves one replica is surplus, and the oldest, warmest one should survive.
6. A busy replica and a starting replica are never retired by scaledown. *Nor does scaledown run
   while tests are queued or a replica is starting: both mean demand is arriving, and shrinking
   then would thrash.
7. idle_ttl is checked before everything else; starts and a scaledown never happen in the same
   decision (a scaledown needs an empty queue and more than ``min_replicas`` live).

*The pool should give work to the oldest free replica: surplus then gathers on the newest
replicas, which are the ones scaledown retires.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final, TypeAlias, final

__all__ = [
    "Action",
    "EnvironmentState",
    "ReplicaPhase",
    "ReplicaView",
    "RetireReplica",
    "ScalingLimits",
    "StartReplicas",
    "decide",
    "next_deadline",
    "starvation_warning",
]


@final
@dataclass(frozen=True)
class ScalingLimits:
    """The sizing part of a ``ReusePolicy``, with TTLs in seconds."""

    min_replicas: int
    """Live replicas kept while the environment is in use; >= 0."""
    max_replicas: int
    """Most live replicas (starting, idle or busy; retiring ones not counted); >= max(1, min)."""
    concurrency: int
    """Tests one replica runs at once; >= 1."""
    scaledown_ttl: float
    """Idle seconds before one replica above the minimum is retired; >= 0."""
    idle_ttl: float
    """Seconds without a test starting or finishing before every replica is retired; >= 0."""

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas must be >= 1 and >= min_replicas ({self.min_replicas}), "
                f"got {self.max_replicas}"
            )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        for name in ("scaledown_ttl", "idle_ttl"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")


class ReplicaPhase(enum.Enum):
    """The load of a live replica as these rules see it; retiring replicas are not in the view
    at all. (The controller's ``ReplicaState`` is its handle's lifecycle, the registry's
    ``RecordState`` a detached replica's lease: three different things.)"""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"


@final
@dataclass(frozen=True)
class ReplicaView:
    """What the decisions need to know about one live replica."""

    replica_id: str
    phase: ReplicaPhase
    started_at: float
    """When the replica was asked to start: the larger, the newer (and colder)."""
    in_flight: int = 0
    """Tests running on it now: 0 unless BUSY."""
    idle_since: float | None = None
    """When it last became idle: set exactly when IDLE (a starting replica was never idle)."""

    def __post_init__(self) -> None:
        busy = self.phase is ReplicaPhase.BUSY
        if busy != (self.in_flight > 0) or self.in_flight < 0:
            raise ValueError(
                f"replica {self.replica_id}: {self.phase.value} with {self.in_flight} tests in "
                "flight (BUSY exactly when at least one is)"
            )
        if (self.phase is ReplicaPhase.IDLE) != (self.idle_since is not None):
            raise ValueError(
                f"replica {self.replica_id}: {self.phase.value} with idle_since="
                f"{self.idle_since} (set exactly when IDLE)"
            )


@final
@dataclass(frozen=True)
class EnvironmentState:
    """One environment as the pool sees it at the moment of a decision."""

    replicas: tuple[ReplicaView, ...]
    """Live replicas (starting, idle, busy); retiring ones are left out."""
    queued: int
    """Tests waiting for a free replica slot."""
    last_activity: float
    """Latest start or finish of any test; the environment's creation time if none yet."""
    last_scaledown: float | None = None
    """When the last scaledown retirement was applied; None if never."""

    def __post_init__(self) -> None:
        if self.queued < 0:
            raise ValueError(f"queued must be >= 0, got {self.queued}")
        ids = [replica.replica_id for replica in self.replicas]
        if len(set(ids)) != len(ids):
            raise ValueError(f"replica ids must be unique, got {ids}")


@final
@dataclass(frozen=True)
class StartReplicas:
    """Start ``count`` new replicas."""

    count: int
    reason: str
    """``"min"`` (below min_replicas) or ``"backlog"`` (queued tests exceed free capacity)."""


@final
@dataclass(frozen=True)
class RetireReplica:
    """Retire one replica: remove it from the view, then ask it to stop."""

    replica_id: str
    reason: str
    """``"scaledown"`` (surplus above min_replicas) or ``"idle"`` (idle_ttl: everything goes)."""


Action: TypeAlias = StartReplicas | RetireReplica


def decide(state: EnvironmentState, limits: ScalingLimits, now: float) -> tuple[Action, ...]:
    """What the pool should do now; the same state and ``now`` always give the same actions.

    The caller applies every action, updates the state, and decides again after each event or
    at :func:`next_deadline`, whichever comes first.
    """
    if now >= _idle_expiry(state, limits):
        return tuple(RetireReplica(replica.replica_id, "idle") for replica in state.replicas)
    actions: list[Action] = []
    live = len(state.replicas)
    for_min = max(0, limits.min_replicas - live)
    if for_min:
        actions.append(StartReplicas(for_min, "min"))
    shortfall = state.queued - _free_capacity(state, limits) - for_min * limits.concurrency
    room = limits.max_replicas - live - for_min
    for_backlog = min(room, -(-shortfall // limits.concurrency))
    if for_backlog > 0:
        actions.append(StartReplicas(for_backlog, "backlog"))
    due = _scaledown_due(state, limits)
    if due is not None and now >= due:
        actions.append(RetireReplica(_scaledown_victim(state).replica_id, "scaledown"))
    return tuple(actions)


def next_deadline(state: EnvironmentState, limits: ScalingLimits, now: float) -> float | None:
    """The earliest time after ``now`` at which :func:`decide` answers differently, if no event
    (a test queued, started or finished, a replica ready, crashed or retired) happens first.

    None means only an event can change the answer: wait for one. Takes ``now`` so that a
    deadline already passed (and acted on) is never returned again.
    """
    expiry = _idle_expiry(state, limits)
    if now >= expiry:  # expired: only work arriving (an event) revives the environment
        return None
    deadlines: list[float] = []
    # Expiring changes the answer only if there is a replica to retire or a minimum to stop.
    if math.isfinite(expiry) and (state.replicas or limits.min_replicas):
        deadlines.append(expiry)
    due = _scaledown_due(state, limits)
    if due is not None and due > now:
        deadlines.append(due)
    return min(deadlines, default=None)


#: More replicas set the session fixtures up more than once at a time: not for every suite.
_TWICE: Final = ", if its fixtures can be set up twice at once (no fixed port, file or lock held)"


def starvation_warning(limits: ScalingLimits, feeders: int) -> str | None:
    """One sentence if the environment's capacity starves the workers feeding it, else None.

    ``feeders`` is how many pytest-xdist workers (1 without xdist) send tests to the environment.
    """
    if feeders < 1:
        raise ValueError(f"feeders must be >= 1, got {feeders}")
    capacity = limits.max_replicas * limits.concurrency
    if capacity < feeders:
        enough = -(-feeders // limits.concurrency)
        return (
            f"capacity {capacity} (at most {limits.max_replicas} replicas x concurrency "
            f"{limits.concurrency}) is below the {feeders} pytest-xdist workers feeding this "
            f"environment, so workers will wait for a free replica: raise replicas to "
            f"({limits.min_replicas}, {enough}) or set concurrency (async tests only){_TWICE}"
        )
    if capacity == 1:
        return (
            "capacity 1 (at most 1 replica x concurrency 1) runs this environment's tests one "
            f"at a time: raise replicas to ({limits.min_replicas}, {max(2, feeders)}) or set "
            f"concurrency (async tests only){_TWICE}"
        )
    return None


def _free_capacity(state: EnvironmentState, limits: ScalingLimits) -> int:
    return sum(max(0, limits.concurrency - replica.in_flight) for replica in state.replicas)


def _idle_expiry(state: EnvironmentState, limits: ScalingLimits) -> float:
    """When the whole environment expires under idle_ttl; infinity while it has work."""
    if state.queued or any(replica.in_flight for replica in state.replicas):
        return math.inf
    return state.last_activity + limits.idle_ttl


def _scaledown_due(state: EnvironmentState, limits: ScalingLimits) -> float | None:
    """When one replica becomes surplus by rule 4, or None while rules 4 and 6 forbid it."""
    if state.queued or len(state.replicas) <= limits.min_replicas:
        return None
    if any(replica.phase is ReplicaPhase.STARTING for replica in state.replicas):
        return None
    idle_since = [r.idle_since for r in state.replicas if r.idle_since is not None]
    if not idle_since:
        return None
    since = min(idle_since)
    if state.last_scaledown is not None:
        since = max(since, state.last_scaledown)
    return since + limits.scaledown_ttl


def _scaledown_victim(state: EnvironmentState) -> ReplicaView:
    """The newest idle replica (rule 5); the replica id breaks ties so the choice is stable."""
    idle = [r for r in state.replicas if r.phase is ReplicaPhase.IDLE]
    return max(idle, key=lambda replica: (replica.started_at, replica.replica_id))
