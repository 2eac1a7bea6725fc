"""Replicas as xdist workers to other plugins: the controller's side of xdist's node hooks.

pytest-xdist's controller calls ``pytest_configure_node(node)`` before a worker starts, so
plugins fill ``node.workerinput`` (pytest-randomly its seed, pytest-rerunfailures its status
server, pytest-cov its host and directory); ``pytest_testnodeready(node)`` once it serves; and
``pytest_testnodedown(node, error)`` when it is done, with the ``node.workeroutput`` it sent
home (pytest-cov's coverage data). Here every lease of a replica is such a node: a new one
when a replica starts or a warm one is attached, down when the run is done with it.

- ``worker_id`` is ``gw0``, ``gw1``...: the lowest slot no other replica of this run holds;
  ``testrun_uid`` is this run's (``--testrunuid``, else a new uuid), one for all replicas.
- Without pytest-xdist installed the three hooks are declared here, so the plugins that
  implement them anyway (pytest-cov) are called.
- pytest-cov measures centrally when the user's run is not distributed: its plugin has no
  node methods then, so its part is pytest-cov's own ``DistMaster`` code, applied to it.
- Inside an xdist worker (``pytest -n``), a replica's ``workerinput`` is the worker's own (the
  real controller filled it); replica coverage is written where xdist's controller combines.

Coverage is combined when the run's test loop ends: ``end_leases`` collects every lease's
``workeroutput`` before that; a node that goes down later reaches every plugin but pytest-cov.
A node that never became ready ran no test: it reaches every plugin but pytest-cov, which would
list it as a failed worker. Every replica's pytest gets ``--cov-append`` (``replica_args``):
pytest-cov starts centrally in a replica before it learns it is a worker, and a central start
erases the ``.coverage`` file; a replica still starting while the run combines (or after the
run, scope=global) would delete the run's combined data.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import types
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final, final

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.replica import Replica, ReplicaState
from pytest_reuse_env.role import Role

#: pytest-cov's plugin object, as it registers itself.
COV_PLUGIN: Final = "_cov"

#: Plugins whose ``pytest_runtestloop`` lets the test loop run as it is (wrappers that only
#: look around it, and the loops of pytest, xdist and this plugin).
LOOP_NEIGHBOURS: Final = frozenset(
    {"main", "logging-plugin", "_cov", "reuse_controller", "reuse_router", "dsession"}
)

#: pytest-xdist's own loop objects, inside a worker (registered without a name).
XDIST_LOOPS: Final = frozenset({"WorkerInteractor", "WorkerFailSession"})


class XdistNodeSpecs:
    """pytest-xdist's node hookspecs (``xdist.newhooks``), for runs without xdist installed."""

    @staticmethod
    @pytest.hookspec
    def pytest_configure_node(node: Any) -> None:
        """Configure a node before it starts: fill ``node.workerinput``."""

    @staticmethod
    @pytest.hookspec
    def pytest_testnodeready(node: Any) -> None:
        """A node is ready to run tests."""

    @staticmethod
    @pytest.hookspec
    def pytest_testnodedown(node: Any, error: object) -> None:
        """A node is down; ``node.workeroutput`` holds what it sent home."""


def replica_args(config: pytest.Config) -> list[str]:
    """What a replica's pytest gets besides the run's own arguments, for xdist-node plugins:
    ``--cov-append`` when pytest-cov measures, so the replica's pytest-cov never erases the
    data file the run combines into (its worker-side data travels in ``workeroutput``)."""
    plugin = config.pluginmanager.get_plugin(COV_PLUGIN)
    if plugin is None or getattr(plugin, "_disabled", False):
        return []
    return ["--cov-append"]


def loop_owner(config: pytest.Config) -> str | None:
    """The name of a plugin that runs the tests itself (its own ``pytest_runtestloop``), which
    would run routed tests a second time; None when every loop hook leaves the loop alone."""
    manager = config.pluginmanager
    for impl in manager.hook.pytest_runtestloop.get_hookimpls():
        name = manager.get_name(impl.plugin) or ""
        module = getattr(impl.plugin, "__name__", "") or type(impl.plugin).__module__
        if name in LOOP_NEIGHBOURS or module.startswith(("_pytest.", "pytest_reuse_env.")):
            continue
        # xdist's worker loop (run through execnet, so its module is "__channelexec__").
        if module.startswith("xdist.") or type(impl.plugin).__name__ in XDIST_LOOPS:
            continue
        return name or module
    return None


