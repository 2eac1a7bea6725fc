"""A run's access to the registry: any problem means one warning (path and fix) and no registry
for the rest of the run; ``--reuse=off``'s note about warm replicas; ``--reuse-stop`` closes
what it opens.

Fakes stand in for the registry where a fault is the point (this suite runs as root, which
permission bits do not stop): an opener that raises, a registry whose probe fails.
"""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.channel import Listener
from pytest_reuse_env.controller.commands import stop_all, stop_replica
from pytest_reuse_env.controller.registry_access import RegistryAccess, describe_problem
from pytest_reuse_env.registry import (
    Registry,
    RegistryBusy,
    RegistryError,
    ReplicaRecord,
    process_start,
)
from pytest_reuse_env.warm import warm_replicas_note


class FakeRegistry:
    """Stands in for Registry: its probe raises ``problem`` if one is given."""

    def __init__(self, problem: Exception | None = None) -> None:
        self.problem = problem
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        if self.problem is not None:
            raise self.problem


def access_with(registry: FakeRegistry | Exception) -> tuple[RegistryAccess, list[Path]]:
    opened: list[Path] = []

    def opener(directory: Path) -> Any:
        opened.append(directory)
        if isinstance(registry, Exception):
            raise registry
        return registry

    return RegistryAccess(lambda: Path("/project/.pytest_cache/reuse"), opener=opener), opened


def test_a_working_registry_is_opened_and_probed_once() -> None:
    fake = FakeRegistry()
    access, opened = access_with(fake)
    assert access.registry is cast(Registry, fake)
    assert access.registry is cast(Registry, fake)
    assert (opened, fake.probes) == ([Path("/project/.pytest_cache/reuse")], 1)
    assert access.problem is None
    assert access.take_warning() is None


@pytest.mark.parametrize(
    "problem",
    [
        RegistryError("refusing to use /p/reuse: it is not a directory (or is a symlink); fix: x"),
        RegistryBusy("registry lock held for more than 3 s by another process: /p/lock; fix: y"),
    ],
)
def test_a_registry_that_cannot_open_is_one_warning(problem: RegistryError) -> None:
    access, opened = access_with(problem)
    assert access.registry is None
    assert access.registry is None
    assert len(opened) == 1, "a broken registry is not retried within the run"
    warning = access.take_warning()
    assert warning == (
        f"scope=global is unavailable in this run, so its replicas end with the run: {problem}"
    )
    assert access.take_warning() is None


def test_a_failing_probe_is_a_fallback() -> None:
    access, _ = access_with(FakeRegistry(RegistryError("cannot read /p/registry.json: x")))
    assert access.registry is None
    assert access.problem == "cannot read /p/registry.json: x"


def test_a_problem_met_mid_run_gives_the_registry_up_with_the_first_reason() -> None:
    fake = FakeRegistry()
    access, _ = access_with(fake)
    assert access.registry is cast(Registry, fake)
    # The log file of a new replica could not be created (disk full), then a lock timed out.
    access.give_up(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/p/reuse/logs/g-1.log"))
    access.give_up(RegistryBusy("busy"))
    assert access.registry is None
    warning = access.take_warning()
    assert warning is not None
    assert "cannot use /p/reuse/logs/g-1.log: No space left on device" in warning
    assert "fix: free some space on that file system" in warning
    assert access.take_warning() is None


def test_describe_problem_names_path_and_fix() -> None:
    error = OSError(errno.EROFS, os.strerror(errno.EROFS), "/p/reuse/registry.json")
    text = describe_problem(error)
    assert text.startswith("cannot use /p/reuse/registry.json: Read-only file system; fix: ")
    assert "cache_dir" in text


def test_a_real_registry_with_a_directory_for_records_falls_back(tmp_path: Path) -> None:
    directory = tmp_path / "reuse"
    Registry(directory)
    (directory / "registry.json").mkdir()
    access = RegistryAccess(lambda: directory)
    assert access.registry is None
    assert access.problem is not None
    assert str(directory / "registry.json") in access.problem
    assert "fix: remove" in access.problem


# -- --reuse=off: a word about warm replicas ---------------------------------------------------


def record(replica_id: str, pid: int, started: float) -> ReplicaRecord:
    return ReplicaRecord(
        replica_id=replica_id,
        environment="e",
        policy="p",
        fingerprint={},
        pid=pid,
        socket="/nonexistent",
        log="/nonexistent",
        state="idle",
        lease_owner=None,
        lease_owner_started=None,
        started_at=0.0,
        last_used=0.0,
        tests_served=0,
        process_started=started,
    )


def test_warm_replicas_note(tmp_path: Path) -> None:
    directory = tmp_path / "reuse"
    assert warm_replicas_note(directory) is None  # no registry at all
    registry = Registry(directory)
    registry.records()
    assert warm_replicas_note(directory) is None  # an empty one
    me = os.getpid()
    started = process_start(me)
    assert started is not None
    registry.add(record("g-00000001", me, started))
    registry.add(record("g-00000002", me, started - 100))  # pid reused: gone
    note = warm_replicas_note(directory)
    assert note == (
        f"reuse: off for this run, but 1 warm replica of this project is still running "
        f"(pid {me}) and may hold resources such as ports or files; stop it with: "
        "pytest --reuse-stop"
    )
    (directory / "registry.json").write_text("{garbage")
    assert warm_replicas_note(directory) is None


# -- --reuse-stop closes what it opens ---------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="st", dir="/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_stopping_a_replica_leaves_no_socket_open(short_dir: Path) -> None:
    registry = Registry(short_dir / "reuse")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start(sleeper.pid)
        assert started is not None
        replica = record("g-00000003", sleeper.pid, started)
        replica = ReplicaRecord.from_json(
            {**replica.to_json(), "socket": registry.socket_path("g-00000003")}
        )
        registry.add(replica)
        listener = Listener(replica.socket, registry.token())
        received: list[Any] = []

        def serve() -> None:
            channel = listener.accept(timeout=5.0)
            assert channel is not None
            received.append(channel.receive(timeout=5.0))
            sleeper.kill()  # "finalizers ran": the replica exits on SHUTDOWN
            channel.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = stop_replica(registry, replica, wait=5.0)
            gc.collect()
        thread.join(10.0)
        listener.close()
        assert received == [(protocol.SHUTDOWN, None)]
        assert line == f"stopped g-00000003 (pid {sleeper.pid}); its finalizers ran"
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert registry.records() == []
    finally:
        sleeper.kill()
        sleeper.wait(10.0)


def test_stop_all_with_an_unreadable_registry_raises_registry_error(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reuse")
    (tmp_path / "reuse" / "registry.json").mkdir()
    with pytest.raises(RegistryError, match=r"registry\.json"):
        stop_all(registry)
