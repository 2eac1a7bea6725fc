"""The registry of replicas that outlive runs: records, leases, liveness, locking, permissions.

Races run in real processes (``python -c`` children started together through a "go" file) and
in threads. Every child is ended by pid before its test returns (the ``children`` fixture).
This suite runs as root, which bypasses permission bits: "not writable" is tested with a path
below a regular file (ENOTDIR), since a chmod'ed read-only directory would not stop root.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import psutil
import pytest

from pytest_reuse_env import registry_files
from pytest_reuse_env.registry import (
    LOCK_WAIT_SECONDS,
    MAX_SOCKET_PATH_BYTES,
    RecordState,
    Registry,
    RegistryError,
    ReplicaRecord,
    new_replica_id,
    process_start,
)

REPO = Path(__file__).resolve().parents[2]
ME = os.getpid()


def start_of(pid: int) -> float:
    started = process_start(pid)
    assert started is not None, f"process {pid} runs"
    return started


ME_STARTED = start_of(ME)
CHILD_TIMEOUT = 30.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_record(
    replica_id: str = "g-00000001",
    *,
    environment: str = "env-a",
    state: RecordState = "idle",
    pid: int = ME,
    process_started: float = ME_STARTED,
    last_used: float = 0.0,
    started_at: float = 0.0,
    socket_path: str = "/nonexistent/socket",
) -> ReplicaRecord:
    return ReplicaRecord(
        replica_id=replica_id,
        environment=environment,
        policy="replicas=(1, 2)",
        fingerprint={"python": "x"},
        pid=pid,
        socket=socket_path,
        log="/nonexistent/log",
        state=state,
        lease_owner=None,
        lease_owner_started=None,
        started_at=started_at,
        last_used=last_used,
        tests_served=0,
        process_started=process_started,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "reuse"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(registry_dir: Path, clock: FakeClock) -> Registry:
    return Registry(registry_dir, clock=clock, wall_clock=clock)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed by pid and reaped afterwards, then checked gone."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=CHILD_TIMEOUT)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()
        assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() != (
            psutil.STATUS_ZOMBIE
        )


def spawn(children: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    children.append(child)
    return child


def expect_line(child: subprocess.Popen[str], expected: str) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != expected:
        child.kill()
        _, errors = child.communicate(timeout=CHILD_TIMEOUT)
        pytest.fail(f"child said {line!r}, expected {expected!r}; stderr:\n{errors}")


def race(
    children: list[subprocess.Popen[str]], tmp_path: Path, code: str, args: list[str], n: int
) -> list[object]:
    """Start ``n`` children, release them at once, return what each printed last (JSON)."""
    go = tmp_path / "go"
    racers = [spawn(children, code, str(go), *args) for _ in range(n)]
    for child in racers:
        expect_line(child, "ready")
    go.touch()
    results = []
    # Racers stay alive until every one has answered: a lease held by a dead process is freed.
    for child in racers:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            _, errors = child.communicate(timeout=CHILD_TIMEOUT)
            pytest.fail(f"racer {child.pid} said nothing; stderr:\n{errors}")
        results.append(json.loads(line))
    for child in racers:
        _, errors = child.communicate(timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, errors
    return results


BARRIER = """
import os, sys, time
from pathlib import Path
from pytest_reuse_env.registry import Registry, ReplicaRecord, new_replica_id
go = sys.argv[1]
registry = Registry(Path(sys.argv[2]))
print("ready", flush=True)
deadline = time.monotonic() + 20
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
"""

LEASE_RACER = (
    BARRIER
    + """
import json
record = registry.lease(sys.argv[3], os.getpid())
print(json.dumps(None if record is None else record.replica_id), flush=True)
sys.stdin.read()
"""
)

RESERVE_RACER = (
    BARRIER
    + """
import json
record = ReplicaRecord(
    replica_id=new_replica_id(), environment=sys.argv[3], policy="p", fingerprint={},
    pid=int(sys.argv[4]), socket="s", log="l", state="starting", lease_owner=None,
    lease_owner_started=None, started_at=0.0, last_used=0.0, tests_served=0,
    process_started=float(sys.argv[5]),
)
print(json.dumps(registry.reserve(sys.argv[3], 2, record)), flush=True)
sys.stdin.read()
"""
)

LOCK_HOLDER = """
import sys, time
from pathlib import Path
from pytest_reuse_env.registry import Registry
with Registry(Path(sys.argv[1])).transaction():
    print("locked", flush=True)
    time.sleep(60)
