"""A spare forked from the pytest process: the child's side, from ``os.fork`` to an execnet
worker gateway on two pipes, and its exit.

The controller forks before its conftests are loaded and before pytest captures anything
(``controller/launch/fork.py`` says when it may): the child then holds pytest and every plugin
already imported, and serves the same execnet worker a popen gateway's interpreter would
(standard input and output on ``/dev/null``, standard error inherited until the replica sends
it to its log). What it must not keep of its parent is cleared first: the parent's
assertion-rewriting import hook (the replica's own pytest installs its own).

It never returns into the stack it was forked from (pytest's, with its ``finally`` blocks and
cleanups, which are the parent's to run): it ends with ``os._exit``, after the exit handlers
(those registered before the fork, as a popen replica would have registered them too, and its
own), as an interpreter would.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import NoReturn

#: Exit status of a forked spare whose serving raised (the log says why).
FAILED_EXIT = 70


def serve_forked(
    read_fd: int, write_fd: int, gateway_id: str, signal_mask: set[int | signal.Signals]
) -> NoReturn:
    """The forked child's whole life: serve execnet on ``read_fd``/``write_fd`` until the
    controller's gateway exits, then end the process. ``signal_mask``: the parent's, restored
    once the child is set up (the fork blocks SIGINT)."""
    status = FAILED_EXIT
    try:
        _forget_parent()
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        from execnet.gateway_base import Popen2IO, get_execmodel, serve

        execmodel = get_execmodel("thread")
        io = Popen2IO(open(write_fd, "wb"), open(read_fd, "rb"), execmodel)
        # execnet's popen worker serves the same Popen2IO (its IO protocol types the master's).
        serve(io, id=f"{gateway_id}-worker")  # type: ignore[arg-type]
        status = 0
    except BaseException:  # a forked child never unwinds into its parent's stack
        import traceback

        try:
            traceback.print_exc()
        except Exception:
            pass
    _exit(status)


def _forget_parent() -> None:
    """What the child must not keep of the pytest process it was forked from. Its exit
    handlers stay: a popen replica would have registered the same ones as it imported the
    same modules (``logging.shutdown``, a plugin's), and they flush what this process wrote."""
    # The parent's config installed its import hook; the replica's own pytest installs one.
    sys.meta_path[:] = [
        finder for finder in sys.meta_path if type(finder).__name__ != "AssertionRewritingHook"
    ]
    # As execnet's popen worker (init_popen_io): stdin and stdout on /dev/null; the
    # protocol has its own pipes.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)


def _exit(status: int) -> NoReturn:
    """End as an interpreter ends: non-daemon threads joined, exit handlers run, standard
    streams flushed; then ``os._exit``."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:
        status = status or FAILED_EXIT
    os._exit(status)
