"""The registry of warm replicas that outlive a pytest run (``scope="global"``).

A registry is one private directory, normally ``<project cache dir>/reuse/``::

    reuse/                 0700, owned by the user; anything looser is refused
        registry.json      the records, rewritten whole (temp file + os.replace, mode 0600)
        registry.lock      a filelock.FileLock held for every read-modify-write
        token              32 random bytes as hex (mode 0600): the replicas' shared secret
        sockets/           0700: each replica's Unix socket
        logs/              each replica's log file

Rules:

- Every read-modify-write happens in :meth:`Registry.transaction`, under the file lock with a
  bounded wait (``lock_timeout``). The lock is an OS lock (flock): it dies with its holder, so a
  killed process never leaves the registry locked.
- Each transaction first prunes: records whose process is gone (no such pid, a zombie, or a pid
  reused by a process that started at another time) are removed along with their socket file, and a
  lease whose owner is gone the same way is freed (back to ``idle``; the replica itself abandons
  a dead client's work, the registry only frees the lease).
- A ``starting`` record carries the pid and start time of the process *starting* the replica
  until the replica registers with ``update(pid=..., process_started=..., state="idle")``: if the
  starter dies first, prune drops the reservation.
- A corrupt ``registry.json`` (truncated, not JSON, wrong shape) is moved aside to
  ``registry.json.corrupt-<timestamp>`` and the registry starts empty; the message is kept in
  :attr:`Registry.last_recovery`. Corruption never raises. The replicas it listed are not
  reachable through the registry any more and end on their own idle timeout.
- A document an earlier version of the plugin wrote (``version`` below this one's) is read as
  empty and replaced at the next change, without a note: its replicas find their records gone
  at their next idle check and end.
- An unusable directory (looser permissions, another owner, not writable, disk full, a file
  where a directory belongs) raises :class:`RegistryError` naming the path, the problem and the
  fix, so the caller can fall back to ``scope="run"``; a lock held longer than ``lock_timeout``
  (a few seconds) raises :class:`RegistryBusy`: "run without the registry this time".
- Every directory it creates is 0700, whoever creates it. One of ours that is merely readable
  by others (created by something that honoured the umask) is tightened to 0700; one that others
  may write to, or owned by someone else, is refused. A registry opened with ``create=False``
  (inside a replica) never re-creates a directory that was removed: the registry is gone.
- Sockets whose path would be too long live under ``$TMPDIR/pytest-reuse-<uid>/``, used only if
  it is ours and 0700; if another user created that name first, a fresh ``mkdtemp`` directory is
  used instead (anyone may create names in ``/tmp`` first).

This module does not import pytest; it imports only ``registry_files`` (private directories, errors)
and ``record`` (the records) from the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

from pytest_reuse_env.record import (
    REPLICA_ID,
    RecordState,
    ReplicaRecord,
    machine_clock,
    new_replica_id,
    process_gone,
    process_start,
)
from pytest_reuse_env.registry_files import (
    RegistryBusy,
    RegistryError,
    check_private,
    os_error,
    private_directory,
    registry_error,
)

if TYPE_CHECKING:
    import filelock

__all__ = [
    "LOCK_WAIT_SECONDS",
    "MAX_SOCKET_PATH_BYTES",
    "RecordState",
    "Registry",
    "RegistryBusy",
    "RegistryError",
    "ReplicaRecord",
    "live_pids",
    "machine_clock",
    "new_replica_id",
    "process_gone",
    "process_start",
    "registry_error",
]

#: Usable bytes of ``sockaddr_un.sun_path`` (its size minus the terminating NUL).
MAX_SOCKET_PATH_BYTES: Final[int] = 103 if sys.platform == "darwin" else 107

#: How long a transaction waits for the lock: a transaction takes milliseconds, so a lock busy
#: for longer is held by something else (a stuck process, a hand-held lock) and the caller runs
#: without the registry this time rather than wait.
LOCK_WAIT_SECONDS: Final[float] = 3.0

#: 2: times on the machine clock (``record.machine_clock``), ``process_started``.
_FORMAT_VERSION: Final[int] = 2
_TOKEN = re.compile(r"[0-9a-f]{64}")


class _OlderFormat(ValueError):
    """registry.json as an earlier version of the plugin wrote it."""


@final
class Registry:
    """Records of replicas that outlive runs, shared by every pytest run of one project.

    Construction creates and checks the directory (raising :class:`RegistryError` if it cannot
    be used); every method takes the lock itself. Thread-safe; transactions do not nest.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = machine_clock,
        wall_clock: Callable[[], float] = time.time,
        lock_timeout: float = LOCK_WAIT_SECONDS,
        create: bool = True,
    ) -> None:
        self.directory = Path(os.path.abspath(directory))
        self.records_path = self.directory / "registry.json"
        self.lock_path = self.directory / "registry.lock"
        self.token_path = self.directory / "token"
        self.sockets_directory = self.directory / "sockets"
        self.logs_directory = self.directory / "logs"
        self._clock = clock
        #: For the names of set-aside files only: nothing compares it across processes.
        self._wall_clock = wall_clock
        self._lock_timeout = lock_timeout
        #: Whether a removed directory is re-created (a run) or means the registry is gone (a
        #: replica: it must not bring back a directory the user deleted, with another mode).
        self._create = create
        #: What the last recovery from a corrupt registry.json did, for the caller to show.
        self.last_recovery: str | None = None
        #: What the most recent transaction's prune cleaned.
        self.last_pruned: tuple[str, ...] = ()
        self._token: str | None = None
        self._fallback: Path | None = None
        self._local = threading.local()
        self._ensure_directories()
        # Imported here, not with the module: a run-scoped run imports this module (the
        # launcher's types) but never opens a registry, and filelock costs it about 10 ms.
        import filelock

        self._lock: filelock.FileLock = filelock.FileLock(
            self.lock_path, timeout=lock_timeout, mode=0o600
        )
        self._lock_timeout_error: type[Exception] = filelock.Timeout

    def _ensure_directories(self) -> None:
        for path in (self.directory, self.sockets_directory, self.logs_directory):
            private_directory(path, create=self._create)

    # -- locking and storage ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if getattr(self._local, "held", False):
            raise RuntimeError("registry transactions do not nest")
        # Checked every time: filelock would re-create a removed directory with the umask's mode.
        self._ensure_directories()
        try:
            self._lock.acquire()
        except self._lock_timeout_error:
            raise RegistryBusy(
                f"registry lock held for more than {self._lock_timeout:g} s by another "
                f"process: {self.lock_path}; fix: nothing if another pytest run is busy with "
                f"it, else find the holder with: fuser {self.lock_path}"
            ) from None
        except OSError as error:
            raise os_error(self.lock_path, "lock", error) from None
        self._local.held = True
        try:
            yield
        finally:
            self._local.held = False
            self._lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, ReplicaRecord]]:
        """Yield the records by id, pruned, under the lock; write them back if the block succeeds.

        The file is rewritten only when the records differ from what was read.
        """
        with self._locked():
            stored = self._read()
            records = dict(stored)
            self.last_pruned = tuple(self._prune(records))
            yield records
            if records != stored or not self.records_path.exists():
                self._write(records)

    def _read(self) -> dict[str, ReplicaRecord]:
        try:
            data = self.records_path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise os_error(self.records_path, "read", error) from None
        try:
            return self._parse(data)
        except _OlderFormat:
            return {}
        except (ValueError, UnicodeDecodeError) as problem:
            self._set_aside(problem)
            return {}

    @staticmethod
    def _parse(data: bytes) -> dict[str, ReplicaRecord]:
        document = json.loads(data.decode("utf-8"))
        version = document.get("version") if isinstance(document, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version < _FORMAT_VERSION:
            raise _OlderFormat(version)
        if not isinstance(document, dict) or version != _FORMAT_VERSION:
            raise ValueError(f"not a version {_FORMAT_VERSION} registry document")
        replicas = document.get("replicas")
        if not isinstance(replicas, list):
            raise ValueError("'replicas' must be a list")
        records: dict[str, ReplicaRecord] = {}
        for item in replicas:
            record = ReplicaRecord.from_json(item)
            if record.replica_id in records:
                raise ValueError(f"replica id {record.replica_id} appears twice")
            records[record.replica_id] = record
        return records

    def _set_aside(self, problem: Exception) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self._wall_clock()))
        target = self.records_path.with_name(f"{self.records_path.name}.corrupt-{stamp}")
        suffix = 1
        while target.exists():
            target = self.records_path.with_name(
                f"{self.records_path.name}.corrupt-{stamp}-{suffix}"
            )
            suffix += 1
        try:
            os.replace(self.records_path, target)
        except OSError as error:
            raise os_error(self.records_path, "move aside the corrupt", error) from None
        self.last_recovery = (
            f"the replica registry {self.records_path} was unreadable ({problem}); moved it to "
            f"{target.name} and started empty: replicas it listed will not be reused and stop "
            "on their idle timeout"
        )

    def set_aside(self) -> list[Path]:
        """The unreadable registry files moved aside so far (kept for a post-mortem)."""
        return sorted(self.records_path.parent.glob(f"{self.records_path.name}.corrupt-*"))

    def _write(self, records: dict[str, ReplicaRecord]) -> None:
        document = {
            "version": _FORMAT_VERSION,
            "replicas": [record.to_json() for record in records.values()],
        }
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        try:
            handle, temporary = tempfile.mkstemp(
                dir=self.directory, prefix=".registry-", suffix=".tmp"
            )
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                os.replace(temporary, self.records_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as error:
            raise os_error(self.records_path, "write", error) from None

    # -- liveness -------------------------------------------------------------------------------

    def _prune(self, records: dict[str, ReplicaRecord]) -> list[str]:
        cleaned = []
        for replica_id, record in list(records.items()):
            reason = process_gone(record.pid, record.process_started)
            if reason is not None:
                del records[replica_id]
                self._unlink_socket(record.socket)
                cleaned.append(f"removed record of replica {replica_id}: {reason}")
                continue
            if record.state == "leased" and record.lease_owner is not None:
                reason = process_gone(record.lease_owner, record.lease_owner_started)
                if reason is not None:
                    records[replica_id] = dataclasses.replace(
                        record, state="idle", lease_owner=None, lease_owner_started=None
                    )
                    cleaned.append(f"freed the lease on replica {replica_id}: its holder {reason}")
        return cleaned

    def _unlink_socket(self, socket: str) -> None:
        # Only inside our own socket directories: the path comes from a file on disk.
        path = Path(socket)
        if not self.own_socket_directory(path.parent):
            return
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            path.unlink()

    def own_socket_directory(self, directory: Path) -> bool:
        """Whether ``directory`` is one this registry puts sockets in (``sockets/`` or one
        of its fallbacks under $TMPDIR), private and ours."""
        if directory == self.sockets_directory:
            return True
        base = f"pytest-reuse-{os.geteuid()}"
        parent = directory.parent.name
        if directory.name != self._digest() or not (
            parent == base or parent.startswith(f"{base}-")
        ):
            return False
        try:
            check_private(directory, os.lstat(directory), 0o700, "directory")
            check_private(directory.parent, os.lstat(directory.parent), 0o700, "directory")
        except (OSError, RegistryError):
            return False
        return True

    # -- public operations ----------------------------------------------------------------------

    def probe(self) -> None:
        """Check, once before a run relies on it, that every part of the registry works:
        the lock, reading (and if needed writing) the records, the token, and creating files
        in the directory and in ``logs/``. Raises RegistryError naming what does not."""
        self.records()
        self.token()
        for directory in (self.directory, self.logs_directory):
            try:
                handle, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
                os.close(handle)
                os.unlink(probe)
            except OSError as error:
                raise os_error(directory, "create files in", error) from None

    def records(self) -> list[ReplicaRecord]:
        """Every record of a live replica, oldest first."""
        with self.transaction() as records:
            return sorted(records.values(), key=lambda record: record.started_at)

    def prune(self) -> list[str]:
        """Clean what dead processes left; return one sentence per thing cleaned."""
        with self.transaction():
            return list(self.last_pruned)

    def add(self, record: ReplicaRecord) -> None:
        """Add ``record``; RegistryError if its id is taken."""
        ReplicaRecord.from_json(record.to_json())
        with self.transaction() as records:
            if record.replica_id in records:
                raise RegistryError(f"replica id {record.replica_id} is already registered")
            records[record.replica_id] = record

    def remove(self, replica_id: str) -> ReplicaRecord | None:
        """Drop the record (and its socket file if the process is gone); return it if it existed."""
        with self.transaction() as records:
            record = records.pop(replica_id, None)
        if record is not None and process_gone(record.pid, record.process_started) is not None:
            self._unlink_socket(record.socket)
        return record

    def update(self, replica_id: str, /, **changes: Any) -> ReplicaRecord | None:
        """Replace fields of one record; return the new record, None if it is gone."""
        if "replica_id" in changes:
            raise ValueError("a replica's id cannot change")
        with self.transaction() as records:
            record = records.get(replica_id)
            if record is None:
                return None
            updated = ReplicaRecord.from_json(dataclasses.replace(record, **changes).to_json())
            records[replica_id] = updated
            return updated

    def count(self, environment: str) -> int:
        """Live replicas of ``environment`` that are starting, idle or leased (not retiring)."""
        with self.transaction() as records:
            return _count(records, environment)

    def reserve(self, environment: str, max_replicas: int, record: ReplicaRecord) -> bool:
        """Add a ``starting`` record only if fewer than ``max_replicas`` count; atomically."""
        if record.state != "starting" or record.environment != environment:
            raise ValueError("reserve() takes a 'starting' record of that environment")
        ReplicaRecord.from_json(record.to_json())
        with self.transaction() as records:
            if record.replica_id in records:
                raise RegistryError(f"replica id {record.replica_id} is already registered")
            if _count(records, environment) >= max_replicas:
                return False
            records[record.replica_id] = record
            return True

    def lease(self, environment: str, owner_pid: int) -> ReplicaRecord | None:
        """Lease the most recently used idle replica of ``environment`` to ``owner_pid``."""
        owner_started = process_start(owner_pid)
        if owner_started is None:
            raise RegistryError(f"cannot lease a replica to process {owner_pid}: it is not running")
        with self.transaction() as records:
            idle = [
                record
                for record in records.values()
                if record.environment == environment and record.state == "idle"
            ]
            if not idle:
                return None
            chosen = max(idle, key=lambda record: (record.last_used, record.started_at))
            leased = dataclasses.replace(
                chosen, state="leased", lease_owner=owner_pid, lease_owner_started=owner_started
            )
            records[chosen.replica_id] = leased
            return leased

    def release(self, replica_id: str, *, tests_served_delta: int) -> ReplicaRecord | None:
        """End the lease: idle again (unless retiring), ``last_used`` = now; None if it is gone."""
        with self.transaction() as records:
            record = records.get(replica_id)
            if record is None:
                return None
            released = dataclasses.replace(
                record,
                state="idle" if record.state == "leased" else record.state,
                lease_owner=None,
                lease_owner_started=None,
                last_used=self._clock(),
                tests_served=record.tests_served + tests_served_delta,
            )
            records[replica_id] = released
            return released

    # -- files of one replica -------------------------------------------------------------------

    def socket_path(self, replica_id: str) -> str:
        """Where the replica listens: ``sockets/<id>.sock``, or under /tmp if that is too long."""
        name = f"{_checked_id(replica_id)}.sock"
        path = os.path.join(self.sockets_directory, name)
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
            return path
        fallback = self._fallback_socket_directory()
        path = os.path.join(fallback, name)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
            raise RegistryError(
                f"no socket path short enough for replica {replica_id}: {path} is longer than "
                f"{MAX_SOCKET_PATH_BYTES} bytes; fix: set TMPDIR to a shorter directory"
            )
        return path

    def _digest(self) -> str:
        return hashlib.blake2b(os.fsencode(self.directory), digest_size=6).hexdigest()

    def _fallback_socket_directory(self) -> Path:
        """``$TMPDIR/pytest-reuse-<uid>/<digest>``, created 0700; if that name is another
        user's (or not private), the first private ``pytest-reuse-<uid>-*`` of ours, else a
        new one: nobody else can block or watch our sockets by creating a name first."""
        if self._fallback is None:
            tmp = tempfile.gettempdir()
            base = Path(tmp) / f"pytest-reuse-{os.geteuid()}"
            candidates = [base, *sorted(Path(p) for p in glob.glob(f"{glob.escape(str(base))}-*"))]
            chosen = None
            for candidate in candidates:
                try:
                    private_directory(candidate, create=candidate == base)
                except RegistryError:
                    continue
                chosen = candidate
                break
            if chosen is None:
                try:
                    chosen = Path(tempfile.mkdtemp(prefix=f"{base.name}-", dir=tmp))
                except OSError as error:
                    raise os_error(tmp, "create a socket directory in", error) from None
            fallback = chosen / self._digest()
            private_directory(fallback)
            self._fallback = fallback
        return self._fallback

    def log_path(self, replica_id: str) -> str:
        return os.path.join(self.logs_directory, f"{_checked_id(replica_id)}.log")

    def token(self) -> str:
        """The registry's secret (64 hex digits), created on first use, mode 0600."""
        if self._token is None:
            with self._locked():
                self._token = self._read_or_create_token()
        return self._token

    def _read_or_create_token(self) -> str:
        try:
            info = os.lstat(self.token_path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise os_error(self.token_path, "read", error) from None
        else:
            check_private(self.token_path, info, 0o600, "file")
            try:
                text = self.token_path.read_text("ascii").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise RegistryError(f"cannot read {self.token_path}: {error}") from None
            if _TOKEN.fullmatch(text):
                return text
            self.last_recovery = f"the registry token {self.token_path} was malformed: replaced"
        text = secrets.token_hex(32)
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".token-")
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.write(text + "\n")
            os.replace(temporary, self.token_path)
        except OSError as error:
            raise os_error(self.token_path, "write", error) from None
        return text


def live_pids(records_path: Path) -> list[int]:
    """The pids of the records in ``records_path`` whose process still runs, read without the
    lock and without pruning (a quick look for a run that does not use the registry); [] if the
    file is unreadable."""
    try:
        records = Registry._parse(records_path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    return sorted(
        record.pid
        for record in records.values()
        if process_gone(record.pid, record.process_started) is None
    )


def _count(records: dict[str, ReplicaRecord], environment: str) -> int:
    return sum(
        1
        for record in records.values()
        if record.environment == environment and record.state != "retiring"
    )


def _checked_id(replica_id: str) -> str:
    if not REPLICA_ID.fullmatch(replica_id):
        raise ValueError(f"bad replica id {replica_id!r}: letters, digits, '_', '.', '-' only")
    return replica_id
