"""One environment: the tests that share a policy, their queue and their replicas.

It decides which replica gets which test, when replicas start and stop, and what happens to work
a dead replica held. It knows nothing of pytest: tests are nodeids, replicas are handles from
``replica.py`` made by the ``launch`` callable the controller passes in.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import final

from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.replica import Replica, ReplicaState


@final
@dataclass
class EnvironmentStats:
    """What the environment did, for the terminal summary and the JSON report."""

    started: int = 0
    start_failures: int = 0
    retired: Counter[str] = field(default_factory=Counter)
    tests_cold: int = 0
    tests_warm: int = 0
    setup_seconds: list[float] = field(default_factory=list)
    peak_busy: int = 0

    @property
    def mean_setup_seconds(self) -> float:
        return sum(self.setup_seconds) / len(self.setup_seconds) if self.setup_seconds else 0.0

    @property
    def saved_seconds(self) -> float:
        """Setup time a fresh process per test would have paid on the tests that ran warm."""
        return self.mean_setup_seconds * self.tests_warm


@final
class Environment:
    """The queue and the replicas of one ``ReusePolicy``."""

    def __init__(
        self,
        name: str,
        policy: ReusePolicy,
        launch: Callable[[Environment], Replica],
        *,
        max_restarts: int,
        closing: bool,
        serial: bool = False,
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self.queue: deque[str] = deque()
        self.replicas: list[Replica] = []
        self.restarts = 0
        self.stopped = False  # -x, a crash loop, or the end of the run: start nothing more
        self.stats = EnvironmentStats()
        self.last_start_failure: str | None = None

    def __repr__(self) -> str:
        return f"<Environment {self.name} queued={len(self.queue)} replicas={self.replicas}>"

    # -- capacity ----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Tests a replica holds at once: enough that it always knows the next one."""
        return self.policy.concurrency + 2

    @property
    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive and not r.shutdown_sent]

    @property
    def in_flight(self) -> int:
        return sum(len(r.in_flight) for r in self.replicas if r.state is not ReplicaState.DEAD)

    @property
    def done(self) -> bool:
        return not self.queue and self.in_flight == 0

    @property
    def ever_ready(self) -> bool:
        return bool(self.stats.setup_seconds)

    # -- work --------------------------------------------------------------------------------

    def submit(self, nodeids: Iterable[str]) -> None:
        self.queue.extend(nodeids)
        self.pump()

    def pump(self) -> None:
        """Start replicas the backlog needs, then hand out work; call after every event."""
        if self.stopped:
            return
        self._scale_up()
        self._feed()

    @property
    def max_replicas(self) -> int:
        return 1 if self.serial else self.policy.max_replicas

    def _scale_up(self) -> None:
        backlog = len(self.queue) + self.in_flight
        wanted = min(self.max_replicas,
                     max(self.policy.min_replicas, math.ceil(backlog / self.policy.concurrency)))
        while len(self.live) < wanted and self.queue:
            self._start_replica()

    def _start_replica(self) -> None:
        self.replicas.append(self._launch(self))
        self.stats.started += 1

    def warm_up(self, count: int) -> None:
        """Start replicas before any work arrives, so the first test finds one ready."""
        while len(self.live) < min(count, self.max_replicas):
            self._start_replica()

    def _feed(self) -> None:
        for replica in sorted(self.live, key=lambda r: len(r.in_flight)):
            if not replica.accepting:
                continue
            room = self.depth - len(replica.in_flight)
            if room > 0 and self.queue:
                batch = [self.queue.popleft() for _ in range(min(room, len(self.queue)))]
                replica.run(batch)
        if not self.queue:
            for replica in self.live:
                if not replica.accepting:
                    continue
                if self.closing:
                    replica.request_shutdown()
                elif replica.in_flight:
                    replica.drain()
        busy = sum(1 for r in self.replicas if r.alive and r.in_flight)
        self.stats.peak_busy = max(self.stats.peak_busy, busy)

    def cancel(self) -> list[str]:
        """Stop handing out work (``-x``): returns the nodeids that will not run."""
        self.stopped = True
        dropped = list(self.queue)
        self.queue.clear()
        for replica in self.replicas:
            if replica.alive:
                dropped.extend(replica.cancel())
        return dropped

    # -- events ------------------------------------------------------------------------------

    def replica_ready(self, replica: Replica) -> list[str]:
        """A replica collected; returns nodeids it holds that it did not collect."""
        if replica.setup_seconds is not None:
            self.stats.setup_seconds.append(replica.setup_seconds)
        missing = [n for n in self.queue if n not in replica.nodeids]
        if missing:
            # The replica's collection differs from the controller's: those tests cannot run.
            self.queue = deque(n for n in self.queue if n in replica.nodeids)
        return missing

    def test_finished(self, replica: Replica, nodeid: str, warm: bool) -> None:
        replica.test_finished(nodeid)
        if warm:
            self.stats.tests_warm += 1
        else:
            self.stats.tests_cold += 1

    def replica_gone(self, replica: Replica, *, started: bool) -> list[str]:
        """A replica's channel closed unasked. Returns the nodeids it held that must be requeued
        (the one it was running is the controller's to report). Decides on a replacement."""
        replica.mark_dead()
        held = [n for n in replica.in_flight if n != replica.current]
        replica.in_flight.clear()
        if started:
            self.stats.retired["crash"] += 1
        else:
            self.stats.start_failures += 1
        self.restarts += 1
        self.queue.extendleft(reversed(held))
        return held

    @property
    def crash_loop(self) -> bool:
        return self.restarts > self.max_restarts

    def give_up(self) -> list[str]:
        """No replica can serve this environment: returns every test that will not run."""
        self.stopped = True
        lost = list(self.queue)
        self.queue.clear()
        return lost

    def shutdown(self) -> None:
        """End of the run: ask every live replica to finish and exit."""
        self.stopped = True
        for replica in self.replicas:
            if replica.alive:
                replica.request_shutdown()

    def replica_retired(self, replica: Replica, reason: str) -> None:
        replica.mark_dead()
        self.stats.retired[reason] += 1
