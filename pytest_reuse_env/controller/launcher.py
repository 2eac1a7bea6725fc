"""Where an environment's next replica comes from: the launcher picks a launch strategy
(``launch/``) and does what is common to all of them (ids, the start payload, the handle, the
registry, attaching).

- a policy whose hosts are configured (``reuse_hosts``, ``--reuse-tx``, ``hosts=GROUP``): a new
  replica on a configured host (``launch/hosts.py``), run-scoped whatever the policy's scope.
- ``scope="global"`` with a usable registry: a warm replica leased from the project's registry,
  else a new detached one within ``max`` across runs, else none for now (the environment asks
  again later) (``launch/daemon.py``).
- otherwise (``scope="run"``): a new execnet popen gateway of this process (``launch/popen.py``).

The environment of a global replica is keyed by the policy and the fingerprint of what the run
would build (interpreter, installed distributions, shaping options, ini, environment variables);
a replica whose imported project files changed since it imported them, or that lacks a test of
this run, is stale: the controller retires it and the launcher starts a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

import execnet
import pytest

from pytest_reuse_env import fingerprint, protocol
from pytest_reuse_env.controller.launch.base import Link, Strategy
from pytest_reuse_env.controller.launch.collect import FileLists
from pytest_reuse_env.controller.launch.daemon import DaemonStrategy
from pytest_reuse_env.controller.launch.hosts import HostStrategy
from pytest_reuse_env.controller.launch.popen import PopenStrategy
from pytest_reuse_env.controller.nodes import replica_args
from pytest_reuse_env.controller.registry_access import RegistryAccess
from pytest_reuse_env.controller.replica import Replica
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.registry import Registry, RegistryError
from pytest_reuse_env.settings import ReuseSettings
from pytest_reuse_env.warm import registry_directory

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
    # Watch mode is the controller's: a replica serves rounds as it serves runs.
    "reuse_watch": False,
    "reuse_watch_affected": False,
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
        "reuse_watch",
        "reuse_watch_affected",
        # pytest-xdist's distribution settings: its workers set some of them themselves.
        "loadgroup",
        "distload",
        "maxworkerrestart",
        "maxschedchunk",
        "testrunuid",
        "px",
        "rsyncdir",
        "rsyncignore",
        # pytest-randomly's seed reaches every lease in its workerinput.
        "randomly_seed",
    }
)


def _own_code() -> str:
    """This package's own source files as they are now: a warm replica runs the plugin code it
    was started with, so an editable install edited since (same version number) must not be
    attached to, lest the two sides speak different protocols."""
    package = Path(__file__).resolve().parents[1]
    files = []
    for path in sorted(package.rglob("*.py")):
        info = path.stat()
        files.append(f"{path.relative_to(package)}:{info.st_mtime_ns}:{info.st_size}")
    return (
        "pytest-reuse-env " + hashlib.blake2b("\n".join(files).encode(), digest_size=8).hexdigest()
    )


def stale_reason(replica: Replica, ready: Any, wanted: list[str]) -> str | None:
    """Why a warm replica this run attached may not serve it, or None: a project file it
    imported changed since, its collection of a test file failed where this process's did not,
    or it did not collect a test of this run."""
    if not replica.attached and "reload" not in ready:  # a fresh start, not a refresh
        return None
    reload = ready.get("reload") or {}
    if reload.get("stale"):
        return str(reload["stale"])
    changed = ready["changed_files"]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]} changed{more}"
    missing = [nodeid for nodeid in wanted if nodeid not in replica.nodeids]
    if missing:
        failure = collect_failure(missing[0], ready.get("collect_errors") or [])
        return failure or f"it did not collect {missing[0]}: a new or renamed test"
    return None


def collect_failure(nodeid: str, errors: list[str]) -> str | None:
    """The replica's own collection error (``"nodeid: longrepr"``) that left ``nodeid``
    out, named by where it happened and its last line; None if none covers it."""
    path = nodeid.split("::", 1)[0]
    for error in errors:
        where, _, text = error.partition(": ")
        if where in ("", "<session>") or path == where or path.startswith(where + "/"):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            last = lines[-1].removeprefix("E").strip() if lines else "no details"
            return f"collecting {where} failed in it, not here: {last}"
    return None


def describe_main() -> protocol.MainPayload:
    """This process's ``__main__`` and ``sys.argv``: a replica makes its own look the same
    (``replica/main_module.py``)."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return {
        "spec": getattr(spec, "name", None),
        "file": getattr(main, "__file__", None),
        "argv": list(sys.argv),
    }


