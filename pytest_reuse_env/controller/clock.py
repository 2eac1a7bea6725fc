"""The one clock the controller's decisions read: ``Environment``, the replica handles' times
and the scaling rules all get ``now`` from it, so a fake clock in a test drives them all."""

from __future__ import annotations

import time
from typing import Final, Protocol, final


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...


@final
class SystemClock:
    """``time.monotonic``: the clock of every real run."""

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Final = SystemClock()
