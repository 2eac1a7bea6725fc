"""Replicas on configured hosts (``reuse_hosts``, ``--reuse-tx``, ``hosts=GROUP``): an execnet
ssh, socket or popen gateway per replica, bounded at every step; run-scoped whatever the
policy's scope.

A new replica goes to the host of its group with the most free capacity; a host that cannot
start one is dropped for the run and the others take its share. With ``--reuse-rsync`` the
rootdir is sent to a host's ``chdir`` first, once per run. The bootstrap checks that the plugin
can be imported there, then calls the replica side's ``serve(channel)``, which relocates the
start payload to the host's paths (``hostspec.relocate``).
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

import execnet
import pytest

from pytest_reuse_env import hostspec, protocol
from pytest_reuse_env.controller.launch.base import END, STILL_RUNNING, Deliver, Outbox, Starter
from pytest_reuse_env.controller.launch.process import (
    EXIT_WAIT_SECONDS,
    KILL_WAIT_SECONDS,
    describe_exit,
    gateway_popen,
    kill_marked,
    wait_exit,
    wait_or_kill,
)
from pytest_reuse_env.controller.replica import Replica, ReplicaState
from pytest_reuse_env.hostspec import HostSpec, HostTable
from pytest_reuse_env.policy import ReusePolicy

# On another host the plugin must be installed: its absence is an error naming the host and the
# import, not a hang.
_BOOTSTRAP = """
import os, sys
try:
    from pytest_reuse_env.replica.bootstrap import serve
except ImportError as exc:
    channel.send(("start_failed", {"pid": os.getpid(), "traceback": (
        "host %s: cannot import %r with %s (%s); install pytest-reuse-env (with pytest) in "
        "that interpreter" % (HOST_NAME, exc.name, sys.executable, exc))}))
else:
    serve(channel)
