"""How the controller reaches a replica process: two links with one interface.

- ``PopenLink``: an execnet popen gateway; the replica lives and dies with this run
  (``scope="run"``).
- ``DaemonLink``: a Unix-socket connection to a detached replica (``scope="global"``) that
  outlives the run; ending the run only disconnects.
- ``RemoteLink`` (in ``hostlink.py``): a replica on a configured host (``reuse_hosts``).
- ``RemoteLink``: an execnet ssh, socket or popen gateway to a configured host
  (``reuse_hosts``), reached on a thread within ``reuse_host_timeout``; the replica lives for
  the run.

Every message a link receives is handed to ``deliver`` on a reader thread (execnet's receiver
thread or the socket's), which only enqueues; ``deliver(END)`` follows when the link closes.
Every wait is bounded; ending a process is "ask, wait, kill", by pid.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, final

import execnet
import psutil

from pytest_reuse_env import protocol
from pytest_reuse_env.channel import connect
from pytest_reuse_env.registry import process_gone

#: Delivered after the last message of a link, whatever ended it.
END: Final = ("channel_closed", None)
#: Bounded waits of the "ask, wait, kill" teardown, in seconds.
EXIT_WAIT_SECONDS: Final = 5.0
KILL_WAIT_SECONDS: Final = 5.0

Deliver = Callable[[Any], None]

# controller/launch/link.py -> the folder that holds the package.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])
_BOOTSTRAP = f"""
import sys
if {_PACKAGE_PARENT!r} not in sys.path:
    sys.path.insert(0, {_PACKAGE_PARENT!r})
from pytest_reuse_env.replica.session import serve
serve(channel)
"""


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited; returns those still running after ``timeout``.

    A zombie counts as exited: a detached replica is reaped by init, not by us, and init may
    take seconds to get to it.
    """
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while True:
        still = []
        for process in alive:
            try:
                if process.status() != psutil.STATUS_ZOMBIE:
                    still.append(process)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def kill_and_wait(processes: list[psutil.Process]) -> None:
    """SIGKILL what is left, then wait (bounded) for it to go."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    wait_gone(processes, KILL_WAIT_SECONDS)


def describe_exit(code: int | None) -> str:
    """ "exit code 3" or "signal SIGKILL (9)" from a Popen returncode."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"signal {name} ({-code})"
    return f"exit code {code}"


@final
class Outbox:
    """Messages for a link that is still connecting (on a thread): held until it is, then sent
    in order; after that, sent at once. False from ``send`` means the link is gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.channel: Any = None
        self._held: list[protocol.Message] = []

    def connected(self, channel: Any) -> None:
        with self._lock:
            try:
                for message in self._held:
                    channel.send(message)
            except (OSError, EOFError, ValueError):
                pass  # the channel's end marker follows
            self._held = []
            self.channel = channel

    def send(self, message: protocol.Message) -> bool:
        with self._lock:
            channel = self.channel
            if channel is None:
                self._held.append(message)
                return True
        if channel.isclosed():
            return False
        try:
            channel.send(message)
        except (OSError, EOFError, ValueError):
            return False
        return True


class Link(Protocol):
    pid: int | None

    def open(self, first: protocol.Message, deliver: Deliver) -> None: ...
    def send(self, message: protocol.Message) -> bool: ...
    def exit_description(self, wait: float) -> str: ...
    def kill(self) -> None: ...
    def terminate(self, wait: float) -> None: ...
    def release(self) -> None: ...


@final
class PopenLink:
    """A replica that is an execnet popen gateway of this process."""

    def __init__(self, group: execnet.Group, gateway_id: str) -> None:
        self._group = group
        self._gateway_id = gateway_id
        self._gateway: Any = None
        self._channel: Any = None
        self.pid: int | None = None

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        self._gateway = self._group.makegateway(f"popen//id={self._gateway_id}")
        self.pid = self._popen().pid
        self._channel = self._gateway.remote_exec(_BOOTSTRAP)
        self._channel.setcallback(deliver, endmarker=END)
        self._channel.send(first)

    def send(self, message: protocol.Message) -> bool:
        if self._channel is None or self._channel.isclosed():
            return False
        try:
            self._channel.send(message)
        except (OSError, EOFError, ValueError):
            return False
        return True

    def _popen(self) -> subprocess.Popen[bytes]:
        popen: subprocess.Popen[bytes] = self._gateway._io.popen
        return popen

    def exit_description(self, wait: float) -> str:
        if self._gateway is None:
            return "never started"
        try:
            return describe_exit(self._popen().wait(timeout=wait))
        except subprocess.TimeoutExpired:
            return "still running"

    def kill(self) -> None:
        if self._gateway is not None and self._popen().poll() is None:
            self._popen().kill()

    def terminate(self, wait: float) -> None:
        """Ask (gateway exit), wait up to ``wait`` seconds, then kill, and reap by pid."""
        if self._gateway is None:
            return
        try:
            self._gateway.exit()
        except (OSError, EOFError, ValueError):
            pass
        wait_or_kill(self._popen(), wait)

    def release(self) -> None:
        self.terminate(EXIT_WAIT_SECONDS)  # a run-scoped replica has nothing to go back to


@final
class DaemonLink:
    """A connection to a detached replica, started by this run or found warm in the registry."""

    def __init__(
        self,
        socket_path: str,
        token: str,
        pid: int,
        create_time: float | None,
        popen: subprocess.Popen[bytes] | None,
        connect_timeout: float,
    ) -> None:
        self._socket_path = socket_path
        self._token = token
        self.pid: int | None = pid
        self._create_time = create_time
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
                        (
                            protocol.START_FAILED,
                            {
                                "pid": self.pid or 0,
                                "traceback": f"could not connect to {self._socket_path}: {exc}",
                            },
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
        if self.pid is None or process_gone(self.pid, self._create_time) is not None:
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
                return describe_exit(self._popen.wait(timeout=wait))
            except subprocess.TimeoutExpired:
                return "still running"
        deadline = time.monotonic() + wait
        while self._process() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._process() is not None:
            return "still running"
        return "exited (exit status unknown: the process was started by an earlier run)"

    def kill(self) -> None:
        process = self._process()
        if process is not None:
            process.kill()

    def terminate(self, wait: float) -> None:
        """Ask (SHUTDOWN: finalizers run), wait up to ``wait`` seconds, then kill by pid."""
        self.send((protocol.SHUTDOWN, None))
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


def wait_or_kill(
    popen: subprocess.Popen[bytes], wait: float, kill: Callable[[], None] | None = None
) -> None:
    """Wait up to ``wait`` seconds for the process, then kill it (``kill``, by default SIGKILL
    to that pid) and wait again, bounded."""
    try:
        popen.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        (kill or popen.kill)()
        try:
            popen.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"pytest-reuse-env: pid {popen.pid} did not die after SIGKILL\n")


def spawn_daemon(
    registry_dir: Path, replica_id: str, cwd: str, log_path: str, environ: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a detached replica: its own session, stdin from /dev/null, output to its log."""
    # It serves every xdist worker in turn, so it is none of them.
    env = {k: v for k, v in environ.items() if not k.startswith("PYTEST_XDIST_")}
    bootstrap = (
        f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
        "from pytest_reuse_env.replica.daemon import main; sys.exit(main())"
    )
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", bootstrap, str(registry_dir), replica_id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=cwd,
            env=env,
            start_new_session=True,  # no controlling terminal: Ctrl-C there does not reach it
            close_fds=True,
        )
