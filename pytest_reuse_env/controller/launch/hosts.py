"""How the controller reaches a replica on a configured host (``reuse_hosts``): an execnet
ssh, socket or popen gateway, bounded at every step (see ``transport.py`` for the local links).
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import Any, final

import execnet
import psutil

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.launch.link import (
    END,
    EXIT_WAIT_SECONDS,
    KILL_WAIT_SECONDS,
    Deliver,
    Outbox,
    describe_exit,
    wait_or_kill,
)
from pytest_reuse_env.hostspec import HostSpec

# On another host the plugin must be installed: its absence is an error naming the host and the
# import, not a hang.
_REMOTE_BOOTSTRAP = """
import os, sys
try:
    from pytest_reuse_env.replica.session import serve
except ImportError as exc:
    channel.send(("start_failed", {"pid": os.getpid(), "traceback": (
        "host %s: cannot import %r with %s (%s); install pytest-reuse-env (with pytest) in "
        "that interpreter" % (HOST_NAME, exc.name, sys.executable, exc))}))
else:
    serve(channel)
"""


class HostUnreachable(Exception):
    """A host could not be reached, bootstrapped or sent the project in time."""


@final
class RemoteLink:
    """A replica on a configured host: an execnet ssh, socket or popen gateway.

    ``makegateway`` for ssh can block (a host that accepts and never answers): it runs on a
    thread bounded by ``timeout``, and on timeout the launch's own process (found by the
    ``-X pytest_reuse_launch=...`` marker on its command line) is killed.
    """

    def __init__(
        self,
        group: execnet.Group,
        gateway_id: str,
        host: HostSpec,
        *,
        timeout: float,
        ssh_log: str | None = None,
        prepare: Callable[[Any], None] | None = None,
    ) -> None:
        self._group = group
        self._gateway_id = gateway_id
        self._host = host
        self._timeout = timeout
        self._ssh_log = ssh_log
        #: Runs on the new gateway before the replica starts (``--reuse-rsync``).
        self._prepare = prepare
        self._marker = f"pytest_reuse_launch={uuid.uuid4().hex}"
        self._gateway: Any = None
        self._outbox = Outbox()
        self.pid: int | None = None

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        """Connect on a thread; returns at once (messages sent meanwhile wait)."""
        threading.Thread(
            target=self._connect,
            args=(first, deliver),
            daemon=True,
            name=f"reuse-host-{self._host.name}",
        ).start()

    def _connect(self, first: protocol.Message, deliver: Deliver) -> None:
        host = self._host
        try:
            spec = host.gateway_spec(self._gateway_id, self._marker, self._ssh_log)
            self._gateway = self._bounded(lambda: self._group.makegateway(spec), "reach")
            popen = self._popen()
            self.pid = popen.pid if popen is not None else None
            if self._prepare is not None:
                prepare, gateway = self._prepare, self._gateway
                self._bounded(lambda: prepare(gateway), "send the project to")
            bootstrap = _REMOTE_BOOTSTRAP.replace("HOST_NAME", repr(host.name))
            channel = self._gateway.remote_exec(bootstrap)
        except HostUnreachable as exc:
            failure = {
                "pid": 0,
                "traceback": f"could not reach host {host.name} ({host.spec}, {host.source}): "
                f"{exc}",
            }
            deliver((protocol.START_FAILED, failure))
            deliver(END)
            return
        channel.setcallback(deliver, endmarker=END)
        try:
            channel.send(first)
        except (OSError, EOFError, ValueError):
            pass  # the channel's end marker follows
        self._outbox.connected(channel)

    def _bounded(self, work: Callable[[], Any], what: str) -> Any:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = work()
            except BaseException as exc:  # any failure is the host's, reported as text
                outcome["error"] = exc

        worker = threading.Thread(target=run, daemon=True, name="reuse-host-bounded")
        worker.start()
        worker.join(self._timeout)
        if worker.is_alive():
            killed = self._kill_launch()
            worker.join(KILL_WAIT_SECONDS)
            raise HostUnreachable(
                f"could not {what} it within {self._timeout:g} s (reuse_host_timeout)"
                + (f"; killed pid {', '.join(map(str, killed))}" if killed else "")
                + self._ssh_log_tail()
            )
        if "error" in outcome:
            error = outcome["error"]
            ssh = self._ssh_log_tail()
            if type(error).__name__ == "HostNotFound" and ssh:  # its text is ssh's arguments
                raise HostUnreachable(f"could not {what} it{ssh}")
            raise HostUnreachable(f"could not {what} it: {type(error).__name__}: {error}{ssh}")
        return outcome.get("value")

    def _kill_launch(self) -> list[int]:
        """SIGKILL this launch's ssh or interpreter process, found by its marker."""
        killed = []
        for child in psutil.Process().children(recursive=True):
            try:
                if any(self._marker in part for part in child.cmdline()):
                    child.kill()
                    killed.append(child.pid)
            except psutil.Error:
                continue
        return killed

    def _ssh_log_tail(self) -> str:
        if self._ssh_log is None:
            return ""
        try:
            with open(self._ssh_log, encoding="utf-8", errors="replace") as log:
                lines = [line.strip() for line in log if line.strip()]
        except OSError:
            return ""
        return f" (ssh: {' / '.join(lines[-3:])})" if lines else ""

    def _popen(self) -> subprocess.Popen[bytes] | None:
        io = getattr(self._gateway, "_io", None)
        popen: subprocess.Popen[bytes] | None = getattr(io, "popen", None)
        return popen

    def send(self, message: protocol.Message) -> bool:
        return self._outbox.send(message)

    def exit_description(self, wait: float) -> str:
        if self._gateway is None:
            return "never started"
        popen = self._popen()
        detail = "the connection closed"
        if popen is not None:
            try:
                code = describe_exit(popen.wait(timeout=wait))
            except subprocess.TimeoutExpired:
                return "still running"
            if self._host.kind == "popen":
                return code
            detail = f"ssh ended with {code}{self._ssh_log_tail()}"
        return f"host {self._host.name} lost: {detail}"

    def kill(self) -> None:
        """SIGKILL the replica: over the gateway (a new thread there), then the local process."""
        gateway = self._gateway
        if gateway is None:
            self._kill_launch()
            return
        popen = self._popen()
        if self._host.kind != "popen":
            try:
                gateway.remote_exec("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
            except Exception:  # the connection is gone: killing the ssh process ends it
                pass
            if popen is not None:
                try:
                    popen.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        if popen is not None and popen.poll() is None:
            popen.kill()

    def terminate(self, wait: float) -> None:
        """Ask (gateway exit), wait up to ``wait`` seconds, then kill."""
        gateway = self._gateway
        if gateway is None:
            self._kill_launch()
            return
        try:
            gateway.exit()
        except (OSError, EOFError, ValueError):
            pass
        popen = self._popen()
        if popen is None:
            gateway.join(timeout=wait)
            return
        wait_or_kill(popen, wait, kill=self.kill)

    def release(self) -> None:
        self.terminate(EXIT_WAIT_SECONDS)  # remote replicas live for the run