"""


class HostUnreachable(Exception):
    """A host could not be reached, bootstrapped or sent the project in time."""


#: How execnet fails when ssh has already exited: it reads the end of the pipe (HostNotFound,
#: whose text is ssh's arguments) or, just as often, writes its bootstrap into a closed one.
_SSH_GONE: Final = ("HostNotFound", "BrokenPipeError", "ConnectionResetError", "EOFError")


def unreachable(what: str, error: BaseException, ssh: str) -> str:
    """Why a host could not be reached: what ssh said (``ssh``, its log's tail, from " ("),
    rather than how execnet noticed that ssh had gone, which depends on timing."""
    if ssh and type(error).__name__ in _SSH_GONE:
        return f"could not {what} it{ssh}"
    return f"could not {what} it: {type(error).__name__}: {error}{ssh}"


@final
class HostLink:
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
        self.from_spare = False

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
            bootstrap = _BOOTSTRAP.replace("HOST_NAME", repr(host.name))
            channel = self._gateway.remote_exec(bootstrap)
        except HostUnreachable as exc:
            deliver(
                protocol.start_failed(
                    0, f"could not reach host {host.name} ({host.spec}, {host.source}): {exc}"
                )
            )
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
            raise HostUnreachable(unreachable(what, outcome["error"], self._ssh_log_tail()))
        return outcome.get("value")

    def _kill_launch(self) -> list[int]:
        """SIGKILL this launch's ssh or interpreter process, found by its marker."""
        return kill_marked(self._marker)

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
        return gateway_popen(self._gateway)

    def send(self, message: protocol.Message) -> bool:
        return self._outbox.send(message)

    def exit_description(self, wait: float) -> str:
        if self._gateway is None:
            return "never started"
        popen = self._popen()
        detail = "the connection closed"
        if popen is not None:
            try:
                ended = describe_exit(wait_exit(popen, wait))
            except subprocess.TimeoutExpired:
                return STILL_RUNNING
            if self._host.kind == "popen":
                return ended
            detail = f"ssh ended with {ended}{self._ssh_log_tail()}"
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

    def let_exit(self) -> None:
        """Gateway exit: the worker ends once ``serve`` has returned."""
        if self._gateway is not None:
            try:
                self._gateway.exit()
            except (OSError, EOFError, ValueError):
                pass

    def terminate(self, wait: float) -> None:
        """Ask (gateway exit), wait up to ``wait`` seconds, then kill."""
        gateway = self._gateway
        if gateway is None:
            self._kill_launch()
            return
        self.let_exit()
        popen = self._popen()
        if popen is None:
            gateway.join(timeout=wait)
            return
        wait_or_kill(popen, wait, kill=self.kill)

    def release(self) -> None:
        self.terminate(EXIT_WAIT_SECONDS)  # replicas on hosts live for the run


@final
class HostStrategy:
    """Starts replicas on the configured hosts, run-scoped; drops a host that cannot start one."""

    def __init__(
        self,
        starter: Starter,
        group: execnet.Group,
        config: pytest.Config,
        table: HostTable,
        run_temp: Callable[[], Path],
        env_vars: tuple[str, ...] | list[str],
    ) -> None:
        self._starter = starter
        self._group = group
        self._config = config
        self.table = table
        self._run_temp = run_temp
        self._env_vars = env_vars
        #: Replicas on configured hosts, and the hosts dropped for this run.
        self.pool: hostspec.HostPool[Replica] = hostspec.HostPool(
            lambda r: r.state is not ReplicaState.ENDED
        )
        self._files: dict[str, str] | None = None
        self._test_files: list[Path] = []
        self._synced: dict[HostSpec, threading.Lock] = {}
        self._synced_done: set[HostSpec] = set()

    def serves(self, policy: ReusePolicy) -> bool:
        """Whether the policy's replicas run on configured hosts."""
        return self.table.hosts_for(policy.hosts) is not None

    def launch(self, name: str, policy: ReusePolicy, key: str | None = None) -> Replica | None:
        targets = self.table.hosts_for(policy.hosts)
        assert targets is not None, "the launcher asks only for a policy with hosts"
        host = self.pool.pick(targets)
        if host is None:
            return None
        number = self._starter.local_number()
        root = self._run_temp()
        prepare = None
        if self.table.rsync and host.relocated:
            prepare = lambda gateway: self._rsync_once(host, gateway)  # noqa: E731
        link = HostLink(
            self._group,
            f"r{number}",
            host,
            timeout=self.table.timeout,
            ssh_log=str(root / f"ssh-r{number}.log") if host.kind == "ssh" else None,
            prepare=prepare,
        )
        payload = protocol.HostPayload(
            name=host.name,
            spec=host.spec,
            controller_root=str(self._config.rootpath),
            relocated=host.relocated,
            same_machine=host.same_machine,
            files=self.project_files(),
            environ=hostspec.forwarded_environ(os.environ, self._env_vars),
        )
        replica_id = f"r{number}@{host.name}"
        replica = self._starter.start(
            replica_id,
            name,
            link,
            policy,
            log_path=str(root / f"replica-r{number}.log"),
            basetemp=str(root / f"replica-{replica_id}"),
            host=payload,
        )
        self.pool.add(host, replica)
        if not host.same_machine:
            replica.log_out_of_reach()
        return replica

    # -- the project's files -------------------------------------------------------------------

    def set_test_files(self, paths: list[Path]) -> None:
        """The collected test modules: a host's copy of the project must match them."""
        self._test_files = paths
        self._files = None

    def project_files(self) -> dict[str, str]:
        if self._files is None:
            conftests = [
                str(getattr(plugin, "__file__", ""))
                for plugin in self._config.pluginmanager.get_plugins()
                if os.path.basename(str(getattr(plugin, "__file__", ""))) == "conftest.py"
            ]
            self._files = hostspec.project_files(
                self._config.rootpath, self._test_files, conftests, self._config.inipath
            )
        return self._files

    def _rsync_once(self, host: HostSpec, gateway: Any) -> None:
        """Send the rootdir to the host's chdir once per run (later replicas wait for it)."""
        lock = self._synced.setdefault(host, threading.Lock())
        with lock:
            if host in self._synced_done:
                return
            rsync = _ProjectRSync(str(self._config.rootpath), verbose=False)
            rsync.add_target(gateway, ".")  # the gateway's working directory is the chdir
            rsync.send()
            self._synced_done.add(host)

    # -- a host that fails ---------------------------------------------------------------------

    def host_failed(self, replica: Replica, reason: str) -> tuple[str, bool] | None:
        """A replica on a configured host could not start: drop the host for this run.

        Returns a line for the user and whether the group has hosts left; None for a replica
        not on a configured host.
        """
        host = self.pool.host_of(replica)
        if host is None:
            return None
        # One line: a host's own message, or the last line (the exception) of a traceback.
        lines = [line for line in reason.strip().splitlines() if line.strip()] or ["unknown"]
        why = lines[-1].strip()
        self.pool.drop(host, why)
        group = self.table.groups.get(host.group, ())
        left = self.pool.usable(group)
        line = f"{why}; host {host.name} is dropped for this run" + (
            f" and its share of the work goes to {', '.join(h.name for h in left)}"
            if left
            else f": no host of group {host.group!r} is left"
        )
        return line, bool(left)


class _ProjectRSync(execnet.RSync):
    """execnet's RSync without version control, caches and virtual environments."""

    def filter(self, path: str) -> bool:
        name = os.path.basename(path)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in hostspec.RSYNC_IGNORE):
            return False
        return not os.path.isfile(os.path.join(path, "pyvenv.cfg"))
