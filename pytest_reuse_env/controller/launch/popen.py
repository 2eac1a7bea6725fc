"""``scope="run"``: a replica that is an execnet popen gateway of this process; it lives and
dies with the run. Its bootstrap (sent with ``remote_exec``) calls the replica side's
``serve(channel)``; its basetemp and log sit in this run's basetemp, as xdist's workers' do.
"""

from __future__ import annotations

import queue
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

import execnet

from pytest_reuse_env import protocol
from pytest_reuse_env.controller.launch.base import END, STILL_RUNNING, Deliver, Starter
from pytest_reuse_env.controller.launch.process import (
    EXIT_WAIT_SECONDS,
    describe_exit,
    gateway_popen,
    wait_exit,
    wait_or_kill,
)
from pytest_reuse_env.controller.replica import Replica
from pytest_reuse_env.policy import ReusePolicy

if TYPE_CHECKING:
    from pytest_reuse_env.controller.launch.spare import Spares

# controller/launch/popen.py -> the folder that holds the package.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[3])
BOOTSTRAP = f"""
import sys
if {_PACKAGE_PARENT!r} not in sys.path:
    sys.path.insert(0, {_PACKAGE_PARENT!r})
from pytest_reuse_env.replica.bootstrap import serve
serve(channel)
"""


@final
class PopenLink:
    """A replica that is an execnet popen gateway of this process."""

    def __init__(self, group: execnet.Group, gateway_id: str, spares: Spares | None = None) -> None:
        self._group = group
        self._gateway_id = gateway_id
        #: Spare interpreters started before the run knew it needed them (spare.py).
        self._spares = spares
        self._gateway: Any = None
        self._channel: Any = None
        self.pid: int | None = None
        self.from_spare = False

    def open(self, first: protocol.Message, deliver: Deliver) -> None:
        spare = self._spares.take() if self._spares is not None else None
        if spare is not None:
            self._gateway, self._channel = spare
            self.from_spare = True
        else:
            self._gateway = self._group.makegateway(f"popen//id={self._gateway_id}")
            self._channel = self._gateway.remote_exec(BOOTSTRAP)
        self.pid = self._popen().pid
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
        popen = gateway_popen(self._gateway)
        assert popen is not None, "a popen gateway has its interpreter"
        return popen

    def exit_description(self, wait: float) -> str:
        if self._gateway is None:
            return "never started"
        try:
            return describe_exit(wait_exit(self._popen(), wait))
        except subprocess.TimeoutExpired:
            return STILL_RUNNING

    def kill(self) -> None:
        if self._gateway is not None and self._popen().poll() is None:
            self._popen().kill()

    def let_exit(self) -> None:
        """Gateway exit: execnet's worker ends once ``serve`` has returned (it waits for it)."""
        if self._gateway is None:
            return
        try:
            self._gateway.exit()
        except (OSError, EOFError, ValueError):
            pass

    def terminate(self, wait: float) -> None:
        """Ask (gateway exit), wait up to ``wait`` seconds, then kill, and reap by pid."""
        if self._gateway is None:
            return
        self.let_exit()
        wait_or_kill(self._popen(), wait)

    def release(self) -> None:
        self.terminate(EXIT_WAIT_SECONDS)  # a run-scoped replica has nothing to go back to


@final
class PopenStrategy:
    """Starts run-scoped replicas as popen gateways of ``group``."""

    def __init__(
        self, starter: Starter, group: execnet.Group, run_temp: Callable[[], Path]
    ) -> None:
        self._starter = starter
        self._group = group
        #: This run's basetemp (pytest's own, made on first use).
        self._run_temp = run_temp
        #: Spares started for this command (prestart.py), taken by launches first.
        self.spares: Spares | None = None
        #: Replicas launched so far (the command's hint, at the end of collection).
        self.launched = 0

    def launch(
        self,
        name: str,
        policy: ReusePolicy,
        key: str | None = None,
        *,
        events: queue.SimpleQueue[Any] | None = None,
    ) -> Replica:
        """A new run-scoped replica (reporting to ``events``, by default the run's queue)."""
        replica_id = f"r{self._starter.local_number()}"
        root = self._run_temp()
        self.launched += 1
        return self._starter.start(
            replica_id,
            name,
            PopenLink(self._group, replica_id, self.spares),
            policy,
            log_path=str(root / f"replica-{replica_id}.log"),
            basetemp=str(root / f"replica-{replica_id}"),
            events=events,
            by_file=True,
        )