@final
class WorkerNode:
    """One lease of a replica, shaped like xdist's ``WorkerController`` where plugins look:
    ``config``, ``gateway.id``, ``workerinput``, ``workeroutput``, ``workerinfo``,
    ``nodemanager.roots``, ``shutting_down``."""

    def __init__(self, config: pytest.Config, replica_id: str, workerinput: dict[str, Any]):
        self.config = config
        self.replica_id = replica_id
        slot = str(workerinput["workerid"])
        self.gateway = _Gateway(slot)
        self.workerinput = workerinput
        self.workeroutput: dict[str, Any] = {}
        self.workerinfo: dict[str, Any] = {
            "version": sys.version,
            "version_info": tuple(sys.version_info),
            "sysplatform": sys.platform,
            "platinfo": sys.platform,
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "id": slot,
            "spec": self.gateway.spec,
        }
        self.nodemanager = types.SimpleNamespace(roots=[], specs=[], testrunuid=None)
        self.ready = False
        self.down = False

    @property
    def shutting_down(self) -> bool:
        return self.down

    def __repr__(self) -> str:
        return f"<WorkerNode {self.gateway.id} replica {self.replica_id}>"


@final
class _Gateway:
    """What plugins read of ``node.gateway``: its id and, for pytest-cov, ``_rinfo()``."""

    def __init__(self, slot: str) -> None:
        self.id = slot
        self.spec = types.SimpleNamespace(id=slot, popen=True, chdir=None, python=sys.executable)

    def _rinfo(self) -> Any:
        return types.SimpleNamespace(
            platform=sys.platform,
            version_info=tuple(sys.version_info),
            executable=sys.executable,
            cwd=os.getcwd(),
            pid=os.getpid(),
        )


