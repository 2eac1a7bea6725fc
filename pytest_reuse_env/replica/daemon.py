"""A detached replica (``scope="global"``): a replica's pytest session served over a Unix socket,
outliving the pytest runs that use it.

The controller starts it as
``python -m pytest_reuse_env.replica.daemon REGISTRY_DIR REPLICA_ID`` in a
session of its own (so the terminal's Ctrl-C does not reach it), stdin from /dev/null and
stdout/stderr to its log file (so it never holds a caller's pipes). The first client sends
START and the replica collects; every later client sends ATTACH and finds it warm.

One client at a time (the registry's lease): messages from it go to the serve loop on the main
thread; a client that disconnects mid-test gets that test aborted (``ClientGone``) and nothing
more. With no client, the replica asks the scaling rules every few seconds whether it should
retire (``idle_ttl``, ``scaledown_ttl``), with the registry's records of its environment as the
state, so TTLs hold with no pytest running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final, final

from pytest_reuse_env import protocol, scaling
from pytest_reuse_env.channel import Listener, SocketChannel
from pytest_reuse_env.registry import Registry, RegistryBusy, RegistryError, machine_clock
from pytest_reuse_env.replica import hygiene
from pytest_reuse_env.replica.abort import ABORT_SIGNAL, install_abort_handler
from pytest_reuse_env.replica.bootstrap import run_session
from pytest_reuse_env.replica.logfile import _log_line
from pytest_reuse_env.replica.reload import Reloader
from pytest_reuse_env.replica.session import ReplicaSession

#: How long a new replica waits for the run that started it to connect.
FIRST_CLIENT_SECONDS: Final = 60.0
#: How often an idle replica with no client consults the registry about retiring.
IDLE_CHECK_SECONDS: Final = 1.0
#: How long a new client waits for the previous one to finish disconnecting.
BUSY_WAIT_SECONDS: Final = 5.0
#: Exit code of a replica whose client connection's descriptor a test closed.
DESCRIPTORS_CLOSED_EXIT: Final = 75
#: Longest a retiring replica may spend in finalizers before it exits anyway.
RETIRE_GRACE_SECONDS: Final = 60.0


@final
class Relay:
    """The replica's one client: ``send`` goes to it, or raises when there is none."""

    def __init__(self, inbox: queue.SimpleQueue[Any]) -> None:
        self._inbox = inbox
        self._lock = threading.Lock()
        self._channel: SocketChannel | None = None
        self.replica: ReplicaSession | None = None
        self.on_disconnect: list[Any] = []

    @property
    def channel(self) -> SocketChannel | None:
        """The client's connection, if one is attached."""
        with self._lock:
            return self._channel

    def busy(self) -> bool:
        with self._lock:
            return self._channel is not None

    def attach(self, channel: SocketChannel) -> None:
        with self._lock:
            self._channel = channel
        # Channel callbacks run on the reader thread: only enqueue (and abort a running test).
        channel.setcallback(lambda message: self._received(channel, message), protocol.END)

    def _received(self, channel: SocketChannel, message: Any) -> None:
        if message is not protocol.END:
            self._inbox.put(message)
            return
        with self._lock:
            if self._channel is not channel:
                return
            self._channel = None
        if self.replica is not None and self.replica.running:
            os.kill(os.getpid(), ABORT_SIGNAL)
        self._inbox.put(protocol.END)
        for callback in self.on_disconnect:
            callback()

    def send(self, message: Any) -> None:
        with self._lock:
            channel = self._channel
        if channel is None:
            raise OSError("no client connected")
        try:
            channel.send(message)
        except OSError as exc:
            if getattr(exc.__cause__, "errno", None) == errno.EBADF:
                # A test closed our descriptors (os.closerange): while our reader thread blocks
                # on that socket the client never sees it close; only our exit tells it.
                _log_line(f"my connection's descriptor was closed under me ({exc}); exiting")
                os._exit(DESCRIPTORS_CLOSED_EXIT)
            raise

    def isclosed(self) -> bool:
        return not self.busy()


