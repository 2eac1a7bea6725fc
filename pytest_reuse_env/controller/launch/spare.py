"""Spare interpreters: run-scoped replicas started before this run knows it needs them, waiting
for their START (``prestart.py`` says when and how many).

A spare is a popen gateway running the replica's bootstrap, started on a thread as soon as
pytest has read its configuration: by the time the first routed test is collected it has
imported pytest and the replica side, and blocks on its channel. ``PopenLink`` takes one
instead of starting a process, and sends START on its channel as it would on a new one.

A spare is only used when it is what a replica started now would be: the same working
directory and the same environment variables (a plugin or conftest that set one after the
spare started, as pytest-cov does for subprocesses, would be missing from its environment);
otherwise it is killed and a fresh one started. Spares no launch took are killed by pid once
collection is done and reaped at the end of the run: before its START a spare has run nothing
of the project's (only imports), so there is nothing to ask it to finish.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any, Final, final

import execnet

from pytest_reuse_env.controller.launch.popen import BOOTSTRAP
from pytest_reuse_env.controller.launch.process import (
    KILL_WAIT_SECONDS,
    gateway_popen,
    wait_or_kill,
)

#: How long a launch waits for a spare still starting before it starts a fresh process.
TAKE_WAIT_SECONDS: Final = 5.0


@final
class Spare:
    """One interpreter running the replica's bootstrap, waiting for START."""

    def __init__(self, number: int, forked: tuple[Any, Any] | None = None) -> None:
        """A popen gateway started on a thread, or one already ``forked`` (its gateway and
        channel, ``fork.py``)."""
        # Plain popen, as PopenLink's: with python= execnet would send and compile its whole
        # gateway source instead of importing it.
        self._spec = f"popen//id=spare{number}"
        self._cwd = os.getcwd()
        self._environ = dict(os.environ)
        self._group = execnet.Group()
        self._gateway: Any = None
        self._channel: Any = None
        self.taken = False
        self._thread: threading.Thread | None = None
        if forked is not None:
            self._gateway, self._channel = forked
        else:
            self._thread = threading.Thread(target=self._start, daemon=True, name="reuse-spare")
            self._thread.start()

    def _start(self) -> None:
        try:
            gateway = self._group.makegateway(self._spec)
            self._gateway = gateway
            self._channel = gateway.remote_exec(BOOTSTRAP)
        except Exception:  # a spare that failed is not taken: a launch starts afresh
            self._channel = None

    def usable(self) -> bool:
        """Whether a replica started now would be this one: same directory, same environment."""
        try:
            cwd = os.getcwd()
        except OSError:
            return False
        return cwd == self._cwd and dict(os.environ) == self._environ

    def take(self, wait: float = TAKE_WAIT_SECONDS) -> tuple[Any, Any] | None:
        """Its gateway and channel for a new replica (waiting up to ``wait`` seconds for it to
        start), or None, and then it is ended: it failed, is still starting, or is not what a
        replica started now would be."""
        starting = self._thread is not None and self._join(wait)
        channel = self._channel
        if starting or channel is None or channel.isclosed() or not self.usable():
            self.discard()
            return None
        self.taken = True
        return self._gateway, channel

    def _join(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for a popen spare's start; whether it is still starting."""
        assert self._thread is not None
        self._thread.join(wait)
        return self._thread.is_alive()

    def discard(self) -> None:
        """Kill it now if it has started (``end`` reaps it): not taken, it is of no use."""
        popen = gateway_popen(self._gateway)
        if not self.taken and popen is not None and popen.poll() is None:
            popen.kill()

    def end(self) -> None:
        """Killed by pid and reaped: a spare nothing took has run no test code, no fixture,
        no conftest (only imports), so there is nothing to ask it to finish, and asking would
        wait for those imports. (A start that never ends, an interpreter that never answers
        execnet, leaves no pid to kill, as with ``PopenLink``: that interpreter ends when its
        standard input, this process's pipe, closes.)"""
        if self.taken:
            return  # its replica's link ends it
        if self._thread is not None:
            self._join(KILL_WAIT_SECONDS)
        popen = gateway_popen(self._gateway)
        if popen is not None:
            wait_or_kill(popen, 0.0)


def _fork(count: int) -> list[tuple[Any, Any]] | None:
    """``count`` forked spares' gateways and channels, or None where forking is not safe."""
    from pytest_reuse_env.controller.launch.fork import fork_spares, why_not_fork

    if why_not_fork() is not None:
        return None
    return fork_spares(count, execnet.Group()) or None


@final
class Spares:
    """The spares of this run, each offered to one launch, in the order they were started
    (launches happen on the controller's main thread)."""

    def __init__(self, count: int, *, fork: bool = False) -> None:
        """``count`` spares: forked from this process when ``fork`` and ``fork.py`` says it
        may now, else popen ones."""
        self.count = count
        forked = _fork(count) if fork else None
        if forked is not None:
            self._spares = [Spare(number, started) for number, started in enumerate(forked)]
        else:
            self._spares = [Spare(number) for number in range(count)]
        self._waiting = deque(self._spares)

    def take(self) -> tuple[Any, Any] | None:
        """A started spare's gateway and channel, or None when none is left or usable."""
        while self._waiting:
            taken = self._waiting.popleft().take()
            if taken is not None:
                return taken
        return None

    def release(self) -> None:
        """Collection is done: the spares nothing took are killed (and reaped by ``end``)."""
        while self._waiting:
            self._waiting.popleft().discard()

    def end(self) -> None:
        """End of the run (``config.add_cleanup``, and at exit): every spare nothing took is
        gone. Called again, it finds them gone."""
        self._waiting.clear()
        for spare in self._spares:
            spare.end()
