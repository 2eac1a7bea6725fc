"""Scaling and TTL decisions, driven by an injected clock: hours of simulated time, no sleeping.

Most tests run a small fake pool (:class:`Simulator`) that applies the decisions, readies replicas
after a startup delay, runs queued tests on the oldest free replica and jumps from event to event
(or, in one test, polls every tick). Times are dyadic fractions of a second where exactness
matters, so float sums are exact.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_reuse_env.scaling import (
    Action,
    EnvironmentState,
    ReplicaPhase,
    ReplicaView,
    RetireReplica,
    ScalingLimits,
    StartReplicas,
    decide,
    next_deadline,
    starvation_warning,
)

MS = 0.001
HOUR = 3600.0


def make_limits(
    min_replicas: int = 1,
    max_replicas: int = 3,
    concurrency: int = 1,
    scaledown_ttl: float = 30.0,
    idle_ttl: float = 300.0,
) -> ScalingLimits:
    return ScalingLimits(min_replicas, max_replicas, concurrency, scaledown_ttl, idle_ttl)


def idle(replica_id: str, started_at: float, idle_since: float) -> ReplicaView:
    return ReplicaView(replica_id, ReplicaPhase.IDLE, started_at, idle_since=idle_since)


def busy(replica_id: str, started_at: float, in_flight: int = 1) -> ReplicaView:
    return ReplicaView(replica_id, ReplicaPhase.BUSY, started_at, in_flight=in_flight)


def starting(replica_id: str, started_at: float) -> ReplicaView:
    return ReplicaView(replica_id, ReplicaPhase.STARTING, started_at)


def state(
    *replicas: ReplicaView,
    queued: int = 0,
    last_activity: float = 0.0,
    last_scaledown: float | None = None,
) -> EnvironmentState:
    return EnvironmentState(replicas, queued, last_activity, last_scaledown)


# --- the fake pool -----------------------------------------------------------------------------


@dataclass
class FakeReplica:
    replica_id: str
    started_at: float
    ready_at: float
    ready: bool = False
    finishes: list[float] = field(default_factory=list)
    idle_since: float | None = None


class Simulator:
    """A fake pool for one environment: it does what :func:`decide` says, checking every rule.

    After each event it decides and applies until the answer is empty, and checks that one
    round always suffices (applying a decision never leaves more to decide without an event).
    """

    def __init__(self, limits: ScalingLimits, *, startup: float = 2.0) -> None:
        self.limits = limits
        self.startup = startup
        self.now = 0.0
        self.replicas: dict[str, FakeReplica] = {}
        self.queue: list[float] = []  # durations of the tests waiting for a slot
        self.arrivals: list[tuple[float, int, float]] = []  # (at, count, duration)
        self.last_activity = 0.0
        self.last_scaledown: float | None = None
        self.history: list[tuple[float, Action]] = []
        self._ids = itertools.count()
        self.settle()

    # The caller's bookkeeping: the view decide() sees.
    def view(self) -> EnvironmentState:
        views = []
        for r in self.replicas.values():
            if not r.ready:
                views.append(starting(r.replica_id, r.started_at))
            elif r.finishes:
                views.append(busy(r.replica_id, r.started_at, len(r.finishes)))
            else:
                assert r.idle_since is not None
                views.append(idle(r.replica_id, r.started_at, r.idle_since))
        return EnvironmentState(
            tuple(views), len(self.queue), self.last_activity, self.last_scaledown
        )

    def submit(self, count: int, duration: float) -> None:
        self.queue.extend([duration] * count)
        self.settle()

    def schedule(self, at: float, count: int, duration: float) -> None:
        self.arrivals.append((at, count, duration))

    def crash(self, replica_id: str) -> None:
        del self.replicas[replica_id]
        self.settle()

    def settle(self) -> None:
        self._events()
        actions = decide(self.view(), self.limits, self.now)
        if actions:
            for action in actions:
                self._apply(action)
            assert decide(self.view(), self.limits, self.now) == (), "decision did not settle"
        assert len(self.replicas) <= self.limits.max_replicas

    def run_until(self, end: float, *, tick: float | None = None) -> None:
        """Advance to ``end``: event to event (sleeping until next_deadline), or every tick."""
        while True:
            self.settle()
            if tick is not None:
                upcoming = self.now + tick
            else:
                times = [at for at, _, _ in self.arrivals]
                times += [r.ready_at for r in self.replicas.values() if not r.ready]
                times += [f for r in self.replicas.values() for f in r.finishes]
                deadline = next_deadline(self.view(), self.limits, self.now)
                if deadline is not None:
                    assert deadline > self.now
                    times.append(deadline)
                upcoming = min(times, default=math.inf)
            if upcoming > end:
                self.now = end
                self.settle()
                return
            self.now = upcoming

    def _events(self) -> None:
        now = self.now
        for arrival in [a for a in self.arrivals if a[0] <= now]:
            self.arrivals.remove(arrival)
            self.queue.extend([arrival[2]] * arrival[1])
        for r in self.replicas.values():
            if not r.ready and r.ready_at <= now:
                r.ready, r.idle_since = True, now
            if any(f <= now for f in r.finishes):
                r.finishes = [f for f in r.finishes if f > now]
                self.last_activity = now
                if not r.finishes:
                    r.idle_since = now
        # Work goes to the oldest free replica, so surplus gathers on the newest ones.
        for r in sorted(self.replicas.values(), key=lambda r: r.started_at):
            while self.queue and r.ready and len(r.finishes) < self.limits.concurrency:
                r.finishes.append(now + self.queue.pop(0))
                r.idle_since = None
                self.last_activity = now

    def _apply(self, action: Action) -> None:
        self.history.append((self.now, action))
        if isinstance(action, StartReplicas):
            assert action.count > 0
            for _ in range(action.count):
                replica_id = f"r{next(self._ids)}"
                self.replicas[replica_id] = FakeReplica(
                    replica_id, self.now, self.now + self.startup
                )
            return
        replica = self.replicas.pop(action.replica_id)
        assert not replica.finishes, f"retired {action.replica_id} with tests in flight"
        if action.reason == "scaledown":
            assert replica.ready, "scaledown retired a starting replica"
            assert len(self.replicas) >= self.limits.min_replicas, "scaled down below min"
            self.last_scaledown = self.now
        else:
            assert action.reason == "idle"
            assert not self.queue

    def starts(self) -> list[tuple[float, StartReplicas]]:
        return [(t, a) for t, a in self.history if isinstance(a, StartReplicas)]

    def retirements(self, reason: str | None = None) -> list[tuple[float, str]]:
        return [
            (t, a.replica_id)
            for t, a in self.history
            if isinstance(a, RetireReplica) and reason in (None, a.reason)
        ]


# --- starting replicas -------------------------------------------------------------------------


def test_min_replicas_start_up_front_and_only_once() -> None:
    sim = Simulator(make_limits(min_replicas=2, max_replicas=4))
    assert sim.history == [(0.0, StartReplicas(2, "min"))]
    sim.run_until(60.0)
    assert sim.starts() == [(0.0, StartReplicas(2, "min"))]


def test_min_zero_starts_nothing_until_a_test_is_queued() -> None:
    sim = Simulator(make_limits(min_replicas=0, max_replicas=3))
    sim.run_until(2 * HOUR)
    assert sim.history == []
    assert next_deadline(sim.view(), sim.limits, sim.now) is None
    sim.submit(1, duration=1.0)
    assert sim.starts() == [(2 * HOUR, StartReplicas(1, "backlog"))]


@pytest.mark.parametrize(
    ("concurrency", "replicas", "queued", "expected"),
    [
        (1, (idle("a", 0, 0),), 3, (StartReplicas(2, "backlog"),)),  # the idle one takes 1
        (1, (busy("a", 0),), 3, (StartReplicas(2, "backlog"),)),  # max 3: 1 queued waits
        (1, (idle("a", 0, 0),), 1, ()),
        (2, (idle("a", 0, 0),), 5, (StartReplicas(2, "backlog"),)),  # 2 free + 2 x 2 >= 5
        (4, (busy("a", 0, in_flight=3),), 1, ()),  # a busy replica's free slot counts
        (4, (busy("a", 0, in_flight=3),), 2, (StartReplicas(1, "backlog"),)),
        (1, (starting("a", 0), starting("b", 0)), 2, ()),  # soon free
        (1, (starting("a", 0),), 3, (StartReplicas(2, "backlog"),)),
        (1, (busy("a", 0), busy("b", 0), busy("c", 0)), 100, ()),  # at max
    ],
)
def test_backlog_starts_what_free_capacity_lacks_in_one_decision(
    concurrency: int, replicas: tuple[ReplicaView, ...], queued: int, expected: tuple[Action, ...]
) -> None:
    limits = make_limits(min_replicas=1, max_replicas=3, concurrency=concurrency)
    assert decide(state(*replicas, queued=queued), limits, 1.0) == expected


def test_min_and_backlog_start_together_never_past_max() -> None:
    limits = make_limits(min_replicas=2, max_replicas=4)
    assert decide(state(queued=1), limits, 0.0) == (StartReplicas(2, "min"),)
    assert decide(state(queued=3), limits, 0.0) == (
        StartReplicas(2, "min"),
        StartReplicas(1, "backlog"),
    )
    assert decide(state(queued=50), limits, 0.0) == (
        StartReplicas(2, "min"),
        StartReplicas(2, "backlog"),
    )


def test_starting_replicas_prevent_a_second_start_while_they_boot() -> None:
    sim = Simulator(make_limits(min_replicas=0, max_replicas=5), startup=10.0)
    sim.submit(3, duration=5.0)
    assert sim.starts() == [(0.0, StartReplicas(3, "backlog"))]
    sim.run_until(10.0 - MS)  # still booting: the queue is covered, nothing more starts
    assert len(sim.starts()) == 1
    assert sim.queue == [5.0, 5.0, 5.0]
    sim.run_until(10.0)
    assert sim.queue == []
    assert len(sim.starts()) == 1


def test_a_crashed_replica_below_min_is_replaced() -> None:
    sim = Simulator(make_limits(min_replicas=2, max_replicas=2))
    sim.run_until(5.0)
    sim.crash("r0")
    assert sim.starts()[-1] == (5.0, StartReplicas(1, "min"))
    assert sorted(sim.replicas) == ["r1", "r2"]


# --- scaledown_ttl -----------------------------------------------------------------------------


def test_scaledown_retires_the_newest_idle_replica_at_exactly_scaledown_ttl() -> None:
    limits = make_limits(min_replicas=1)
    s = state(idle("old", 0.0, 100.0), idle("new", 10.0, 100.0), last_activity=100.0)
    assert decide(s, limits, 130.0 - MS) == ()
    assert decide(s, limits, 130.0) == (RetireReplica("new", "scaledown"),)
    assert next_deadline(s, limits, 100.0) == 130.0


def test_scaledown_keeps_the_oldest_even_when_it_has_been_idle_longest() -> None:
    # "old" idle for a whole scaledown_ttl proves one replica is surplus; the newest one goes.
    limits = make_limits(min_replicas=1)
    s = state(idle("old", 0.0, 50.0), idle("new", 10.0, 70.0), last_activity=70.0)
    assert decide(s, limits, 80.0) == (RetireReplica("new", "scaledown"),)


def test_scaledown_never_touches_a_busy_or_starting_replica() -> None:
    limits = make_limits(min_replicas=1)
    # Only the old one is idle: it goes, the busy one stays.
    s = state(idle("old", 0.0, 0.0), busy("new", 10.0), last_activity=20.0)
    assert decide(s, limits, 30.0) == (RetireReplica("old", "scaledown"),)
    # A starting replica means demand is arriving: no scaledown until it is ready.
    s = state(idle("old", 0.0, 0.0), idle("mid", 5.0, 0.0), starting("new", 10.0))
    assert decide(s, limits, 300.0 - MS) == ()
    assert next_deadline(s, limits, 100.0) == 300.0  # idle_ttl only


def test_long_tests_are_never_retired() -> None:
    sim = Simulator(make_limits(min_replicas=0, max_replicas=2, idle_ttl=10 * HOUR))
    sim.submit(2, duration=3 * HOUR)  # ready at 2.0, finish at 3h + 2
    sim.run_until(3 * HOUR + 2.0 - MS)
    assert sim.retirements() == []
    sim.run_until(4 * HOUR)
    finished = 3 * HOUR + 2.0
    assert sim.retirements() == [(finished + 30.0, "r1"), (finished + 60.0, "r0")]


def test_scaledown_retires_one_replica_per_period_newest_first_and_never_below_min() -> None:
    sim = Simulator(make_limits(min_replicas=2, max_replicas=5, idle_ttl=10 * HOUR))
    sim.submit(5, duration=10.0)
    assert sim.starts() == [(0.0, StartReplicas(2, "min")), (0.0, StartReplicas(3, "backlog"))]
    sim.run_until(9 * HOUR)
    idle_at = 12.0  # 2 s startup + 10 s test
    assert sim.retirements() == [
        (idle_at + 30.0, "r4"),
        (idle_at + 60.0, "r3"),
        (idle_at + 90.0, "r2"),
    ]
    assert sorted(sim.replicas) == ["r0", "r1"]


def test_work_arriving_resets_the_scaledown_clock() -> None:
    sim = Simulator(make_limits(min_replicas=1, max_replicas=2))
    sim.submit(2, duration=1.0)  # r0 and r1 idle from 3.0
    sim.schedule(3.0 + 29.0, count=2, duration=1.0)  # idle again from 33.0
    sim.run_until(33.0 + 30.0 - MS)
    assert sim.retirements() == []
    sim.run_until(HOUR)
    assert sim.retirements("scaledown") == [(63.0, "r1")]


def test_queued_work_blocks_scaledown() -> None:
    limits = make_limits(min_replicas=0)
    s = state(idle("a", 0.0, 0.0), idle("b", 1.0, 0.0), queued=1)
    assert decide(s, limits, 100.0) == ()
    assert next_deadline(s, limits, 100.0) is None


def test_anti_thrash_counts_from_the_previous_retirement() -> None:
    limits = make_limits(min_replicas=0)
    s = state(idle("a", 0.0, 0.0), idle("b", 1.0, 0.0), last_activity=0.0, last_scaledown=40.0)
    assert next_deadline(s, limits, 40.0) == 70.0
    assert decide(s, limits, 70.0 - MS) == ()
    assert decide(s, limits, 70.0) == (RetireReplica("b", "scaledown"),)


# --- idle_ttl ----------------------------------------------------------------------------------


def test_idle_ttl_retires_everything_including_min_and_not_a_millisecond_before() -> None:
    sim = Simulator(make_limits(min_replicas=2, max_replicas=2, idle_ttl=300.0))
    sim.schedule(5.0, count=1, duration=1.0)  # runs 5.0 to 6.0 on r0
    sim.run_until(306.0 - MS)
    assert sim.retirements() == []
    sim.run_until(306.0)
    assert sim.retirements() == [(306.0, "r0"), (306.0, "r1")]
    assert sim.retirements("idle") == sim.retirements()


def test_idle_ttl_waits_for_tests_in_flight() -> None:
    sim = Simulator(make_limits(min_replicas=1, max_replicas=1, idle_ttl=300.0))
    sim.submit(1, duration=1000.0)  # runs 2.0 to 1002.0
    sim.run_until(1302.0 - MS)
    assert sim.retirements() == []
    sim.run_until(1302.0)
    assert sim.retirements() == [(1302.0, "r0")]


def test_idle_ttl_retires_starting_replicas_too() -> None:
    limits = make_limits(min_replicas=1, idle_ttl=300.0)
    s = state(starting("a", 0.0), last_activity=0.0)
    assert next_deadline(s, limits, 0.0) == 300.0
    assert decide(s, limits, 300.0) == (RetireReplica("a", "idle"),)


def test_no_restart_after_idle_shutdown_until_work_arrives() -> None:
    sim = Simulator(make_limits(min_replicas=2, max_replicas=3, idle_ttl=300.0))
    sim.run_until(300.0)  # never used: gone at idle_ttl after creation
    assert sim.retirements("idle") == [(300.0, "r0"), (300.0, "r1")]
    sim.run_until(5 * HOUR)
    assert sim.replicas == {}
    assert len(sim.starts()) == 1
    assert next_deadline(sim.view(), sim.limits, sim.now) is None
    sim.submit(3, duration=1.0)
    assert sim.starts()[1:] == [
        (5 * HOUR, StartReplicas(2, "min")),
        (5 * HOUR, StartReplicas(1, "backlog")),
    ]
    sim.run_until(5 * HOUR + 3.0)
    assert sim.queue == []


# --- next_deadline and polling -----------------------------------------------------------------


def test_sleeping_until_next_deadline_matches_polling_every_tick() -> None:
    tick = 2.0**-10  # about a millisecond, and exact in binary, so both runs see equal times
    limits = make_limits(min_replicas=1, max_replicas=4, scaledown_ttl=0.5, idle_ttl=2.0)

    def run(tick: float | None) -> list[tuple[float, Action]]:
        sim = Simulator(limits, startup=0.25)
        sim.schedule(0.125, count=4, duration=0.375)
        sim.schedule(1.5, count=1, duration=0.125)
        sim.schedule(1.75, count=6, duration=0.0625)
        sim.schedule(7.0, count=1, duration=0.125)
        sim.run_until(8.0, tick=tick)
        return sim.history

    slept = run(None)
    assert slept == run(tick)
    reasons = {a.reason for _, a in slept}
    assert reasons == {"min", "backlog", "scaledown", "idle"}


def _critical_times(s: EnvironmentState, limits: ScalingLimits) -> list[float]:
    """Every time at which decide's answer could flip, and its neighbours."""
    times = [s.last_activity + limits.idle_ttl]
    for r in s.replicas:
        if r.idle_since is not None:
            times.append(r.idle_since + limits.scaledown_ttl)
    if s.last_scaledown is not None:
        times.append(s.last_scaledown + limits.scaledown_ttl)
    return [t + d for t in times for d in (-MS, 0.0, MS)]


