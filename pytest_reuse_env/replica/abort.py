"""Aborting the running test from another thread: the abort signal and ``ClientGone``.

Runs inside a replica. A detached replica's relay (``daemon.py``), off the main thread, sends
``ABORT_SIGNAL`` to its own process when the client disconnects mid-test; the handler raises
``ClientGone`` into the test on the main thread, and the serve loop clears
``ReplicaSession.running`` with the signal blocked (``not_running``).
Imports only the standard library.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pytest_reuse_env.replica.session import ReplicaSession


class ClientGone(Exception):
    """Raised into a test that was running for a client that disconnected (persistent mode)."""


ABORT_SIGNAL: Final = signal.SIGUSR1


#: Whether this process installed the abort handler (only a detached replica does).
_installed = False


def not_running(replica: ReplicaSession) -> None:
    """Clear the "a test is running" flag. Where the abort handler is installed, the abort
    signal is kept out meanwhile: arriving then, it would raise ClientGone into the serve loop
    rather than into the test. Elsewhere nothing can raise it: no system call."""
    if not _installed:
        replica.running = False
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {ABORT_SIGNAL})
    try:
        replica.running = False
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {ABORT_SIGNAL})


def install_abort_handler(replica: ReplicaSession) -> None:
    """Let another thread abort the running test with ``os.kill(os.getpid(), ABORT_SIGNAL)``."""
    global _installed

    def abort(signum: int, frame: object) -> None:
        if replica.running:
            raise ClientGone("the pytest run this test was running for disconnected")

    signal.signal(ABORT_SIGNAL, abort)
    _installed = True