"""


# -- layout and permissions ------------------------------------------------------------------


def test_layout_is_private_despite_a_loose_umask(registry_dir: Path) -> None:
    previous = os.umask(0o022)
    try:
        registry = Registry(registry_dir)
        registry.records()
    finally:
        os.umask(previous)
    assert mode(registry_dir) == 0o700
    assert mode(registry_dir / "sockets") == 0o700
    assert mode(registry_dir / "logs") == 0o700
    assert mode(registry_dir / "registry.json") == 0o600
    assert (registry_dir / "registry.lock").exists()


def test_a_cache_directory_the_registry_creates_is_ignored_by_git_as_pytest_s(
    tmp_path: Path,
) -> None:
    """pytest adds .gitignore and CACHEDIR.TAG only to a cache directory it creates itself."""
    Registry(tmp_path / ".pytest_cache" / "reuse").records()
    cache = tmp_path / ".pytest_cache"
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172")


def test_an_existing_cache_directory_is_left_as_it_is(tmp_path: Path) -> None:
    cache = tmp_path / ".pytest_cache"
    cache.mkdir()
    Registry(cache / "reuse").records()
    assert sorted(p.name for p in cache.iterdir()) == ["reuse"]


def test_directory_writable_by_others_is_refused(registry_dir: Path) -> None:
    registry_dir.mkdir(parents=True)
    os.chmod(registry_dir, 0o775)
    with pytest.raises(RegistryError, match=r"its mode is 0775, it must be 0700") as info:
        Registry(registry_dir)
    assert str(registry_dir) in str(info.value)
    assert f"fix with: chmod 700 {registry_dir}" in str(info.value)


def test_own_directory_only_readable_by_others_is_tightened(registry_dir: Path) -> None:
    # What filelock or an old version leaves after the cache was removed: ours, 0755.
    (registry_dir / "logs").mkdir(parents=True)
    os.chmod(registry_dir, 0o755)
    os.chmod(registry_dir / "logs", 0o755)
    Registry(registry_dir).records()
    assert mode(registry_dir) == 0o700
    assert mode(registry_dir / "logs") == 0o700


def test_looser_sockets_directory_is_refused(registry_dir: Path) -> None:
    (registry_dir / "sockets").mkdir(parents=True)
    os.chmod(registry_dir, 0o700)
    os.chmod(registry_dir / "sockets", 0o770)
    with pytest.raises(RegistryError, match=r"sockets: its mode is 0770"):
        Registry(registry_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a directory's owner needs root")
def test_directory_of_another_owner_is_refused(registry_dir: Path) -> None:
    registry_dir.mkdir(parents=True, mode=0o700)
    os.chown(registry_dir, 65534, -1)
    with pytest.raises(RegistryError, match=r"owned by uid 65534, not by you"):
        Registry(registry_dir)


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(RegistryError, match=r"not a directory \(or is a symlink\)"):
        Registry(tmp_path / "link")


def test_unwritable_location_raises_registry_error(tmp_path: Path) -> None:
    # Root ignores permission bits, so a path below a regular file stands in for "not writable".
    (tmp_path / "file").write_text("")
    with pytest.raises(RegistryError, match=r"cannot create the registry directory .*: Not a dir"):
        Registry(tmp_path / "file" / "reuse")


def test_registry_path_that_is_a_file_is_refused(registry_dir: Path) -> None:
    registry_dir.parent.mkdir(parents=True)
    registry_dir.write_text("")
    with pytest.raises(RegistryError, match=r"it is not a directory"):
        Registry(registry_dir)


# -- records ---------------------------------------------------------------------------------


def test_records_persist_across_instances(registry: Registry, registry_dir: Path) -> None:
    record = make_record(started_at=5.0)
    registry.add(record)
    other = make_record("g-00000002", started_at=1.0)
    registry.add(other)
    assert Registry(registry_dir).records() == [other, record]


def test_add_refuses_a_taken_id(registry: Registry) -> None:
    registry.add(make_record())
    with pytest.raises(RegistryError, match="g-00000001 is already registered"):
        registry.add(make_record())


def test_update_and_remove(registry: Registry) -> None:
    registry.add(make_record(state="starting"))
    updated = registry.update("g-00000001", state="idle", tests_served=3)
    assert updated is not None
    assert (updated.state, updated.tests_served) == ("idle", 3)
    assert registry.records() == [updated]
    assert registry.remove("g-00000001") == updated
    assert registry.remove("g-00000001") is None
    assert registry.update("g-00000001", state="idle") is None
    assert registry.records() == []


def test_update_validates_the_new_record(registry: Registry) -> None:
    registry.add(make_record())
    with pytest.raises(ValueError, match="unknown state 'bogus'"):
        registry.update("g-00000001", state="bogus")
    with pytest.raises(ValueError, match="cannot change"):
        registry.update("g-00000001", replica_id="g-2")
    with pytest.raises(TypeError):
        registry.update("g-00000001", colour="blue")


def test_failed_transaction_writes_nothing(registry: Registry) -> None:
    registry.add(make_record())

    def abandon() -> None:
        with registry.transaction() as records:
            del records["g-00000001"]
            raise KeyError("abandon")

    with pytest.raises(KeyError):
        abandon()
    assert [record.replica_id for record in registry.records()] == ["g-00000001"]


def test_transactions_do_not_nest(registry: Registry) -> None:
    with (
        registry.transaction(),
        pytest.raises(RuntimeError, match="do not nest"),
        registry.transaction(),
    ):
        pass


def test_new_replica_id() -> None:
    ids = {new_replica_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(replica_id) == 10 and replica_id.startswith("g-") for replica_id in ids)


# -- leases ----------------------------------------------------------------------------------


def test_lease_prefers_the_most_recently_used(registry: Registry) -> None:
    registry.add(make_record("g-00000001", last_used=10.0))
    registry.add(make_record("g-00000002", last_used=30.0))
    registry.add(make_record("g-00000003", last_used=20.0))
    registry.add(make_record("g-00000004", last_used=99.0, environment="env-b"))
    registry.add(make_record("g-00000005", last_used=99.0, state="starting"))
    leased = [registry.lease("env-a", ME) for _ in range(4)]
    assert [record and record.replica_id for record in leased] == [
        "g-00000002",
        "g-00000003",
        "g-00000001",
        None,
    ]
    first = leased[0]
    assert first is not None
    assert (first.state, first.lease_owner, first.lease_owner_started) == (
        "leased",
        ME,
        ME_STARTED,
    )


def test_lease_to_a_missing_owner_is_refused(registry: Registry) -> None:
    registry.add(make_record())
    gone = subprocess.Popen(["true"])
    gone.wait(timeout=CHILD_TIMEOUT)
    with pytest.raises(RegistryError, match=f"process {gone.pid}: it is not running"):
        registry.lease("env-a", gone.pid)


def test_release_returns_to_idle_with_the_clock(registry: Registry, clock: FakeClock) -> None:
    registry.add(make_record())
    assert registry.lease("env-a", ME) is not None
    clock.now = 2000.0
    released = registry.release("g-00000001", tests_served_delta=7)
    assert released is not None
    assert (released.state, released.lease_owner, released.lease_owner_started) == (
        "idle",
        None,
        None,
    )
    assert (released.last_used, released.tests_served) == (2000.0, 7)
    assert registry.release("g-99999999", tests_served_delta=1) is None


def test_release_keeps_a_retiring_replica_retiring(registry: Registry) -> None:
    registry.add(make_record())
    registry.lease("env-a", ME)
    registry.update("g-00000001", state="retiring")
    released = registry.release("g-00000001", tests_served_delta=1)
    assert released is not None
    assert (released.state, released.lease_owner) == ("retiring", None)
    assert registry.lease("env-a", ME) is None


def test_count_and_reserve(registry: Registry) -> None:
    registry.add(make_record("g-00000001", state="idle"))
    registry.add(make_record("g-00000002", state="retiring"))
    registry.add(make_record("g-00000003", state="leased"))
    registry.add(make_record("g-00000004", environment="env-b"))
    assert registry.count("env-a") == 2
    assert registry.reserve("env-a", 3, make_record("g-00000005", state="starting"))
    assert not registry.reserve("env-a", 3, make_record("g-00000006", state="starting"))
    assert registry.count("env-a") == 3
    with pytest.raises(ValueError, match="'starting' record"):
        registry.reserve("env-a", 9, make_record("g-00000007", state="idle"))
    with pytest.raises(ValueError, match="'starting' record"):
        registry.reserve("env-b", 9, make_record("g-00000007", state="starting"))


def test_one_lease_per_replica_in_a_race_between_threads(
    registry: Registry, registry_dir: Path
) -> None:
    registry.add(make_record("g-00000001"))
    registry.add(make_record("g-00000002"))
    # Half the threads share one instance, half have their own: both must exclude each other.
    instances = [registry if n % 2 else Registry(registry_dir) for n in range(8)]
    barrier = threading.Barrier(len(instances))
    won: list[str | None] = []

    def lease(instance: Registry) -> None:
        barrier.wait(timeout=CHILD_TIMEOUT)
        record = instance.lease("env-a", ME)
        won.append(None if record is None else record.replica_id)

    threads = [threading.Thread(target=lease, args=(instance,)) for instance in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CHILD_TIMEOUT)
    assert Counter(won) == {"g-00000001": 1, "g-00000002": 1, None: 6}


# -- liveness ------------------------------------------------------------------------------


def sleeper(children: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], float]:
    child = subprocess.Popen(["sleep", "60"], text=True)
    children.append(child)
    return child, start_of(child.pid)


def test_prune_removes_a_replica_whose_process_exited(
    registry: Registry, children: list[subprocess.Popen[str]]
) -> None:
    child, started = sleeper(children)
    socket_file = registry.sockets_directory / "g-00000001.sock"
    socket_file.write_text("")
    registry.add(make_record(pid=child.pid, process_started=started, socket_path=str(socket_file)))
    assert registry.prune() == []
    child.kill()
    child.wait(timeout=CHILD_TIMEOUT)
    assert registry.prune() == [
        f"removed record of replica g-00000001: process {child.pid} is gone"
    ]
    assert registry.records() == []
    assert not socket_file.exists()


def test_prune_removes_a_zombie(registry: Registry, children: list[subprocess.Popen[str]]) -> None:
    child, started = sleeper(children)
    registry.add(make_record(pid=child.pid, process_started=started))
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert registry.prune() == [
        f"removed record of replica g-00000001: process {child.pid} has exited (zombie)"
    ]
    child.wait(timeout=CHILD_TIMEOUT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="steps psutil's Linux boot time")
def test_a_stepped_wall_clock_leaves_replicas_and_leases_alive(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP, or a virtual machine resumed from a snapshot, steps the wall clock by minutes; the
    boot time psutil adds to every create time moves with it (/proc/stat's btime). Start times
    were compared as create times: a live replica then looked like a pid reused, its record was
    dropped, and the next run started a replica of its own while the warm one idled out."""
    leased = dataclasses.replace(
        make_record(state="leased"), lease_owner=ME, lease_owner_started=ME_STARTED
    )
    registry.add(leased)
    platform = psutil._psplatform  # type: ignore[attr-defined]
    booted = platform.boot_time()
    monkeypatch.setattr(platform, "boot_time", lambda: booted + 300.0)
    assert psutil.boot_time() == booted + 300.0  # the step is seen as psutil sees a real one
    assert registry.prune() == []
    assert registry.records() == [leased]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="steps psutil's Linux boot time")
