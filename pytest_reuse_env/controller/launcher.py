"""Where an environment's next replica comes from.

- ``scope="run"``: a new execnet popen gateway of this process.
- a policy whose hosts are configured (``reuse_hosts``, ``--reuse-tx``, ``hosts=GROUP``): a new
  replica on the host of that group with the most free capacity (``hosts.py``), run-scoped
  whatever the policy's scope; with ``--reuse-rsync`` the rootdir is sent there first.
- ``scope="global"``: a warm replica of the same environment leased from the project's registry
  (attached, not started), else a new detached replica if the policy's ``max`` across every run
  of the project allows one, else none for now (the environment asks again later).

The environment of a global replica is keyed by the policy and the fingerprint of what the run
would build (interpreter, installed distributions, shaping options, ini, environment variables);
a replica whose imported project files changed since it imported them, or that lacks a test of
this run, is stale: the controller retires it and the launcher starts a fresh one.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final, final

import execnet
import psutil
import pytest

from pytest_reuse_env import fingerprint, protocol
from pytest_reuse_env import hostspec as hosts
from pytest_reuse_env.controller.launch.hosts import RemoteLink
from pytest_reuse_env.controller.launch.link import DaemonLink, PopenLink, spawn_daemon
from pytest_reuse_env.controller.replica import Replica, ReplicaState
from pytest_reuse_env.options import ReuseSettings
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.registry import Registry, RegistryError, ReplicaRecord, new_replica_id

#: Options that a replica must not inherit: selection, stopping and reporting are the
#: controller's, and xdist must not start inside a replica.
REPLICA_OPTION_OVERRIDES: Final[dict[str, Any]] = {
    "keyword": "",
    "markexpr": "",
    "lf": False,
    "failedfirst": False,
    "newfirst": False,
    "stepwise": False,
    "stepwise_skip": False,
    "maxfail": 0,
    "deselect": [],
    "xmlpath": None,
    "usepdb": False,
    "trace": False,
    "collectonly": False,
    "numprocesses": None,
    "maxprocesses": None,
    "dist": "no",
    "tx": [],
    "looponfail": False,
}

#: Options that do not change what a replica collects or how its fixtures behave: a run that
#: differs from the replica's first run only in these may use it warm.
NOT_SHAPING: Final = frozenset(
    {
        *REPLICA_OPTION_OVERRIDES,
        "file_or_dir",
        "basetemp",
        "verbose",
        "quiet",
        "reportchars",
        "tbstyle",
        "showlocals",
        "color",
        "code_highlight",
        "durations",
        "durations_min",
        "showcapture",
        "fulltrace",
        "exitfirst",
        "last_failed_no_failures",
        "cacheshow",
        "cacheclear",
        "pastebin",
        "junitprefix",
        "help",
        "version",
        "showfixtures",
        "show_fixtures_per_test",
        "reuse",
        "reuse_report",
        "reuse_cli_all",
        "reuse_status",
        "reuse_stop",
        "reuse_fresh",
        # pytest-xdist's distribution settings: its workers set some of them themselves.
        "loadgroup",
        "distload",
        "maxworkerrestart",
        "maxschedchunk",
        "testrunuid",
        "px",
        "rsyncdir",
        "rsyncignore",
    }
)


def _own_code() -> str:
    """This package's own source files as they are now: a warm replica runs the plugin code it
    was started with, so an editable install edited since (same version number) must not be
    attached to, lest the two sides speak different protocols."""
    package = Path(__file__).resolve().parents[1]
    files = []
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        files.append(f"{path.relative_to(package)}:{stat.st_mtime_ns}:{stat.st_size}")
    return (
        "pytest-reuse-env " + hashlib.blake2b("\n".join(files).encode(), digest_size=8).hexdigest()
    )


def stale_reason(replica: Replica, ready: Any, wanted: list[str]) -> str | None:
    """Why a warm replica this run attached may not serve it, or None: a project file it
    imported changed since, or it did not collect a test of this run."""
    if not replica.attached:
        return None
    changed = ready["changed_files"]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]} changed{more}"
    missing = [nodeid for nodeid in wanted if nodeid not in replica.nodeids]
    if missing:
        return f"it did not collect {missing[0]}: a new or renamed test"
    return None


def registry_directory(config: pytest.Config) -> Path:
    """``<cache_dir>/reuse``, where pytest's cache lives (``.pytest_cache`` by default)."""
    try:
        configured = str(config.getini("cache_dir"))
    except ValueError:  # -p no:cacheprovider: the key is not even declared
        configured = ".pytest_cache"
    cache_dir = Path(os.path.expanduser(os.path.expandvars(configured)))
    return (cache_dir if cache_dir.is_absolute() else config.rootpath / cache_dir) / "reuse"