@final
class Daemon:
    """Everything one detached replica does besides running tests."""

    def __init__(self, registry: Registry, replica_id: str) -> None:
        self.registry = registry
        self.replica_id = replica_id
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.relay = Relay(self.inbox)
        self.listener = Listener(self._socket_path(), registry.token(), log=self._log)
        #: Keeps the replica warm through edits (replica/reload.py).
        self.reloader = Reloader()
        #: A client accepted while the previous one is still disconnecting.
        self._waiting: SocketChannel | None = None
        # Connections come and go while a test runs (other runs, other xdist workers): the
        # leak checks must not blame the test for them.
        hygiene.register_own_fds(self._own_fds)
        self.policy: protocol.PolicyPayload | None = None
        self.replica: ReplicaSession | None = None
        self._next_idle_check = 0.0
        self._stopping = threading.Event()

    def _socket_path(self) -> str:
        """Where the run that started me recorded my socket (a fallback directory under
        $TMPDIR may be one only that run could pick), if it is one of the registry's own."""
        with self.registry.transaction() as records:
            record = records.get(self.replica_id)
        if record is None:
            raise RegistryError(f"replica {self.replica_id} has no registry record")
        if not self.registry.own_socket_directory(Path(record.socket).parent):
            raise RegistryError(f"{record.socket} is not in a private socket directory of mine")
        return record.socket

    def run(self) -> int:
        first = self.listener.accept(timeout=FIRST_CLIENT_SECONDS)
        if first is None:
            self._log("no client connected within the start timeout; exiting")
            return 1
        name, start = first.receive(timeout=30.0)
        if name != protocol.START:
            self._log(f"first message was {name!r}, not start; exiting")
            return 1
        self.policy = start["policy"]
        self.reloader.graph.install()  # before the session imports any project module
        self.relay.attach(first)
        self.relay.on_disconnect.append(self._released)
        replica = ReplicaSession(
            self.relay,
            self.inbox,
            start,
            persistent=True,
            on_idle=self._should_retire,
            refresh=self._refresh,
            on_ready=self.reloader.ready,
        )
        replica.plugins.append(self.reloader)
        self.reloader.bind(replica)
        self.replica = self.relay.replica = replica
        install_abort_handler(replica)
        threading.Thread(target=self._accept_loop, name="reuse-accept", daemon=True).start()
        threading.Thread(target=self._watchdog, name="reuse-watchdog", daemon=True).start()
        try:
            run_session(self.relay, start, replica)
        finally:
            self._stopping.set()
            self.listener.close()
            try:
                record = self.registry.remove(self.replica_id)
            except RegistryError as exc:
                record = None
                self._log(f"could not remove my registry record: {exc}")
        if not replica.ready_sent:
            # It never served: the controller quotes this log and names it; keep it.
            self._log("could not start; this log is kept")
            return 1
        # A clean exit leaves no log behind; a crashed replica's log stays for the post-mortem.
        if record is not None:
            for path in (record.log, protocol.held_path(record.log)):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return 0

    # -- clients -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._accept_one()
            except Exception as exc:  # this thread must outlive any one bad connection
                self._log(f"accept failed: {exc!r}")

    def _accept_one(self) -> None:
        channel = self.listener.accept(timeout=1.0)
        if channel is None:
            return
        # The registry leases a replica to one run at a time, so a busy relay means the
        # previous client is still disconnecting (its end of stream is on its way).
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        self._waiting = channel
        try:
            while self.relay.busy() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.relay.busy():
                channel.close()
                return
            self.relay.attach(channel)
        finally:
            self._waiting = None

    def _own_fds(self) -> list[int]:
        """The descriptors of this replica's listener and its clients' connections."""
        fds = self.listener.descriptors()
        for channel in (self.relay.channel, self._waiting):
            if channel is not None and not channel.isclosed():
                fds.append(channel.fileno())
        return fds

    def _released(self) -> None:
        """The client disconnected: the replica is idle and warm in the registry."""
        replica = self.replica
        served = replica.tests_run if replica is not None else 0
        try:
            self.registry.update(
                self.replica_id,
                state="idle",
                lease_owner=None,
                lease_owner_started=None,
                last_used=machine_clock(),
                tests_served=served,
            )
        except (RegistryError, KeyError) as exc:
            self._log(f"could not mark myself idle: {exc}")

    # -- staleness ---------------------------------------------------------------------------

    def _refresh(self) -> protocol.ReloadPayload:
        """Catch up with edited files before serving the client that attached."""
        result = self.reloader.refresh()
        for error in result.teardown_errors:
            with contextlib.suppress(OSError):
                self.relay.send(protocol.teardown_error(os.getpid(), error))
        if result.stale is not None:
            self._log(f"stale: {result.stale}")
        return result.payload()

    # -- retiring ----------------------------------------------------------------------------

    def _should_retire(self) -> bool:
        """Asked by the serve loop while it waits; True means finish and exit now."""
        if self.relay.busy() or self.policy is None:
            return False
        now = machine_clock()
        if now < self._next_idle_check:
            return False
        self._next_idle_check = now + IDLE_CHECK_SECONDS
        try:
            with self.registry.transaction() as records:
                mine = records.get(self.replica_id)
                if mine is None:
                    self._log("my registry record is gone; retiring")
                    return True
                decision = self._decide(records, mine.environment, now)
                if decision is not None:
                    records[self.replica_id] = dataclasses.replace(mine, state="retiring")
                    self._log(f"retiring: {decision}")
                    return True
        except RegistryBusy as exc:
            self._log(f"not deciding about retiring now: {exc}")
            return False
        except RegistryError as exc:
            self._log(f"registry unusable ({exc}); retiring")
            return True
        return False

    def _decide(self, records: dict[str, Any], environment: str, now: float) -> str | None:
        assert self.policy is not None
        views = []
        last_activity = 0.0
        for record in records.values():
            if record.environment != environment or record.state == "retiring":
                continue
            last_activity = max(last_activity, record.last_used)
            if record.state == "idle":
                phase, in_flight, since = scaling.ReplicaPhase.IDLE, 0, record.last_used
            elif record.state == "leased":
                phase, in_flight, since = scaling.ReplicaPhase.BUSY, 1, None
            else:
                phase, in_flight, since = scaling.ReplicaPhase.STARTING, 0, None
            views.append(
                scaling.ReplicaView(record.replica_id, phase, record.started_at, in_flight, since)
            )
        low, high = self.policy["replicas"]
        limits = scaling.ScalingLimits(
            low,
            high,
            self.policy["concurrency"],
            self.policy["scaledown_ttl"],
            self.policy["idle_ttl"],
        )
        state = scaling.EnvironmentState(tuple(views), 0, last_activity)
        for action in scaling.decide(state, limits, now):
            if isinstance(action, scaling.RetireReplica) and action.replica_id == self.replica_id:
                return action.reason
        return None

    def _watchdog(self) -> None:
        """A retiring replica whose finalizers hang still exits: nothing outlives its TTL."""
        while not self._stopping.wait(1.0):
            replica = self.replica
            if replica is None or not replica.shutting_down:
                continue
            grace = max(RETIRE_GRACE_SECONDS, replica.start["teardown_timeout"])
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self._stopping.wait(1.0):
                    return
            self._log(f"finalizers still running after {grace:g} s; exiting")
            try:
                self.registry.remove(self.replica_id)
            except RegistryError:
                pass
            os._exit(70)

    def _log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{stamp} replica {self.replica_id} pid {os.getpid()}: {message}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    registry_dir, replica_id = (sys.argv[1:] if argv is None else argv)[:2]
    try:
        # create=False: a registry the user removed stays removed (and is never re-created
        # with another mode); this replica then retires.
        daemon = Daemon(Registry(Path(registry_dir), create=False), replica_id)
    except RegistryError as exc:
        print(f"replica {replica_id}: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