def test_a_step_between_the_reads_of_one_start_time_is_read_again(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step lands after the boot time is read and before the create time adds its own."""
    registry.add(make_record())
    platform = psutil._psplatform  # type: ignore[attr-defined]
    booted: float = platform.boot_time()
    reads = 0

    def boot_time() -> float:
        nonlocal reads
        reads += 1
        return booted + (300.0 if reads > 1 else 0.0)

    monkeypatch.setattr(platform, "boot_time", boot_time)
    assert registry.prune() == []
    assert reads > 3, "read again"


def test_prune_detects_a_reused_pid(registry: Registry) -> None:
    registry.add(make_record(process_started=ME_STARTED - 100))
    (cleaned,) = registry.prune()
    assert cleaned.startswith(f"removed record of replica g-00000001: process {ME} is gone (pid")
    assert registry.records() == []


def test_prune_leaves_sockets_outside_its_directories(registry: Registry, tmp_path: Path) -> None:
    stray = tmp_path / "stray.sock"
    stray.write_text("")
    registry.add(make_record(process_started=ME_STARTED - 100, socket_path=str(stray)))
    registry.prune()
    assert stray.exists()


def test_a_dead_lease_owner_frees_the_lease(
    registry: Registry, children: list[subprocess.Popen[str]]
) -> None:
    owner, _ = sleeper(children)
    registry.add(make_record("g-00000001"))
    registry.add(make_record("g-00000002"))
    assert registry.lease("env-a", owner.pid) is not None
    assert registry.lease("env-a", ME) is not None
    assert registry.prune() == []
    owner.kill()
    owner.wait(timeout=CHILD_TIMEOUT)
    states = {
        record.replica_id: (record.state, record.lease_owner) for record in registry.records()
    }
    assert registry.last_pruned == (
        f"freed the lease on replica g-00000001: its holder process {owner.pid} is gone",
    )
    assert states == {"g-00000001": ("idle", None), "g-00000002": ("leased", ME)}


def test_a_lease_owner_with_a_reused_pid_frees_the_lease(registry: Registry) -> None:
    registry.add(make_record())
    registry.lease("env-a", ME)
    registry.update("g-00000001", lease_owner_started=ME_STARTED - 100)
    (cleaned,) = registry.prune()
    assert cleaned.startswith("freed the lease on replica g-00000001")
    assert registry.lease("env-a", ME) is not None


# -- corruption and locking --------------------------------------------------------------------


def good_document() -> dict[str, object]:
    return {"version": 2, "replicas": [make_record().to_json()]}


def broken_record(**changes: object) -> bytes:
    document = good_document()
    record = make_record().to_json()
    record.update(changes)
    document["replicas"] = [record]
    return json.dumps(document).encode()


CORRUPT = {
    "truncated": json.dumps(good_document()).encode()[:50],
    "empty": b"",
    "not json": b"not json at all",
    "not utf-8": b"\xff\xfe\x00",
    "a list": b"[]",
    "a later version": json.dumps({"version": 3, "replicas": []}).encode(),
    "version a bool": json.dumps({"version": True, "replicas": []}).encode(),
    "replicas not a list": json.dumps({"version": 2, "replicas": {}}).encode(),
    "pid a string": broken_record(pid="12"),
    "pid a bool": broken_record(pid=True),
    "unknown state": broken_record(state="sleeping"),
    "fingerprint not strings": broken_record(fingerprint={"a": 1}),
    "path in the id": broken_record(replica_id="../../etc"),
    "extra field": broken_record(colour="blue"),
    "duplicate ids": json.dumps(
        {"version": 2, "replicas": [make_record().to_json(), make_record().to_json()]}
    ).encode(),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_registry_is_set_aside(
    registry: Registry, registry_dir: Path, clock: FakeClock, content: bytes
) -> None:
    (registry_dir / "registry.json").write_bytes(content)
    assert registry.records() == []
    aside = registry_dir / "registry.json.corrupt-19700101-001640"
    assert aside.read_bytes() == content
    assert registry.last_recovery is not None
    assert registry.last_recovery.startswith(
        f"the replica registry {registry_dir / 'registry.json'} was unreadable ("
    )
    assert "moved it to registry.json.corrupt-19700101-001640 and started empty" in (
        registry.last_recovery
    )
    assert json.loads((registry_dir / "registry.json").read_text()) == {
        "version": 2,
        "replicas": [],
    }
    (registry_dir / "registry.json").write_bytes(content)
    assert registry.records() == []
    assert (registry_dir / "registry.json.corrupt-19700101-001640-1").exists()


def test_a_valid_registry_reports_no_recovery(registry: Registry, registry_dir: Path) -> None:
    (registry_dir / "registry.json").write_text(json.dumps(good_document()))
    assert [record.replica_id for record in registry.records()] == ["g-00000001"]
    assert registry.last_recovery is None


def test_an_earlier_versions_registry_reads_as_empty_and_is_replaced(
    registry: Registry, registry_dir: Path
) -> None:
    """Version 1 kept wall-clock times: its records cannot be compared with this version's,
    and they are dropped without a note (their replicas end when they find them gone)."""
    old = make_record().to_json()
    old["create_time"] = old.pop("process_started")
    (registry_dir / "registry.json").write_text(json.dumps({"version": 1, "replicas": [old]}))
    assert registry.records() == []
    assert registry.last_recovery is None
    assert list(registry_dir.glob("registry.json.corrupt-*")) == []
    registry.add(make_record())
    assert json.loads((registry_dir / "registry.json").read_text())["version"] == 2


# -- token, sockets, logs ------------------------------------------------------------------


def test_token_is_private_and_stable(registry: Registry, registry_dir: Path) -> None:
    token = registry.token()
    assert len(token) == 64
    int(token, 16)
    assert mode(registry_dir / "token") == 0o600
    assert Registry(registry_dir).token() == token


def test_token_with_loose_mode_is_refused(registry: Registry, registry_dir: Path) -> None:
    registry.token()
    os.chmod(registry_dir / "token", 0o644)
    with pytest.raises(RegistryError, match=r"token: its mode is 0644, it must be 0600"):
        Registry(registry_dir).token()


def test_malformed_token_is_replaced(registry: Registry, registry_dir: Path) -> None:
    (registry_dir / "token").write_text("short")
    os.chmod(registry_dir / "token", 0o600)
    token = registry.token()
    assert len(token) == 64
    assert (
        registry.last_recovery
        == f"the registry token {registry_dir / 'token'} was malformed: replaced"
    )


def test_socket_and_log_paths(registry: Registry, registry_dir: Path) -> None:
    path = registry.socket_path("g-1234abcd")
    assert path == str(registry_dir / "sockets" / "g-1234abcd.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
    assert registry.log_path("g-1234abcd") == str(registry_dir / "logs" / "g-1234abcd.log")
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="bad replica id"):
            registry.socket_path(bad)


def test_socket_path_falls_back_to_tmp_when_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    registry = Registry(deep / "reuse")
    short_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
        path = registry.socket_path("g-1234abcd")
        assert len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES
        assert Path(path).parent.parent == short_tmp / f"pytest-reuse-{os.geteuid()}"
        assert mode(Path(path).parent) == 0o700
        assert mode(Path(path).parent.parent) == 0o700
        assert registry.socket_path("g-1234abcd") == path
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
        # prune cleans sockets in the fallback directory too.
        registry.add(make_record(process_started=ME_STARTED - 100, socket_path=path))
        registry.prune()
        assert not Path(path).exists()
        # Another registry gets another fallback directory.
        other = Registry(deep / "other")
        assert Path(other.socket_path("g-1234abcd")).parent != Path(path).parent
    finally:
        subprocess.run(["rm", "-rf", str(short_tmp)], check=True)


@pytest.fixture
def short_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short $TMPDIR (tempfile.tempdir) for socket fallback directories."""
    path = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


@pytest.mark.parametrize("squat", ["loose", "other-owner", "file"])
def test_socket_fallback_directory_squatted_by_someone_else_is_avoided(
    tmp_path: Path, short_tmp: Path, squat: str
) -> None:
    # Any local user may create /tmp/pytest-reuse-<uid> first: that must not block a run.
    registry = Registry(tmp_path / ("d" * 120) / "reuse")
    squatted = short_tmp / f"pytest-reuse-{os.geteuid()}"
    if squat == "file":
        squatted.write_text("")
    else:
        squatted.mkdir(mode=0o777)
        os.chmod(squatted, 0o777)
        if squat == "other-owner":
            if os.geteuid() != 0:
                pytest.skip("changing a directory's owner needs root")
            os.chmod(squatted, 0o700)
            os.chown(squatted, 65534, -1)
    path = Path(registry.socket_path("g-1234abcd"))
    assert path.parent.parent != squatted
    assert path.parent.parent.name.startswith(f"pytest-reuse-{os.geteuid()}-")
    for directory in (path.parent, path.parent.parent):
        info = os.lstat(directory)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid())
    assert registry.own_socket_directory(path.parent)
    assert not registry.own_socket_directory(squatted)
    # The next registry of the project finds the same private directory, not a new one.
    again = Registry(tmp_path / ("d" * 120) / "reuse")
    assert again.socket_path("g-1234abcd") == str(path)
    assert len(list(short_tmp.iterdir())) == 2


