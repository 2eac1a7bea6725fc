"""One environment: the tests that share a policy, their queue and their replicas.

It decides which replica gets which test, when replicas start and stop, and what happens to work
a dead replica held. It knows nothing of pytest: tests are nodeids, replicas are handles from
``replica.py`` made by the ``launch`` callable the controller passes in.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, final

from pytest_reuse_env import protocol, scaling
from pytest_reuse_env.controller.clock import SYSTEM_CLOCK, Clock
from pytest_reuse_env.controller.replica import Ending, EndKind, Replica, ReplicaState
from pytest_reuse_env.policy import ReusePolicy

#: The most tests a replica holds at once, and the time's worth of quick tests it is given.
MAX_DEPTH: Final = 64
PIPELINE_SECONDS: Final = 0.02
#: Quick tests go out in guided batches: a refill may take up to a share of the queue (one of
#: ``GUIDED_SHARES`` per replica the environment may have) and ``BATCH_SECONDS`` of tests by the
#: replica's mean. Few RUN messages matter: each wakes the replica's receiving thread, which
#: then contends for the GIL with the test running (measured: 0.1 ms a test at one RUN every
#: ten tests). The shares shrink with the queue, and a replica that runs dry takes half of what
#: another holds unstarted (STEAL), so the end of the run stays balanced.
GUIDED_SHARES: Final = 2
BATCH_SECONDS: Final = 0.25
#: A dry replica steals when the other's unstarted tests are two or more and, by its mean, at
#: least this long: for less, the round trip costs more than it saves.
STEAL_SECONDS: Final = 0.01

#: idle_ttl in watch mode: ten years, "never" for scaling's finite arithmetic.
WATCH_IDLE_TTL: Final = 10 * 365 * 24 * 3600.0


@final
@dataclass
class EnvironmentStats:
    """What the environment did, for the terminal summary and the JSON report."""

    started: int = 0
    attached: int = 0
    start_failures: int = 0
    retired: Counter[str] = field(default_factory=Counter)
    tests_cold: int = 0
    tests_warm: int = 0
    ready: int = 0
    peak_busy: int = 0
    peak_tests: int = 0
    first_start: float | None = None
    last_finish: float | None = None
    #: Warm replicas catching up with edits (replica/reload.py): files re-imported, warm
    #: fixtures kept and torn down, and what the kept ones had cost to set up.
    modules_reimported: int = 0
    fixtures_kept: int = 0
    fixtures_rebuilt: int = 0
    kept_fixture_seconds: float = 0.0
    #: Warm replicas that kept fixtures: the summary averages their kept seconds.
    replicas_keeping: int = 0
    #: Tests a replica that ran dry took back from another's queue (STEAL).
    tests_stolen: int = 0


@final
class Environment:
    """The queue and the replicas of one ``ReusePolicy``."""

    def __init__(
        self,
        name: str,
        policy: ReusePolicy,
        launch: Callable[[Environment], Replica | None],
        *,
        max_restarts: int,
        closing: bool,
        serial: bool = False,
        key: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        replica_limit: int | None = None,
        watching: bool = False,
    ) -> None:
        self.name = name
        self.policy = policy
        self._launch = launch
        self.max_restarts = max_restarts
        #: All work is known up front (a whole run's items): replicas get SHUTDOWN, not DRAIN,
        #: once the queue is empty, so the last test tears down everything as in plain pytest.
        self.closing = closing
        #: Fed one test at a time (inside an xdist worker): one replica is all it can use.
        self.serial = serial
        #: The session's test after those queued (``submit``), for the replica that takes the
        #: last of them.
        self._then: str | None = None
        #: Registry key of a persistent (scope="global") environment; None for scope="run".
        self.key = key
        #: Since when the environment has wanted a replica that max (across runs) forbids.
        self.waiting_since: float | None = None
        self._clock = clock
        self.queue: deque[str] = deque()
        self.replicas: list[Replica] = []
        #: Every replica this environment used in the run, handed back ones included.
        self.history: list[Replica] = []
        self.restarts = 0
        self.stopped = False  # -x, a crash loop, or the end of the run: start nothing more
        #: Why the environment gave up (crash loop, no replica could start or be had).
        self.stop_reason: str | None = None
        self.stats = EnvironmentStats()
        self.last_start_failure: str | None = None
        self.last_activity = clock.monotonic()
        self.last_scaledown: float | None = None
        #: The policy's max replicas when ``replica_limit`` (reuse_replica_limit, the machine's
        #: cores by default) clamped it, for the summary's note; None when it did not.
        self.clamped_from: int | None = None
        self._replica_limit = replica_limit
        self._watching = watching
        self.limits = self._limits()

    def _limits(self) -> scaling.ScalingLimits:
        policy = self.policy
        max_replicas = 1 if self.serial else policy.max_replicas
        if self._replica_limit is not None and max_replicas > self._replica_limit:
            self.clamped_from, max_replicas = max_replicas, self._replica_limit
        return scaling.ScalingLimits(
            min_replicas=0
            if self.closing
            else min(policy.min_replicas, 1 if self.serial else 1 << 30, max_replicas),
            max_replicas=max_replicas,
            concurrency=policy.concurrency,
            scaledown_ttl=policy.scaledown_ttl_seconds,
            # Watch mode leases its replicas for the whole session: they never idle out.
            idle_ttl=WATCH_IDLE_TTL if self._watching else policy.idle_ttl_seconds,
        )

    def one_at_a_time(self) -> None:
        """The run goes one test at a time (``-x``, ``--maxfail``, ``--sw``, pytest-order),
        learnt after this environment started replicas during collection: one replica, kept
        for the next test (never shut down when the queue runs dry); any other is retired."""
        if self.serial:
            return
        self.serial, self.closing = True, False
        self.limits = self._limits()
        for replica in self.live[1:]:
            self.retire(replica, "one at a time")

    def last_test(self) -> None:
        """The session's last test is submitted (the last one xdist gives this worker, or the
        last of a run that goes one test at a time): a run-scoped environment's replicas are
        told to finish once the queue is empty, so the one running it knows it is its last
        and tears everything down in its teardown, as plain pytest does, reporting what fails
        there with it. Persistent replicas keep their state: that is the warm state."""
        if self.persistent:
            return
        self.closing = True
        self.limits = self._limits()

    def __repr__(self) -> str:
        return f"<Environment {self.name} queued={len(self.queue)} replicas={self.replicas}>"

    def begin_round(self) -> None:
        """Watch mode, a new round: whatever stopped the last one (``-x``, a crash loop) is
        forgotten, and every idle ready replica catches up with edits (``Replica.reattach``)."""
        self.stopped = False
        self.stop_reason = None
        self.restarts = 0
        self.waiting_since = None
        self.last_activity = self._clock.monotonic()
        for replica in self.live:
            if replica.accepting and not replica.in_flight:
                replica.reattach(self.last_activity)

    # -- capacity ----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Tests a replica holds at least: enough that it always knows the next one, and with
        concurrency, several batches' worth, so no round trip stalls its event loop."""
        concurrency = self.policy.concurrency
        return concurrency + 2 if concurrency == 1 else 4 * concurrency + 2

    def depth_of(self, replica: Replica) -> int:
        """Tests ``replica`` holds at once: ``depth``, or for quick tests as many as it runs in
        ``PIPELINE_SECONDS`` (up to ``MAX_DEPTH``), so it never waits on a round trip and one
        RUN carries many tests. Slow tests keep it shallow: the run's tail stays balanced."""
        mean = replica.mean_test_seconds
        if mean is None or self.serial:
            return self.depth
        return max(self.depth, min(MAX_DEPTH, round(PIPELINE_SECONDS / max(mean, 1e-6))))

    @property
    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    @property
    def in_flight(self) -> int:
        return sum(len(r.in_flight) for r in self.replicas if r.state is not ReplicaState.ENDED)

    @property
    def starved(self) -> bool:
        """Tests are queued and a ready replica would run out of work during a local test."""
        return bool(self.queue) and not self.stopped and any(r.accepting for r in self.live)

    @property
    def done(self) -> bool:
        return not self.queue and self.in_flight == 0

    @property
    def ever_ready(self) -> bool:
        return self.stats.ready > 0

    # -- work --------------------------------------------------------------------------------

    def submit(self, nodeids: Iterable[str], *, then: str | None = None) -> None:
        """Queue tests; ``then`` (one test at a time): the session's test after them, which
        the replica that takes the last of them is told (NEXT)."""
        self.queue.extend(nodeids)
        self._then = then
        self.pump()

    def pump(self) -> None:
        """Start replicas the backlog needs, then hand out work; call after every event."""
        if self.stopped:
            return
        if self.queue or not self.closing:
            self._scale()
        self._feed()

    def _scale(self) -> None:
        """Apply what the scaling rules decide for this moment (see ``scaling.py``)."""
        now = self._clock.monotonic()
        for action in scaling.decide(self.state(now), self.limits, now):
            if isinstance(action, scaling.StartReplicas):
                for _ in range(action.count):
                    if not self._start_replica():
                        break
            else:
                replica = next(r for r in self.live if r.id == action.replica_id)
                if action.reason == "scaledown":
                    self.last_scaledown = now
                self.retire(replica, action.reason)

    def state(self, now: float) -> scaling.EnvironmentState:
        views = []
        for replica in self.live:
            if replica.state is ReplicaState.STARTING:
                phase, idle_since = scaling.ReplicaPhase.STARTING, None
            elif replica.in_flight:
                phase, idle_since = scaling.ReplicaPhase.BUSY, None
            else:
                phase = scaling.ReplicaPhase.IDLE
                idle_since = replica.idle_since if replica.idle_since is not None else now
            views.append(
                scaling.ReplicaView(
                    replica.id,
                    phase,
                    replica.started_at,
                    len(replica.in_flight) if phase is scaling.ReplicaPhase.BUSY else 0,
                    idle_since,
                )
            )
        return scaling.EnvironmentState(
            tuple(views), len(self.queue), self.last_activity, self.last_scaledown
        )

    def next_deadline(self) -> float | None:
        now = self._clock.monotonic()
        return scaling.next_deadline(self.state(now), self.limits, now)

    @property
    def persistent(self) -> bool:
        return self.key is not None

    def _start_replica(self) -> bool:
        """Start (or attach) one replica; False when none may be had now."""
        replica = self._launch(self)
        if replica is None:
            if self.waiting_since is None:
                self.waiting_since = self._clock.monotonic()
            return False
        self.waiting_since = None
        replica.adopted(self._clock.monotonic())
        self.replicas.append(replica)
        self.history.append(replica)
        if replica.attached:
            self.stats.attached += 1
        else:
            self.stats.started += 1
        return True

    def warm_up(self, count: int) -> None:
        """Start replicas before any work arrives, so the first test finds one ready."""
        while len(self.live) < min(count, self.limits.max_replicas):
            if not self._start_replica():
                break

    def retire(self, replica: Replica, reason: str) -> None:
        """Ask a replica to finish what it holds and exit; counted when it is gone."""
        replica.retire(reason)

    def _feed(self) -> None:
        # The oldest free replica first: surplus gathers on the newest, which scaledown retires.
        for replica in sorted(self.live, key=lambda r: (len(r.in_flight), r.started_at)):
            if not replica.accepting:
                continue
            depth = self.depth_of(replica)
            room = depth - len(replica.in_flight)
            # Refilled in batches once a quarter has run: one RUN for many tests.
            if room >= max(1, depth // 4) and self.queue:
                size = min(max(room, self._guided_batch(replica)), len(self.queue))
                batch = [self.queue.popleft() for _ in range(size)]
                then = None
                if not self.queue:  # it took the last: it is told the session's next test
                    then, self._then = self._then, None
                replica.assign(batch, self._clock.monotonic(), then=then)
        if not self.queue and not self._balance_tail():
            for replica in self.live:
                if not replica.accepting:
                    continue
                if self.closing:
                    self.retire(replica, "end of run")
                elif replica.in_flight:
                    replica.drain()

    def _guided_batch(self, replica: Replica) -> int:
        """How many quick tests one RUN may carry (see ``GUIDED_SHARES``); 0 while the
        replica's mean is unknown, one test at a time, or for tests slower than
        ``BATCH_SECONDS``."""
        mean = replica.mean_test_seconds
        if mean is None or self.serial:
            return 0
        share = -(-len(self.queue) // (GUIDED_SHARES * max(1, self.limits.max_replicas)))
        return min(share, int(BATCH_SECONDS / max(mean, 1e-6)))

    def _balance_tail(self) -> bool:
        """The queue is empty: each ready replica with nothing left to start (it waits at its
        last test for a next one or the word to finish) asks the replica holding the most
        unstarted tests for half of them (STEAL); they come back (RETURNED) to the queue and
        from there to it. True while that may still happen (a request unanswered, or work
        worth taking held while another replica serves): until then no replica is told to
        finish (SHUTDOWN, DRAIN), so each last test still tears down as in plain pytest."""
        if self.stopped or self.serial:
            return False
        serving = [
            r for r in self.replicas if r.state in (ReplicaState.READY, ReplicaState.STOPPING)
        ]
        donors = [r for r in serving if not r.steal_asked and self._worth_stealing(r)]
        dry = [r for r in self.live if r.accepting and not r.unstarted]
        # One request per dry replica, each to another donor, the fullest first; what comes
        # back is queued for whichever replica is free.
        for donor in sorted(donors, key=lambda r: r.unstarted, reverse=True)[: len(dry)]:
            donor.ask_steal(donor.unstarted // 2)
            donors.remove(donor)
        holding = any(r.steal_asked for r in serving) or (bool(donors) and len(self.live) > 1)
        if holding:
            now = self._clock.monotonic()
            for replica in dry:
                replica.waits_for_work(now)
        return holding

    @staticmethod
    def _worth_stealing(replica: Replica) -> bool:
        """Half of its unstarted tests is one or more, and by its mean ``STEAL_SECONDS``."""
        count = replica.unstarted // 2
        mean = replica.mean_test_seconds
        return count >= 1 and (mean is None or count * mean >= STEAL_SECONDS)

    def requeue_returned(self, replica: Replica, nodeids: list[str]) -> None:
        """RETURNED: the tests it still held of those it handed back are first in line."""
        back = replica.returned(nodeids)
        self.stats.tests_stolen += len(back)  # after RECYCLE none: they were taken at once
        self.queue.extendleft(reversed(back))

    def take_back(self, replica: Replica) -> None:
        """A replica being recycled runs nothing more: every test it holds and has not started
        (in the order they were sent, in transit ones included) is first in line again. The
        replica hands them back too; those echoes find nothing left to take."""
        self.queue.extendleft(reversed(replica.give_back()))

    def hand_back(self) -> list[Replica]:
        """Give up the idle persistent replicas (another run waits for one); the caller
        releases them to the registry. They are not retired: they stay warm."""
        idle = [r for r in self.live if r.persistent and r.accepting and not r.in_flight]
        for replica in idle:
            self.replicas.remove(replica)
        return idle

    def cancel(self) -> list[str]:
        """Stop handing out work (``-x``): returns the nodeids that will not run."""
        self.stopped = True
        dropped = list(self.queue)
        self.queue.clear()
        for replica in self.replicas:
            # Stopping ones too: asked to finish at the end of the run, they still hold tests.
            if replica.state is not ReplicaState.ENDED:
                dropped.extend(replica.cancel(self._clock.monotonic()))
        return dropped

    # -- events ------------------------------------------------------------------------------

    def replica_ready(self, replica: Replica) -> list[str]:
        """A replica collected; returns queued nodeids it did not collect (they cannot run)."""
        self.stats.ready += 1
        missing = [n for n in self.queue if n not in replica.nodeids]
        if missing:
            # The replica's collection differs from the controller's: those tests cannot run.
            self.queue = deque(n for n in self.queue if n in replica.nodeids)
        return missing

    def test_started(
        self, replica: Replica, nodeid: str, *, logged: bool, since: float | None = None
    ) -> None:
        """A replica began a test (see ``Replica.took``), at ``since`` if it says when."""
        self.last_activity = self._clock.monotonic()
        replica.took(nodeid, self.last_activity if since is None else since, logged=logged)
        if self.stats.first_start is None:
            self.stats.first_start = self.last_activity
        # Only replicas still in this run count: an ended one's last test is not running.
        serving = [r for r in self.replicas if r.state is not ReplicaState.ENDED]
        # A replica holding tests runs one now, announced or not (quick tests are not: see
        # protocol.TEST); async batches announce each of theirs (STARTED).
        busy = sum(1 for r in serving if r.running or r.in_flight)
        self.stats.peak_busy = max(self.stats.peak_busy, busy)
        at_once = sum(max(len(r.running), 1 if r.in_flight else 0) for r in serving)
        self.stats.peak_tests = max(self.stats.peak_tests, at_once)

    def test_finished(
        self, replica: Replica, nodeid: str, warm: bool, ended: float | None = None
    ) -> None:
        """A test's reports are all in; it ended at ``ended`` if it was held back."""
        self.last_activity = self.stats.last_finish = self._clock.monotonic()
        replica.finished(nodeid, self.last_activity if ended is None else ended)
        if warm:
            self.stats.tests_warm += 1
        else:
            self.stats.tests_cold += 1

    def replica_ended(self, replica: Replica, ending: Ending) -> list[str]:
        """A replica is gone: count how it ended and requeue the tests it held and had not
        started (returned). What it was running is the controller's to report."""
        held = replica.give_back()
        replica.ended(ending)
        self.queue.extendleft(reversed(held))
        if ending.kind is EndKind.LEFT:
            # An attached replica that closed before answering was never this run's: lease again.
            self.replicas.remove(replica)
        elif ending.kind is EndKind.START_FAILED:
            self.stats.start_failures += 1
            self.restarts += 1
        elif ending.kind in (EndKind.CRASHED, EndKind.KILLED):
            self.stats.retired["crash"] += 1
            self.restarts += 1
        elif ending.kind is EndKind.RETIRED:
            # "stale: conftest.py changed" counts as "stale"; the replica keeps the detail.
            self.stats.retired[ending.reason.split(":")[0]] += 1
        return held

    @property
    def crash_loop(self) -> bool:
        return self.restarts > self.max_restarts

    def give_up(self, reason: str) -> list[str]:
        """No replica can serve this environment: returns every test that will not run."""
        self.stopped = True
        self.stop_reason = reason
        lost = list(self.queue)
        self.queue.clear()
        return lost

    def let_served_exit(self) -> list[Replica]:
        """End of the run: run-scoped replicas that served everything (``only_exiting``) are
        retired now, and their processes end their pytest sessions while the run reports;
        returns them, for the caller to reap (``terminate``) at the very end."""
        served = [r for r in self.replicas if r.state is not ReplicaState.ENDED and r.only_exiting]
        for replica in served:
            replica.let_exit()
            self.replica_ended(replica, replica.retirement())
        return served

    def stop(self) -> None:
        """The run's tests are done: start and feed nothing more (a replica retired now must not
        be replaced for the minimum), and ask every live run-scoped replica to finish; its last
        WORKEROUTPUT follows its teardown. Persistent replicas stay as they are."""
        self.stopped = True
        for replica in self.replicas:
            if replica.alive and not replica.persistent:
                self.retire(replica, "end of run")

    def shutdown(self) -> list[Replica]:
        """End of the run: ``stop``; returns the live persistent replicas, which the caller
        releases (they stay warm, even mid-test: Ctrl-C aborts that test when we disconnect)."""
        self.stop()
        return [replica for replica in self.replicas if replica.alive]

    def figures(self, notes: list[str]) -> dict[str, Any]:
        """What this environment did, as builtins (see ``summary.py`` for the schema)."""
        return {
            "name": self.name,
            "policy": self.policy.describe(),
            "replicas_started": self.stats.started,
            "replicas_attached": self.stats.attached,
            "start_failures": self.stats.start_failures,
            "retired": dict(self.stats.retired),
            "tests_cold": self.stats.tests_cold,
            "tests_warm": self.stats.tests_warm,
            "peak_busy": self.stats.peak_busy,
            "peak_tests": self.stats.peak_tests,
            "tests_stolen": self.stats.tests_stolen,
            "test_phase_seconds": (
                self.stats.last_finish - self.stats.first_start
                if self.stats.first_start is not None and self.stats.last_finish is not None
                else 0.0
            ),
            "max_replicas": self.limits.max_replicas,
            "concurrency": self.policy.concurrency,
            "setup_seconds_total": sum(
                r.setup_seconds or 0.0 for r in self.history if not r.attached
            ),
            "modules_reimported": self.stats.modules_reimported,
            "fixtures_kept": self.stats.fixtures_kept,
            "fixtures_rebuilt": self.stats.fixtures_rebuilt,
            "kept_fixture_seconds": self.stats.kept_fixture_seconds,
            "replicas_keeping": self.stats.replicas_keeping,
            "notes": notes,
            "replicas": [
                {
                    "id": r.id,
                    "pid": r.pid,
                    "setup_seconds": r.setup_seconds,
                    "tests_run": r.tests_run,
                    "ended": r.ending.label if r.ending is not None else None,
                    "attached": r.attached,
                    "spare": r.from_spare,
                    # From the decision to start (or attach) it to its first test: scale-up time.
                    "first_test_seconds": (
                        r.first_test_at - r.started_at if r.first_test_at is not None else None
                    ),
                }
                for r in self.history
            ],
        }

    def replica_reloaded(self, reload: protocol.ReloadPayload) -> None:
        """A warm replica this run attached caught up with edited files (and may serve)."""
        self.stats.modules_reimported += len(reload["reimported"])
        self.stats.fixtures_kept += len(reload["kept"])
        self.stats.fixtures_rebuilt += len(reload["rebuilt"])
        self.stats.kept_fixture_seconds += reload["kept_seconds"]
        self.stats.replicas_keeping += bool(reload["kept"])