_millis = st.integers(min_value=0, max_value=1_000_000).map(lambda n: n / 1000)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[EnvironmentState, ScalingLimits, float]:
    low = draw(st.integers(0, 3))
    limits = ScalingLimits(
        min_replicas=low,
        max_replicas=draw(st.integers(max(1, low), 5)),
        concurrency=draw(st.integers(1, 3)),
        scaledown_ttl=draw(st.sampled_from([0.0, 0.5, 30.0, 600.0])),
        idle_ttl=draw(st.sampled_from([0.0, 1.0, 30.0, 300.0])),
    )
    replicas = []
    for n in range(draw(st.integers(0, 6))):
        phase = draw(st.sampled_from(ReplicaPhase))
        started_at = draw(_millis)
        if phase is ReplicaPhase.IDLE:
            replicas.append(idle(f"r{n}", started_at, draw(_millis)))
        elif phase is ReplicaPhase.BUSY:
            replicas.append(busy(f"r{n}", started_at, draw(st.integers(1, 4))))
        else:
            replicas.append(starting(f"r{n}", started_at))
    s = EnvironmentState(
        tuple(replicas),
        queued=draw(st.integers(0, 8)),
        last_activity=draw(_millis),
        last_scaledown=draw(st.none() | _millis),
    )
    return s, limits, draw(_millis)


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.floats(0.0, 1.0))
def test_decide_is_constant_until_next_deadline_and_changes_there(
    scenario: tuple[EnvironmentState, ScalingLimits, float], fraction: float
) -> None:
    s, limits, now = scenario
    answer = decide(s, limits, now)
    deadline = next_deadline(s, limits, now)
    end = 10 * now + 2e6 if deadline is None else deadline
    probes = [now + fraction * (end - now), *_critical_times(s, limits)]
    for t in probes:
        if now <= t < end:
            assert decide(s, limits, t) == answer, t
    if deadline is not None:
        assert deadline > now
        assert decide(s, limits, deadline) != answer


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_every_decision_keeps_the_invariants(
    scenario: tuple[EnvironmentState, ScalingLimits, float],
) -> None:
    s, limits, now = scenario
    actions = decide(s, limits, now)
    idle_expired = (
        s.queued == 0
        and all(r.in_flight == 0 for r in s.replicas)
        and now >= s.last_activity + limits.idle_ttl
    )
    if idle_expired:
        assert actions == tuple(RetireReplica(r.replica_id, "idle") for r in s.replicas)
        return
    live = len(s.replicas)
    by_id = {r.replica_id: r for r in s.replicas}
    started = sum(a.count for a in actions if isinstance(a, StartReplicas))
    retired = [a for a in actions if isinstance(a, RetireReplica)]
    assert started == 0 or live + started <= limits.max_replicas
    assert not (started and retired)
    if retired:
        (victim,) = retired
        assert victim.reason == "scaledown"
        assert by_id[victim.replica_id].phase is ReplicaPhase.IDLE
        assert live - 1 >= limits.min_replicas
        assert s.queued == 0
        newest_idle = max(r.started_at for r in s.replicas if r.phase is ReplicaPhase.IDLE)
        assert by_id[victim.replica_id].started_at == newest_idle
    else:
        capacity = sum(max(0, limits.concurrency - r.in_flight) for r in s.replicas)
        capacity += started * limits.concurrency
        # Enough to start the queue, or as many replicas as allowed.
        assert capacity >= s.queued or live + started >= limits.max_replicas
        assert live + started >= limits.min_replicas
        if s.queued == 0 and live >= limits.min_replicas:
            assert started == 0