def test_the_default_lock_wait_is_a_few_seconds() -> None:
    """A busy lock means "run without the registry this time" after a short, bounded wait
    (the wait itself is tested with a short timeout in tests/e2e/test_registry_processes.py)."""
    assert 1.0 <= LOCK_WAIT_SECONDS <= 5.0
    assert inspect.signature(Registry).parameters["lock_timeout"].default == LOCK_WAIT_SECONDS


# -- faults of the file system (simulated: this suite runs as root, which permissions do not stop)


def test_records_file_that_is_a_directory(registry: Registry, registry_dir: Path) -> None:
    (registry_dir / "registry.json").mkdir()
    with pytest.raises(RegistryError) as info:
        registry.records()
    message = str(info.value)
    assert str(registry_dir / "registry.json") in message
    assert "Is a directory" in message
    assert f"fix: remove {registry_dir / 'registry.json'}" in message
    with pytest.raises(RegistryError):
        registry.probe()


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.ENOSPC, "free some space on that file system"),
        (errno.EROFS, "make it writable, or point cache_dir at a writable directory"),
    ],
)
def test_a_failing_write_names_the_path_and_the_fix(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, code: int, fix: str
) -> None:
    # A full disk or a read-only file system, simulated: every write of a file fails.
    def failing_write(*args: object, **kwargs: object) -> NoReturn:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", failing_write)
    with pytest.raises(RegistryError) as info:
        registry.add(make_record())
    assert str(info.value).startswith(
        f"cannot write {registry.records_path}: {os.strerror(code)}; fix: {fix}"
    )
    with pytest.raises(RegistryError, match=os.strerror(code)):
        registry.probe()


