"""Progress lines: what the run is waiting for, said while it waits.

A replica still starting after ``SLOW_START_SECONDS`` (a session fixture waiting on a port that
another process holds, a slow import) is named on the terminal with the last line of its log,
then again every ``REPEAT_SECONDS`` while it still starts, so a run is never silent for the
whole ``reuse_start_timeout``. These are progress lines, not errors: the start may yet succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, final

from pytest_reuse_env.controller.replica import Replica, ReplicaState

#: How long a replica may take to start before the run says so.
SLOW_START_SECONDS: Final = 5.0
#: How often it says so again while the replica still starts.
REPEAT_SECONDS: Final = 30.0


@final
class SlowStarts:
    """Names replicas that take long to start, once per ``REPEAT_SECONDS`` each."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        #: When each slow replica was last named (the controller's clock).
        self._named_at: dict[int, float] = {}

    def check(self, replicas: Iterable[Replica], now: float) -> None:
        for replica in replicas:
            if replica.state is not ReplicaState.STARTING:
                self._named_at.pop(id(replica), None)
                continue
            waited = now - replica.asked_at
            last = self._named_at.get(id(replica))
            if waited < SLOW_START_SECONDS or (last is not None and now - last < REPEAT_SECONDS):
                continue
            self._named_at[id(replica)] = now
            self._write(starting_line(replica, waited))


def starting_line(replica: Replica, waited: float) -> str:
    tail = replica.log_tail(lines=1).strip().splitlines()
    said = f"its log's last line: {tail[-1].strip()}" if tail else "nothing in its log yet"
    return (
        f"reuse: replica {replica.id} (pid {replica.pid}) still starting after {waited:.0f} s; "
        f"{said} ({replica.log_path})"
    )
