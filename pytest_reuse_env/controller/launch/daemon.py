"""``scope="global"``: a detached replica that outlives the run, reached over a Unix socket.

A warm replica of the environment is leased from the project's registry and attached to; else a
new one is started, if the policy's ``max`` across every run of the project allows it, as
``python -c <bootstrap> REGISTRY_DIR REPLICA_ID`` (the replica side is ``replica/daemon.py``)
in a session of its own, stdin from /dev/null and output to its log. It makes its own basetemp,
where plain pytest would make one (``replica/startup.py``). Ending the run only disconnects.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    import psutil

from pytest_reuse_env import protocol
from pytest_reuse_env.channel import connect
from pytest_reuse_env.controller.launch.base import END, STILL_RUNNING, Deliver, Outbox, Starter
from pytest_reuse_env.controller.launch.process import (
    KILL_WAIT_SECONDS,
    describe_exit,
    kill_and_wait,
    wait_exit,
    wait_gone,
    wait_or_kill,
)
from pytest_reuse_env.controller.replica import Replica
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.registry import (
    Registry,
    RegistryError,
    ReplicaRecord,
    machine_clock,
    new_replica_id,
    process_gone,
    process_start,
)

# controller/launch/daemon.py -> the folder that holds the package.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])
_BOOTSTRAP = (
    f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
    "from pytest_reuse_env.replica.daemon import main; sys.exit(main())"
)
#: How long attaching to a warm replica may take to connect.
ATTACH_CONNECT_SECONDS = 10.0


@final
class DaemonLink:
    """A connection to a detached replica, started by this run or found warm in the registry."""

    def __init__(
        self,
        socket_path: str,
        token: str,
        pid: int,
        started: float | None,
        popen: subprocess.Popen[bytes] | None,
        connect_timeout: float,
    ) -> None:
        self._socket_path = socket_path
        self._token = token
        self.pid: int | None = pid
        self.from_spare = False
        self._started = started
        #: Set when this run started the process: then its exit code can be known.
        self._popen = popen
        self._connect_timeout = connect_timeout
        self._outbox = Outbox()
        self._released = False

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        """Connect on a thread (a new daemon needs a moment to listen); returns at once."""
        threading.Thread(
            target=self._connect, args=(first, deliver), daemon=True, name="reuse-connect"
        ).start()

    def _connect(self, first: protocol.Message, deliver: Deliver) -> None:
        deadline = time.monotonic() + self._connect_timeout
        while True:
            try:
                channel = connect(self._socket_path, self._token, timeout=10.0)
                break
            except OSError as exc:
                if time.monotonic() > deadline or not self._process_alive():
                    deliver(
                        protocol.start_failed(
                            self.pid or 0, f"could not connect to {self._socket_path}: {exc}"
                        )
                    )
                    deliver(END)
                    return
                time.sleep(0.05)
        try:
            channel.send(first)
        except OSError:
            deliver(END)
            return
        self._outbox.connected(channel)
        channel.setcallback(deliver, END)

    def send(self, message: protocol.Message) -> bool:
        return self._outbox.send(message)

    def _process(self) -> psutil.Process | None:
        """The replica's process while it runs; None once it exited (a zombie counts) or its
        pid was reused, by the registry's own rule."""
        import psutil  # where it is used (launch/process.py says why)

        if self.pid is None or process_gone(self.pid, self._started) is not None:
            return None
        try:
            return psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return None

    def _process_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return self._process() is not None

    def exit_description(self, wait: float) -> str:
        if self._popen is not None:
            try:
                return describe_exit(wait_exit(self._popen, wait))
            except subprocess.TimeoutExpired:
                return STILL_RUNNING
        deadline = time.monotonic() + wait
        while self._process() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._process() is not None:
            return STILL_RUNNING
        return "exited (exit status unknown: the process was started by an earlier run)"

    def kill(self) -> None:
        process = self._process()
        if process is not None:
            process.kill()

    def let_exit(self) -> None:
        """Nothing: a detached replica is released warm or terminated, never let go."""

    def terminate(self, wait: float) -> None:
        """Ask (SHUTDOWN: finalizers run), wait up to ``wait`` seconds, then kill by pid."""
        self.send(protocol.shutdown())
        if self._popen is not None:
            wait_or_kill(self._popen, wait)
        else:
            process = self._process()
            if process is not None:
                kill_and_wait(wait_gone([process], wait))
        self._close()

    def release(self) -> None:
        """End of this run: disconnect; the replica stays warm for the next one."""
        self._released = True
        self._close()

    def _close(self) -> None:
        channel = self._outbox.channel
        if channel is not None:
            channel.close()