def test_probe_finds_an_unwritable_log_directory(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if Path(kwargs["dir"]) == registry.logs_directory:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(RegistryError, match=rf"cannot create files in {registry.logs_directory}"):
        registry.probe()


def test_probe_passes_on_a_healthy_registry(registry: Registry) -> None:
    registry.probe()
    assert registry.records_path.exists()


def test_a_replica_never_re_creates_a_removed_registry(registry_dir: Path) -> None:
    # rm -rf .pytest_cache while replicas idle: a replica's registry must not bring it back.
    Registry(registry_dir)
    in_replica = Registry(registry_dir, create=False)
    subprocess.run(["rm", "-rf", str(registry_dir)], check=True)
    with pytest.raises(RegistryError, match="was removed"):
        in_replica.records()
    assert not registry_dir.exists()
    with pytest.raises(RegistryError, match="was removed"):
        Registry(registry_dir, create=False)
    # A run re-creates it, private.
    Registry(registry_dir).records()
    assert mode(registry_dir) == 0o700


def test_status_names_a_registry_an_idle_replica_set_aside_first(
    registry: Registry, registry_dir: Path
) -> None:
    """An idle replica may read a corrupt registry before ``--reuse-status`` does: the
    status still says it was unreadable and where the copy is."""
    from pytest_reuse_env.controller.commands import status_lines

    registry.records()
    (registry_dir / "registry.json").write_text("{not json")
    assert Registry(registry_dir).records() == []  # the replica's read sets it aside
    lines = status_lines(Registry(registry_dir), None)
    (aside,) = registry.set_aside()
    assert lines[1] == (
        f"  note: the replica registry {registry_dir / 'registry.json'} was unreadable before; "
        f"kept as {aside.name} (safe to delete)"
    )


def test_two_runs_creating_the_registry_at_once_both_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither the cache directory nor the registry exists; another run makes both between this
    # run's first mkdir (no parent) and its second. This run used to fall back to run scope
    # ("cannot create the registry directory ...: File exists") and start replicas of its own.
    directory = tmp_path / ".pytest_cache" / "reuse"
    real = registry_files.make_cache_directory

    def other_run_first(path: Path) -> None:
        real(path)
        os.mkdir(directory, mode=0o700)

    monkeypatch.setattr(registry_files, "make_cache_directory", other_run_first)
    registry_files.private_directory(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