def shaping_options(config: pytest.Config) -> list[str]:
    """The parsed options that shape collection and fixtures, as sorted ``name=value``."""
    return sorted(
        f"{name}={value!r}"
        for name, value in vars(config.option).items()
        if name not in NOT_SHAPING and not name.startswith("reuse_")
    )


@final
class ReplicaLauncher:
    """Makes ``Replica`` handles for environments."""

    def __init__(
        self,
        config: pytest.Config,
        events: queue.Queue[Any],
        group: execnet.Group,
        *,
        settings: ReuseSettings,
    ) -> None:
        self.config = config
        self.events = events
        self.group = group
        self.settings = settings
        self.start_timeout = settings.start_timeout
        self.env_vars = settings.env_vars
        self._next_id = 0
        self._registry: Registry | None = None
        #: Why global replicas cannot be used in this run (then they live for the run only).
        self.registry_problem: str | None = None
        self._fingerprint: dict[str, str] | None = None
        #: Environment keys this process has a waiting marker for.
        self._waiting: set[str] = set()
        #: Replicas on configured hosts, and the hosts dropped for this run.
        self.hosts: hosts.HostPool[Replica] = hosts.HostPool(
            lambda r: r.state is not ReplicaState.DEAD
        )
        self._files: dict[str, str] | None = None
        self._test_files: list[Path] = []
        self._synced: dict[hosts.HostSpec, threading.Lock] = {}
        self._synced_done: set[hosts.HostSpec] = set()

    # -- global environments -----------------------------------------------------------------

    @property
    def registry(self) -> Registry | None:
        if self._registry is None and self.registry_problem is None:
            try:
                self._registry = Registry(registry_directory(self.config))
            except RegistryError as exc:
                self.registry_problem = str(exc)
        return self._registry

    def fingerprint(self) -> dict[str, str]:
        if self._fingerprint is None:
            inipath = self.config.inipath
            self._fingerprint = fingerprint.environment_fingerprint(
                python=sys.executable,
                args=shaping_options(self.config),
                rootdir=str(self.config.rootpath),
                inifile=str(inipath) if inipath else None,
                env=os.environ,
                env_vars=self.env_vars,
                plugins=[_own_code()],
            )
        return self._fingerprint

    def environment_key(self, policy: ReusePolicy) -> str:
        return fingerprint.environment_key(policy.describe(), self.fingerprint())

    # -- launching ---------------------------------------------------------------------------

    def launch(self, name: str, policy: ReusePolicy, key: str | None) -> Replica | None:
        """A replica for the environment, or None when ``max`` is reached across runs (or
        every host of its group is full)."""
        targets = self.settings.hosts.hosts_for(policy.hosts)
        if targets is not None:
            return self._launch_remote(name, policy, targets)
        if key is None or self.registry is None:
            return self._launch_popen(name, policy)
        registry = self.registry
        record = registry.lease(key, os.getpid())
        if record is not None:
            link = DaemonLink(
                record.socket,
                registry.token(),
                record.pid,
                record.create_time,
                None,
                connect_timeout=10.0,
            )
            replica = Replica(record.replica_id, name, self.events, link, persistent=True)
            replica.attach(record.log)
            return replica
        replica_id = new_replica_id()
        now = time.time()
        me = psutil.Process()
        record = ReplicaRecord(
            replica_id=replica_id,
            environment=key,
            policy=policy.describe(),
            fingerprint=self.fingerprint(),
            pid=os.getpid(),
            socket=registry.socket_path(replica_id),
            log=registry.log_path(replica_id),
            state="starting",
            lease_owner=os.getpid(),
            lease_owner_started=me.create_time(),
            started_at=now,
            last_used=now,
            tests_served=0,
            create_time=me.create_time(),
        )
        if not registry.reserve(key, policy.max_replicas, record):
            return None
        popen = spawn_daemon(
            registry.directory,
            replica_id,
            str(self.config.invocation_params.dir),
            record.log,
            dict(os.environ),
        )
        created = psutil.Process(popen.pid).create_time()
        registry.update(replica_id, pid=popen.pid, create_time=created, state="leased")
        link = DaemonLink(
            record.socket,
            registry.token(),
            popen.pid,
            created,
            popen,
            connect_timeout=self.start_timeout,
        )
        replica = Replica(replica_id, name, self.events, link, persistent=True)
        replica.start(
            self._start_payload(replica_id, policy, registry.directory / "tmp", record.log)
        )
        return replica

    def _launch_popen(
        self, name: str, policy: ReusePolicy, events: queue.Queue[Any] | None = None
    ) -> Replica:
        replica_id = f"r{self._next_id}"
        self._next_id += 1
        root = self.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        link = PopenLink(self.group, replica_id)
        replica = Replica(replica_id, name, events or self.events, link)
        replica.start(
            self._start_payload(replica_id, policy, root, str(root / f"replica-{replica_id}.log"))
        )
        return replica

    # -- configured hosts ----------------------------------------------------------------------

    def remote(self, policy: ReusePolicy) -> bool:
        """Whether the policy's replicas run on configured hosts (then they are run-scoped)."""
        return self.settings.hosts.hosts_for(policy.hosts) is not None

    def set_test_files(self, paths: list[Path]) -> None:
        """The collected test modules: a host's copy of the project must match them."""
        self._test_files = paths
        self._files = None

    def project_files(self) -> dict[str, str]:
        if self._files is None:
            conftests = [
                str(getattr(plugin, "__file__", ""))
                for plugin in self.config.pluginmanager.get_plugins()
                if os.path.basename(str(getattr(plugin, "__file__", ""))) == "conftest.py"
            ]
            self._files = hosts.project_files(
                self.config.rootpath, self._test_files, conftests, self.config.inipath
            )
        return self._files

    def _launch_remote(
        self, name: str, policy: ReusePolicy, targets: tuple[hosts.HostSpec, ...]
    ) -> Replica | None:
        host = self.hosts.pick(targets)
        if host is None:
            return None
        number = self._next_id
        self._next_id += 1
        replica_id = f"r{number}@{host.name}"
        root = self.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        table = self.settings.hosts
        prepare = None
        if table.rsync and host.relocated:
            prepare = lambda gateway: self._rsync_once(host, gateway)  # noqa: E731
        link = RemoteLink(
            self.group,
            f"r{number}",
            host,
            timeout=table.timeout,
            ssh_log=str(root / f"ssh-r{number}.log") if host.kind == "ssh" else None,
            prepare=prepare,
        )
        replica = Replica(replica_id, name, self.events, link)
        payload = self._start_payload(
            replica_id, policy, root, str(root / f"replica-r{number}.log")
        )
        payload["host"] = protocol.HostPayload(
            name=host.name,
            spec=host.spec,
            controller_root=str(self.config.rootpath),
            relocated=host.relocated,
            same_machine=host.same_machine,
            files=self.project_files(),
            environ=hosts.forwarded_environ(os.environ, self.env_vars),
        )
        self.hosts.add(host, replica)
        replica.start(payload)
        if not host.same_machine:
            replica.log_path = None  # it is on the host, out of reach of crash reports
        return replica

    def _rsync_once(self, host: hosts.HostSpec, gateway: Any) -> None:
        """Send the rootdir to the host's chdir once per run (later replicas wait for it)."""
        lock = self._synced.setdefault(host, threading.Lock())
        with lock:
            if host in self._synced_done:
                return
            rsync = _ProjectRSync(str(self.config.rootpath), verbose=False)
            rsync.add_target(gateway, ".")  # the gateway's working directory is the chdir
            rsync.send()
            self._synced_done.add(host)

    def host_failed(self, replica: Replica, reason: str) -> tuple[str, bool] | None:
        """A replica on a configured host could not start: drop the host for this run.

        Returns a line for the user and whether the group has hosts left; None for a replica
        not on a configured host.
        """
        host = self.hosts.host_of(replica)
        if host is None:
            return None
        # One line: a host's own message, or the last line (the exception) of a traceback.
        lines = [line for line in reason.strip().splitlines() if line.strip()] or ["unknown"]
        why = lines[-1].strip()
        self.hosts.drop(host, why)
        group = self.settings.hosts.groups.get(host.group, ())
        left = self.hosts.usable(group)
        line = f"{why}; host {host.name} is dropped for this run" + (
            f" and its share of the work goes to {', '.join(h.name for h in left)}"
            if left
            else f": no host of group {host.group!r} is left"
        )
        return line, bool(left)

    def _start_payload(
        self, replica_id: str, policy: ReusePolicy, temp_root: Path, log_path: str
    ) -> Any:
        basetemp = temp_root / f"replica-{replica_id}"
        # pytest creates a given --basetemp but not its parents.
        temp_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {
            "replica_id": replica_id,
            # A replica's stdout is not the user's terminal: it always captures (the last
            # --capture wins; the option must be parsed, it decides before configure).
            "args": [str(a) for a in self.config.invocation_params.args]
            + (["--capture=fd"] if self.config.option.capture == "no" else []),
            "invocation_dir": str(self.config.invocation_params.dir),
            "sys_path": list(sys.path),
            "basetemp": str(basetemp),
            "log_path": log_path,
            "prewarm": list(policy.prewarm),
            "hygiene": {
                "leaks": self.settings.leaks,
                "ignore": list(self.settings.leaks_ignore),
                "memory_mib": self.settings.leak_memory_mib,
                "max_tests": policy.max_tests_per_replica,
                "max_memory_mib": policy.max_memory_per_replica,
            },
            "teardown_timeout": self.settings.teardown_timeout,
            "concurrency": policy.concurrency,
            "timeout": policy.timeout,
            "policy": policy.describe(),
            "option_overrides": dict(
                REPLICA_OPTION_OVERRIDES,
                basetemp=str(basetemp),
            ),
        }

    # -- waiting for capacity (pytest -n N, concurrent runs) -----------------------------------

    def _waiting_marker(self, key: str, pid: int) -> Path | None:
        if self.registry is None:
            return None
        return self.registry.directory / "waiting" / f"{key}.{pid}"

    def mark_waiting(self, key: str, waiting: bool) -> None:
        """Say (with a file in the registry) that this process wants a replica of ``key``
        that ``max`` forbids, so a holder that could spare one hands it back."""
        if waiting == (key in self._waiting):
            return
        marker = self._waiting_marker(key, os.getpid())
        if marker is None:
            return
        try:
            if waiting:
                marker.parent.mkdir(mode=0o700, exist_ok=True)
                marker.touch()
                self._waiting.add(key)
            else:
                marker.unlink(missing_ok=True)
                self._waiting.discard(key)
        except OSError:
            pass  # only an optimisation: without it, waiters wait for the holder's run to end

    def others_waiting(self, key: str) -> bool:
        """True if another live pytest process waits for a replica of ``key``."""
        marker = self._waiting_marker(key, os.getpid())
        if marker is None:
            return False
        try:
            names = os.listdir(marker.parent)
        except OSError:
            return False
        for name in names:
            prefix, _, pid = name.rpartition(".")
            if prefix == key and pid.isdigit() and int(pid) != os.getpid():
                if psutil.pid_exists(int(pid)):
                    return True
                with contextlib.suppress(OSError):
                    os.unlink(marker.parent / name)  # its process is gone
        return False

    def launch_fresh(self, name: str, policy: ReusePolicy, events: queue.Queue[Any]) -> Replica:
        """A new run-scoped replica reporting to ``events``, whatever the policy's scope."""
        return self._launch_popen(name, policy, events)

    def release(self, replica: Replica) -> None:
        """End of the run for a persistent replica: back to idle in the registry, disconnect."""
        if self.registry is not None:
            try:
                self.registry.release(replica.id, tests_served_delta=replica.tests_run)
            except RegistryError:
                pass  # the replica marks itself idle when the connection drops, too
        replica.release()


class _ProjectRSync(execnet.RSync):
    """execnet's RSync without version control, caches and virtual environments."""

    def filter(self, path: str) -> bool:
        name = os.path.basename(path)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in hosts.RSYNC_IGNORE):
            return False
        return not os.path.isfile(os.path.join(path, "pyvenv.cfg"))