def shaping_options(config: pytest.Config) -> list[str]:
    """The parsed options that shape collection and fixtures, as sorted ``name=value``."""
    return sorted(
        f"{name}={value!r}"
        for name, value in vars(config.option).items()
        if name not in NOT_SHAPING and not name.startswith("reuse_")
    )


@final
class ReplicaLauncher:
    """Makes ``Replica`` handles for environments, through the strategy each policy needs."""

    def __init__(
        self,
        config: pytest.Config,
        events: queue.SimpleQueue[Any],
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
        self._next_number = 0
        #: The registry, until a problem with it makes this run do without (scope=run).
        self.registry_access = RegistryAccess(lambda: registry_directory(config))
        self._fingerprint: dict[str, str] | None = None
        #: Environment keys this process has a waiting marker for.
        self._waiting: set[str] = set()
        self.popen = PopenStrategy(self, group, self._run_temp)
        self.hosts = HostStrategy(
            self, group, config, settings.hosts, self._run_temp, settings.env_vars
        )
        self._daemons: DaemonStrategy | None = None
        #: A lease's ``workerinput`` (replica id, replicas of its environment): see nodes.py.
        self.workerinput: Callable[[str, int], dict[str, Any]] = lambda replica_id, count: {}
        #: Replicas (max) of each environment by name, for ``workerinput``'s worker count.
        self._counts: dict[str, int] = {}
        #: Watch mode (``--reuse-watch``): run-scoped replicas catch up with edits on ATTACH.
        self.watching = False
        #: The test files each environment's run-scoped replicas collect (launch/collect.py).
        self.files = FileLists()

    def _run_temp(self) -> Path:
        """This run's basetemp, where run-scoped replicas keep theirs and their logs."""
        root: Path = self.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        return root

    # -- global environments -----------------------------------------------------------------

    @property
    def registry(self) -> Registry | None:
        return self.registry_access.registry

    @property
    def registry_problem(self) -> str | None:
        """Why global replicas cannot be used in this run (then they live for the run only)."""
        return self.registry_access.problem

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
        return fingerprint.environment_key(policy.identity(), self.fingerprint())

    # -- launching ---------------------------------------------------------------------------

    def strategy(self, policy: ReusePolicy, key: str | None) -> Strategy:
        """How the environment's next replica starts."""
        if self.hosts.serves(policy):
            return self.hosts
        registry = None if key is None else self.registry
        if registry is None:
            return self.popen
        if self._daemons is None:
            self._daemons = DaemonStrategy(
                self,
                registry,
                self.fingerprint,
                cwd=str(self.config.invocation_params.dir),
                start_timeout=self.start_timeout,
            )
        return self._daemons

    def launch(self, name: str, policy: ReusePolicy, key: str | None) -> Replica | None:
        """A replica for the environment, or None when ``max`` is reached across runs (or
        every host of its group is full)."""
        self._counts[name] = policy.max_replicas
        strategy = self.strategy(policy, key)
        if strategy is not self._daemons:
            return strategy.launch(name, policy, key)
        try:
            return strategy.launch(name, policy, key)
        except (RegistryError, OSError) as exc:
            # A lock, a read-only or full disk, a log or socket directory: do without.
            self.registry_access.give_up(exc)
            self._daemons = None
            return self.popen.launch(name, policy)

    def launch_fresh(
        self, name: str, policy: ReusePolicy, events: queue.SimpleQueue[Any]
    ) -> Replica:
        """A new run-scoped replica reporting to ``events``, whatever the policy's scope."""
        return self.popen.launch(name, policy, events=events)

    def on_hosts(self, policy: ReusePolicy) -> bool:
        """Whether the policy's replicas run on configured hosts (then they are run-scoped)."""
        return self.hosts.serves(policy)

    def host_failed(self, replica: Replica, reason: str) -> tuple[str, bool] | None:
        """See ``HostStrategy.host_failed``. Also a replica that could not start collecting
        only its tests' files: its environment then collects the whole run (``FileLists``),
        and starts another replica rather than fail its tests."""
        if self.files.start_failed(replica):
            return "", True  # said in the run's notes (FileLists.notes)
        return self.hosts.host_failed(replica, reason)

    # -- what every strategy shares (launch.base.Starter) ------------------------------------

    def local_number(self) -> int:
        number = self._next_number
        self._next_number += 1
        return number

    def start(
        self,
        replica_id: str,
        name: str,
        link: Link,
        policy: ReusePolicy,
        *,
        log_path: str,
        basetemp: str | None,
        persistent: bool = False,
        host: protocol.HostPayload | None = None,
        events: queue.SimpleQueue[Any] | None = None,
        by_file: bool = False,
    ) -> Replica:
        replica = Replica(replica_id, name, events or self.events, link, persistent=persistent)
        payload = self._start_payload(replica_id, policy, basetemp, log_path)
        if host is not None:
            payload["host"] = host
        else:  # on this machine: it may hold passes (a persistent one keeps its file)
            payload["held"] = protocol.held_path(log_path)
        if by_file:
            self.files.tell(name, replica, payload)
        replica.start(payload)
        return replica

    def attach(self, replica_id: str, name: str, link: Link, log_path: str) -> Replica:
        replica = Replica(replica_id, name, self.events, link, persistent=True)
        replica.attach(log_path, self.workerinput(replica_id, self._counts.get(name, 1)))
        return replica

    def _start_payload(
        self, replica_id: str, policy: ReusePolicy, basetemp: str | None, log_path: str
    ) -> protocol.StartPayload:
        if basetemp is not None:
            # pytest creates a given --basetemp but not its parents.
            Path(basetemp).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {
            "replica_id": replica_id,
            # A replica's stdout is not the user's terminal: it always captures (the last
            # --capture wins; the option must be parsed, it decides before configure).
            # First, what xdist-node plugins need (before any "--" of the user's).
            "args": replica_args(self.config)
            + [str(a) for a in self.config.invocation_params.args]
            + (["--capture=fd"] if self.config.option.capture == "no" else []),
            "invocation_dir": str(self.config.invocation_params.dir),
            "sys_path": list(sys.path),
            "main": describe_main(),
            "basetemp": basetemp,
            "log_path": log_path,
            "policy": policy.payload(),
            "hygiene": {
                "leaks": self.settings.leaks,
                "ignore": list(self.settings.leaks_ignore),
                "memory_mib": self.settings.leak_memory_mib,
            },
            "teardown_timeout": self.settings.teardown_timeout,
            "workerinput": self.workerinput(replica_id, policy.max_replicas),
            # basetemp None: the replica's own pytest makes one (pytest-of-USER/pytest-N),
            # whatever --basetemp this run was given (a warm replica outlives that directory).
            "option_overrides": dict(REPLICA_OPTION_OVERRIDES, basetemp=basetemp),
            "reload": self.watching,
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
        import psutil  # where it is used (launch/process.py says why)

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

    def release(self, replica: Replica) -> None:
        """End of the run for a persistent replica: back to idle in the registry, disconnect."""
        if self.registry is not None:
            try:
                self.registry.release(replica.id, tests_served_delta=replica.tests_run)
            except RegistryError:
                pass  # the replica marks itself idle when the connection drops, too
        replica.release()
