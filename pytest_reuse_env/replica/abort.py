"""Aborting the running test from another thread: the abort signal and ``ClientGone``.

Runs inside a replica. A detached replica's relay (``daemon.py``), off the main thread, sends
``ABORT_SIGNAL`` to its own process when the client disconnects mid-test; the handler raises
``ClientGone`` into the test on the main thread, and the serve loop blocks the signal while it
flips ``ReplicaSession.running``.
Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pytest_reuse_env.replica.session import ReplicaSession


class ClientGone(Exception):
    """Raised into a test that was running for a client that disconnected (persistent mode)."""


ABORT_SIGNAL: Final = signal.SIGUSR1


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Keep the abort signal out while the "a test is running" flag changes."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {ABORT_SIGNAL})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {ABORT_SIGNAL})


def install_abort_handler(replica: ReplicaSession) -> None:
    """Let another thread abort the running test with ``os.kill(os.getpid(), ABORT_SIGNAL)``."""

    def abort(signum: int, frame: object) -> None:
        if replica.running:
            raise ClientGone("the pytest run this test was running for disconnected")

    signal.signal(ABORT_SIGNAL, abort)
    replica.abortable = True