# --- values and warnings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "concurrency", "scaledown_ttl", "idle_ttl", "option"),
    [
        (-1, 3, 1, 30.0, 30.0, "min_replicas"),
        (3, 2, 1, 30.0, 30.0, "max_replicas"),
        (0, 0, 1, 30.0, 30.0, "max_replicas"),
        (1, 3, 0, 30.0, 30.0, "concurrency"),
        (1, 3, 1, -1.0, 30.0, "scaledown_ttl"),
        (1, 3, 1, 30.0, math.nan, "idle_ttl"),
        (1, 3, 1, 30.0, math.inf, "idle_ttl"),
    ],
)
def test_limits_reject_nonsense(
    low: int, high: int, concurrency: int, scaledown_ttl: float, idle_ttl: float, option: str
) -> None:
    with pytest.raises(ValueError, match=f"{option} must be"):
        ScalingLimits(low, high, concurrency, scaledown_ttl, idle_ttl)


@pytest.mark.parametrize(
    ("phase", "in_flight", "idle_since"),
    [
        (ReplicaPhase.IDLE, 1, 0.0),
        (ReplicaPhase.IDLE, 0, None),
        (ReplicaPhase.BUSY, 0, None),
        (ReplicaPhase.BUSY, 1, 0.0),
        (ReplicaPhase.STARTING, 1, None),
        (ReplicaPhase.STARTING, 0, 0.0),
    ],
)
def test_replica_view_rejects_an_inconsistent_phase(
    phase: ReplicaPhase, in_flight: int, idle_since: float | None
) -> None:
    with pytest.raises(ValueError, match="replica r0"):
        ReplicaView("r0", phase, 0.0, in_flight, idle_since)


