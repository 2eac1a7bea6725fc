"""One warm replica as the registry stores it, and whether its process still runs.

This module does not import pytest and imports nothing from the package.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, final, get_args

if TYPE_CHECKING:
    import psutil

#: What the registry records of a detached replica's lease (not the controller's
#: ``ReplicaState`` of its handle, nor ``scaling.ReplicaPhase``).
RecordState: TypeAlias = Literal["starting", "idle", "leased", "retiring"]
_STATES: Final[frozenset[str]] = frozenset(get_args(RecordState))

#: Two start times of one process, read at different moments, differ by a rounding at most
#: (Linux: none; elsewhere the boot time's microseconds). A process that reused the pid started
#: after the first one ended, and pids come round again only after the system has handed out
#: all the others: far more than half a second later.
START_TOLERANCE: Final[float] = 0.5

#: The clock of every time the registry compares across processes: seconds since the machine
#: booted (Linux's CLOCK_BOOTTIME, which counts suspended time; elsewhere the system-wide
#: monotonic clock). Not the wall clock: NTP, or a virtual machine resumed from a snapshot,
#: steps it by seconds or minutes, and a step made live replicas look dead and idle ones
#: look past their TTL.
_MACHINE_CLOCK: Final[int] = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)

REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def new_replica_id() -> str:
    """A fresh replica id: ``g-`` and 8 random hex digits."""
    return f"g-{secrets.token_hex(4)}"


@final
@dataclass(frozen=True)
class ReplicaRecord:
    """One replica that outlives runs, as the registry stores it.

    Every time is on :func:`machine_clock` (seconds since boot), the one clock that every
    process on the machine reads alike and nothing steps. ``process_started`` and
    ``lease_owner_started`` are when those processes started (:func:`process_start`), kept to
    tell a live process from another one that reused its pid.
    """

    replica_id: str
    #: Environment key (a hash of the policy and the fingerprint): opaque here.
    environment: str
    #: The policy in human form, for ``--reuse-status``.
    policy: str
    #: The fingerprint components, for ``--reuse-status``: opaque here.
    fingerprint: dict[str, str] = field(hash=False)
    pid: int
    socket: str
    log: str
    state: RecordState
    #: Pid of the pytest process holding the lease, None unless ``state == "leased"``.
    lease_owner: int | None
    lease_owner_started: float | None
    started_at: float
    #: When the last test finished or the lease was released.
    last_used: float
    tests_served: int
    process_started: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ReplicaRecord:
        """Check the shape of ``data`` strictly; raise ValueError naming the first problem."""
        if not isinstance(data, dict):
            raise ValueError(f"a record must be an object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) != names:
            missing, extra = sorted(names - set(data)), sorted(set(data) - names)
            raise ValueError(f"record fields differ: missing {missing}, unexpected {extra}")
        _check_type(data, "replica_id", str)
        if not REPLICA_ID.fullmatch(data["replica_id"]):
            raise ValueError(f"bad replica id {data['replica_id']!r}")
        for name in ("environment", "policy", "socket", "log", "state"):
            _check_type(data, name, str)
        if data["state"] not in _STATES:
            raise ValueError(f"unknown state {data['state']!r}")
        fingerprint = data["fingerprint"]
        if not isinstance(fingerprint, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in fingerprint.items()
        ):
            raise ValueError("fingerprint must map strings to strings")
        for name in ("pid", "tests_served"):
            _check_type(data, name, int)
        for name in ("started_at", "last_used", "process_started"):
            _check_type(data, name, float)
        if data["lease_owner"] is not None:
            _check_type(data, "lease_owner", int)
        if data["lease_owner_started"] is not None:
            _check_type(data, "lease_owner_started", float)
        values = dict(data)
        for name in ("started_at", "last_used", "process_started", "lease_owner_started"):
            if values[name] is not None:
                values[name] = float(values[name])
        values["fingerprint"] = dict(fingerprint)
        return cls(**values)


def _check_type(data: dict[str, Any], name: str, kind: type) -> None:
    value = data[name]
    # bool is an int subclass; a float field accepts ints (JSON writes 2.0 as 2.0, but be lenient).
    ok = not isinstance(value, bool) and (
        isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    )
    if not ok:
        raise ValueError(f"field {name} must be {kind.__name__}, got {value!r}")


def machine_clock() -> float:
    """Now on the registry's clock: seconds since the machine booted."""
    return time.clock_gettime(_MACHINE_CLOCK)


def _started(process: psutil.Process) -> float:
    # psutil's create time is a start measured from boot, plus the boot time as the wall clock
    # puts it now (Linux: /proc/<pid>/stat's start tick plus /proc/stat's btime, read at each
    # call): take the boot time off again and what is left does not move when the clock does.
    # The boot time is read before and after: equal, the create time added that one too.
    import psutil

    for _ in range(3):
        booted = psutil.boot_time()
        created = process.create_time()
        if psutil.boot_time() == booted:
            break
        process = psutil.Process(process.pid)  # its create time is cached: read it again
    return created - booted


def process_start(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since boot, or None if there is no such
    process."""
    import psutil  # where it is used: a run-scoped run never needs it

    try:
        return _started(psutil.Process(pid))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def process_gone(pid: int, started: float | None) -> str | None:
    """Why process ``pid`` (started at ``started``, seconds since boot) no longer runs, or None
    if it does."""
    import psutil  # where it is used: a run-scoped run never needs it

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return f"process {pid} has exited (zombie)"
        now_started = _started(process)
    except psutil.NoSuchProcess:
        return f"process {pid} is gone"
    except psutil.AccessDenied:
        # Someone else's process: ours would be readable.
        return f"process {pid} is gone (pid now used by another user's process)"
    if started is not None and abs(now_started - started) > START_TOLERANCE:
        return (
            f"process {pid} is gone (pid reused by a process started {now_started:.2f} s "
            f"after boot, not {started:.2f} s)"
        )
    return None