def spawn(
    registry_dir: Path, replica_id: str, cwd: str, log_path: str, environ: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a detached replica: its own session, stdin from /dev/null, output to its log."""
    # It serves every xdist worker in turn, so it is none of them.
    env = {k: v for k, v in environ.items() if not k.startswith("PYTEST_XDIST_")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(registry_dir), replica_id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=cwd,
            env=env,
            start_new_session=True,  # no controlling terminal: Ctrl-C there does not reach it
            close_fds=True,
        )


@final
class DaemonStrategy:
    """Leases warm replicas from the project's registry, or starts detached ones within
    ``max``."""

    def __init__(
        self,
        starter: Starter,
        registry: Registry,
        fingerprint: Callable[[], dict[str, str]],
        *,
        cwd: str,
        start_timeout: float,
    ) -> None:
        self._starter = starter
        self._registry = registry
        self._fingerprint = fingerprint
        #: Where a new replica starts: the directory pytest was invoked from.
        self._cwd = cwd
        self._start_timeout = start_timeout

    def launch(self, name: str, policy: ReusePolicy, key: str | None) -> Replica | None:
        assert key is not None, "a global environment has a key"
        registry = self._registry
        record = registry.lease(key, os.getpid())
        if record is not None:
            link = DaemonLink(
                record.socket,
                registry.token(),
                record.pid,
                record.process_started,
                None,
                connect_timeout=ATTACH_CONNECT_SECONDS,
            )
            return self._starter.attach(record.replica_id, name, link, record.log)
        replica_id = new_replica_id()
        now = machine_clock()
        me = process_start(os.getpid())
        assert me is not None, "this process runs"
        record = ReplicaRecord(
            replica_id=replica_id,
            environment=key,
            policy=policy.describe(),
            fingerprint=self._fingerprint(),
            pid=os.getpid(),
            socket=registry.socket_path(replica_id),
            log=registry.log_path(replica_id),
            state="starting",
            lease_owner=os.getpid(),
            lease_owner_started=me,
            started_at=now,
            last_used=now,
            tests_served=0,
            process_started=me,
        )
        if not registry.reserve(key, policy.max_replicas, record):
            return None
        popen = None
        try:
            popen = spawn(registry.directory, replica_id, self._cwd, record.log, dict(os.environ))
            started = process_start(popen.pid)
            if started is None:
                raise RegistryError(f"replica process {popen.pid} ended at once; see {record.log}")
            registry.update(replica_id, pid=popen.pid, process_started=started, state="leased")
        except BaseException:
            # A log that cannot be opened, a registry gone bad: nothing half-started stays.
            if popen is not None:
                popen.kill()
                wait_or_kill(popen, KILL_WAIT_SECONDS)
            with contextlib.suppress(RegistryError):
                registry.remove(replica_id)
            raise
        link = DaemonLink(
            record.socket,
            registry.token(),
            popen.pid,
            started,
            popen,
            connect_timeout=self._start_timeout,
        )
        return self._starter.start(
            replica_id,
            name,
            link,
            policy,
            log_path=record.log,
            # Its own, where plain pytest puts one: it outlives this run's basetemp.
            basetemp=None,
            persistent=True,
        )