@final
class ReplicaNodes:
    """xdist's node hooks around every lease of every replica of one run."""

    def __init__(self, config: pytest.Config, role: Role) -> None:
        self.config = config
        self.role = role
        manager = config.pluginmanager
        if getattr(manager.hook, "pytest_configure_node", None) is None or (
            manager.hook.pytest_configure_node.spec is None
        ):
            manager.add_hookspecs(XdistNodeSpecs)
        parent: dict[str, Any] = getattr(config, "workerinput", None) or {}
        #: Inside an xdist worker: that worker's own workerinput, filled by xdist's controller.
        self.parent = dict(parent) if role is Role.XDIST_WORKER else None
        self.testrunuid = str(
            parent.get("testrunuid")
            or getattr(config.option, "testrunuid", None)
            or uuid.uuid4().hex
        )
        #: The current lease of each replica, by replica id.
        self.nodes: dict[str, WorkerNode] = {}
        #: Coverage was combined: nodes going down now reach every plugin but pytest-cov.
        self.closed = False

    # -- leases ------------------------------------------------------------------------------

    def workerinput(self, replica_id: str, workercount: int) -> dict[str, Any]:
        """A new lease of ``replica_id`` (started or attached): its node, configured by the
        plugins; returns the ``workerinput`` to send it."""
        previous = self.nodes.get(replica_id)
        if previous is not None and not previous.down:
            self.node_down(previous, None)
        workerinput: dict[str, Any]
        if self.parent is not None:
            workerinput = dict(self.parent)
        else:
            workerinput = {
                "workerid": self._free_slot(),
                "workercount": workercount,
                "testrunuid": self.testrunuid,
                "mainargv": [str(arg) for arg in sys.argv],
            }
        node = WorkerNode(self.config, replica_id, workerinput)
        self.nodes[replica_id] = node
        if self.parent is None:
            self._configure(node)
        return dict(node.workerinput)

    def _free_slot(self) -> str:
        taken = {n.gateway.id for n in self.nodes.values() if not n.down}
        number = 0
        while f"gw{number}" in taken:
            number += 1
        return f"gw{number}"

    def _configure(self, node: WorkerNode) -> None:
        self._hook("pytest_configure_node", cov=_cov_configure_node, node=node)
        # pytest-randomly declares its node hook only when xdist is installed.
        if "randomly_seed" not in node.workerinput and self.config.pluginmanager.hasplugin(
            "randomly"
        ):
            seed = getattr(self.config.option, "randomly_seed", None)
            if isinstance(seed, int):
                node.workerinput["randomly_seed"] = seed

    # -- events ------------------------------------------------------------------------------

    def replica_event(self, replica: Replica, name: str, payload: Any) -> None:
        """Called for every message a replica sends, before the controller handles it."""
        node = self.nodes.get(replica.id)
        if node is None or node.down:
            return
        if name == protocol.READY and not node.ready:
            node.ready = True
            if self.parent is None:
                self._hook("pytest_testnodeready", cov=None, node=node)
        elif name == protocol.WORKEROUTPUT:
            node.workeroutput = dict(payload or {})
            self.node_down(node, None)
        elif name == protocol.CHANNEL_CLOSED:
            error = None if replica.said_finished else f"replica {replica.id} ended unexpectedly"
            self.node_down(node, error)

    def node_down(self, node: WorkerNode, error: object) -> None:
        if node.down:
            return
        node.down = True
        if self.parent is not None:
            # Inside an xdist worker: xdist's controller combines the files it finds.
            _cov_write_worker_data(self.config, node)
            return
        # Never ready, it ran nothing: for pytest-cov it would be a "failed worker".
        self._hook(
            "pytest_testnodedown",
            cov=_cov_testnodedown,
            skip_cov=not node.ready,
            node=node,
            error=error,
        )

    def end_leases(
        self, replicas: Iterable[Replica], pump: Callable[[float], None], wait: float
    ) -> None:
        """The run's tests are done: every ready replica ends its lease (persistent ones are
        asked; run-scoped ones report after their teardown); wait up to ``wait`` seconds for
        their ``workeroutput``, before pytest-cov combines what it has."""
        waiting = []
        for replica in replicas:
            node = self.nodes.get(replica.id)
            if node is None or node.down or not node.ready:
                continue
            if replica.state is ReplicaState.ENDED:
                continue
            if replica.persistent and replica.state is ReplicaState.READY:
                replica.send(protocol.end_lease())
            waiting.append(node)
        deadline = time.monotonic() + wait
        while any(not n.down for n in waiting) and time.monotonic() < deadline:
            pump(0.1)
        # Inside an xdist worker, xdist's controller combines later: late data still counts.
        self.closed = self.parent is None

    def finish(self) -> None:
        """End of the session: every node still up goes down (they said nothing more)."""
        self.closed = True
        for node in list(self.nodes.values()):
            self.node_down(node, None)

    # -- calling the hooks -------------------------------------------------------------------

    def _hook(
        self,
        name: str,
        cov: Callable[..., None] | None,
        *,
        skip_cov: bool = False,
        **kwargs: Any,
    ) -> None:
        """Call the hook; pytest-cov's part by ``cov`` when its plugin is central (no node
        methods), and not at all once coverage is combined or when ``skip_cov``."""
        manager = self.config.pluginmanager
        plugin = manager.get_plugin(COV_PLUGIN)
        controller = getattr(plugin, "cov_controller", None)
        skip_cov = skip_cov or self.closed
        special = plugin is not None and (
            skip_cov or (controller is not None and not hasattr(controller, "configure_node"))
        )
        if special:
            caller = manager.subset_hook_caller(name, remove_plugins=[plugin])
            caller(**kwargs)
            if not skip_cov and cov is not None and not getattr(plugin, "_disabled", False):
                cov(controller, **kwargs)
        else:
            getattr(self.config.hook, name)(**kwargs)


# -- pytest-cov ----------------------------------------------------------------------------------


def _cov_configure_node(controller: Any, node: WorkerNode) -> None:
    from pytest_cov import engine

    engine.DistMaster.configure_node(controller, node)


def _cov_testnodedown(controller: Any, node: WorkerNode, error: object) -> None:
    from pytest_cov import engine

    # DistMaster sets this at its start; a central controller never did.
    controller.cov.config.paths.setdefault("source", [controller.topdir])
    engine.DistMaster.testnodedown(controller, node, error)


def _cov_write_worker_data(config: pytest.Config, node: WorkerNode) -> None:
    """Inside an xdist worker: the replica's coverage as a data file beside the worker's, which
    xdist's controller combines (``pytest_cov`` collocated workers do the same)."""
    data = node.workeroutput.get("cov_worker_data")
    if data is None or not config.pluginmanager.hasplugin(COV_PLUGIN):
        return
    from coverage import CoverageData

    plugin = config.pluginmanager.get_plugin(COV_PLUGIN)
    controller = getattr(plugin, "cov_controller", None)
    if controller is None:
        return
    suffix = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}.{node.replica_id}"
    basename = os.path.join(controller.topdir, controller.cov.config.data_file)
    written = CoverageData(basename=basename, suffix=suffix)
    written.loads(data)
