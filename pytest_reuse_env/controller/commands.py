"""The warm-replica commands: ``--reuse-status``, ``--reuse-stop`` and ``--reuse-fresh``.

All three work with no replica present and with no registry at all. Stopping is "ask, wait,
kill": the replica is sent SHUTDOWN over its socket (its finalizers run), waited for by pid, and
killed only if it has not exited in time. A replica leased by another running pytest is left
alone: stopping it would fail that run's tests.

A registry that cannot be used (a file where a directory belongs, a busy lock, a read-only or
full disk) is reported with its path and fix, never a traceback: ``--reuse-status`` says so and
exits 0, ``--reuse-stop`` says what it could not stop and exits 1.
"""

from __future__ import annotations

import json
import os
from typing import Final

import execnet
import psutil
import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.channel import connect
from pytest_reuse_env.controller.launch.process import kill_and_wait, wait_gone
from pytest_reuse_env.registry import (
    Registry,
    RegistryError,
    ReplicaRecord,
    machine_clock,
    process_gone,
)
from pytest_reuse_env.warm import registry_directory

#: How long a replica asked to stop may run its finalizers before it is killed.
STOP_WAIT_SECONDS: Final = 30.0


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _memory(pid: int) -> str:
    try:
        return f"{psutil.Process(pid).memory_info().rss / 2**20:.0f} MiB"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def describe_fingerprint(components: dict[str, str]) -> str:
    """The fingerprint in a line: readable parts as they are, digests shortened."""
    parts = []
    for name, value in sorted(components.items()):
        if name == "env":
            try:
                names = sorted(json.loads(value))
            except ValueError:
                names = []
            parts.append(f"env vars {' '.join(names) or '-'}")
        elif name in ("python", "rootdir"):
            parts.append(f"{name} {value.split()[0] if name == 'python' else value}")
        else:
            parts.append(f"{name} {value[:10]}")
    return ", ".join(parts)


def status_lines(registry: Registry | None, problem: str | None) -> list[str]:
    """One header and one line per warm replica of this project."""
    if registry is None:
        return [f"reuse: no registry ({problem})" if problem else "reuse: no registry"]
    try:
        records = registry.records()
    except RegistryError as exc:
        return [f"reuse: the registry in {registry.directory} cannot be used: {exc}"]
    lines = [
        f"reuse: {len(records)} warm replica{'s' if len(records) != 1 else ''} "
        f"in {registry.directory}"
    ]
    if registry.last_recovery:
        lines.append(f"  note: {registry.last_recovery}")
    elif aside := registry.set_aside():
        # Set aside earlier, by a run or by an idle replica that read it first.
        lines.append(
            f"  note: the replica registry {registry.records_path} was unreadable before; "
            f"kept as {', '.join(path.name for path in aside)} (safe to delete)"
        )
    for note in registry.last_pruned:
        lines.append(f"  cleaned: {note}")
    now = machine_clock()
    for record in sorted(records, key=lambda r: (r.policy, r.started_at)):
        state = str(record.state)
        if record.lease_owner is not None:
            state = f"{state} by pid {record.lease_owner}"
        lines.append(
            f"  {record.replica_id}  pid {record.pid}  {state}  age {_age(now - record.started_at)}"
            f"  idle {_age(now - record.last_used) if record.state == 'idle' else '-'}"
            f"  tests {record.tests_served}  memory {_memory(record.pid)}"
        )
        lines.append(f"    environment {record.environment}: {record.policy}")
        lines.append(f"    built from: {describe_fingerprint(record.fingerprint)}")
        lines.append(f"    log: {record.log}")
    return lines


def stop_replica(registry: Registry, record: ReplicaRecord, wait: float) -> str:
    """Ask one replica to stop, wait for it by pid, kill it if it does not; say what happened.
    Whether it was already gone is looked at before it is asked: one that exits at once on
    SHUTDOWN stopped, it was not gone."""
    try:
        process = psutil.Process(record.pid)
        if process_gone(record.pid, record.process_started) is not None:
            raise psutil.NoSuchProcess(record.pid)
    except psutil.NoSuchProcess:
        _forget(registry, record)
        return f"{record.replica_id} (pid {record.pid}) was already gone"
    asked = False
    channel = None
    try:
        try:
            channel = connect(record.socket, registry.token(), timeout=5.0)
            channel.send(protocol.shutdown())
            asked = True
        except (OSError, RegistryError, execnet.DataFormatError):
            pass  # not listening (hung, or busy with another client): it is killed below
        alive = wait_gone([process], wait if asked else 0)
    finally:
        # Held open until it is gone, so it does not see its client vanish first.
        if channel is not None:
            channel.close()
    _forget(registry, record)
    if not alive and not asked:  # it ended before it could be asked
        return f"{record.replica_id} (pid {record.pid}) was already gone"
    if not alive:
        return f"stopped {record.replica_id} (pid {record.pid}); its finalizers ran"
    kill_and_wait(alive)
    why = "did not exit in time" if asked else "did not answer on its socket"
    return f"killed {record.replica_id} (pid {record.pid}): it {why}; finalizers may not have run"


def _forget(registry: Registry, record: ReplicaRecord) -> None:
    """Drop the record of a replica that is gone; a busy registry prunes it later."""
    try:
        registry.remove(record.replica_id)
    except RegistryError:
        pass


def stop_all(registry: Registry | None, *, wait: float = STOP_WAIT_SECONDS) -> list[str]:
    """Stop every warm replica that no running pytest holds; one line per replica.

    RegistryError if the records cannot be read (nothing was stopped then)."""
    if registry is None:
        return []
    lines = []
    for record in registry.records():
        if record.state == "leased" and record.lease_owner is not None:
            lines.append(
                f"left {record.replica_id} (pid {record.pid}) running: it is serving "
                f"the pytest run with pid {record.lease_owner}"
            )
            continue
        lines.append(stop_replica(registry, record, wait))
    return lines


def run_command(config: pytest.Config, session: pytest.Session) -> int:
    """``--reuse-status`` or ``--reuse-stop``, run by the plugin in place of a test session."""
    directory = registry_directory(config)
    try:
        registry: Registry | None = Registry(directory)
        problem = None
    except RegistryError as exc:
        registry, problem = None, str(exc)
    writer = config.get_terminal_writer()
    if not config.getoption("reuse_stop"):
        for line in status_lines(registry, problem):
            writer.line(line)
        return 0
    try:
        lines = stop_all(registry)
    except RegistryError as exc:
        problem = str(exc)
        lines = []
    if problem is not None and (registry is not None or os.path.lexists(directory)):
        # A registry is there and may list replicas: say that none could be stopped.
        writer.line(f"reuse: cannot stop warm replicas: {problem}")
        return 1
    for line in lines or ["reuse: no warm replicas to stop"]:
        writer.line(line)
    return 0