def test_state_rejects_duplicate_replicas_and_negative_queue() -> None:
    with pytest.raises(ValueError, match="unique"):
        state(idle("a", 0, 0), busy("a", 0))
    with pytest.raises(ValueError, match="queued"):
        state(queued=-1)


@pytest.mark.parametrize(
    ("replicas", "concurrency", "feeders", "fix"),
    [
        ((1, 1), 1, 1, "raise replicas to (1, 2)"),
        ((0, 1), 1, 4, "raise replicas to (0, 4)"),
        ((1, 2), 1, 4, "raise replicas to (1, 4)"),
        ((1, 2), 2, 5, "raise replicas to (1, 3)"),
    ],
)
def test_starvation_warning_names_the_capacity_and_the_fix(
    replicas: tuple[int, int], concurrency: int, feeders: int, fix: str
) -> None:
    limits = make_limits(*replicas, concurrency=concurrency)
    warning = starvation_warning(limits, feeders)
    assert warning is not None
    assert fix in warning
    assert f"capacity {replicas[1] * concurrency}" in warning


@pytest.mark.parametrize(
    ("replicas", "concurrency", "feeders"), [((1, 2), 1, 2), ((1, 1), 4, 4), ((2, 4), 1, 1)]
)
def test_no_starvation_warning_with_enough_capacity(
    replicas: tuple[int, int], concurrency: int, feeders: int
) -> None:
    assert starvation_warning(make_limits(*replicas, concurrency=concurrency), feeders) is None
