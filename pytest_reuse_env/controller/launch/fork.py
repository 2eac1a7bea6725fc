"""Spares forked from this pytest process instead of started as new interpreters.

A popen spare (``spare.py``) pays a whole interpreter start, pytest's imports and every
plugin's before its replica configures: about 0.2 s of a core, on the path to a cold run's
first routed test. A child forked from this process once it has loaded its plugins and read its
configuration, and before it loads a conftest or captures output, already holds all of that;
its replica's own pytest then only registers what is imported (``replica/forked.py`` is the
child's side).

Forking is only done where it is safe: on Linux, from a process with one thread (a fork
keeps only the thread that forks; a lock another thread held would stay held forever), not
traced (coverage or a debugger would carry on in the child with the parent's data), and with
the standard streams not replaced (an outer pytest capturing them: pytester's in-process
runs). Anywhere else, or with ``PYTEST_REUSE_FORK=0`` in the environment, the
spares are popen ones.

The child is a child of this process: ``ForkedProcess`` is its ``subprocess.Popen``, so
ending it (ask, wait, kill, reap by pid) is the same code as for a popen gateway's.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Final, final

import execnet
from execnet.gateway_io import Popen2IOMaster
from execnet.xspec import XSpec

from pytest_reuse_env.controller.launch.popen import BOOTSTRAP

#: ``PYTEST_REUSE_FORK=0``: spares are popen interpreters even where a fork is safe.
NO_FORK_ENV_VAR: Final = "PYTEST_REUSE_FORK"


def why_not_fork() -> str | None:
    """Why this process may not fork its spares now (None: it may)."""
    if os.environ.get(NO_FORK_ENV_VAR, "").strip() in ("0", "false", "no", "off"):
        return f"{NO_FORK_ENV_VAR} says not to"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "not Linux"
    if threading.active_count() != 1 or _native_threads() != 1:
        return "more than one thread"
    if sys.gettrace() is not None or threading.gettrace() is not None:
        return "traced (coverage or a debugger)"
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return "standard streams replaced"
    return None


def _native_threads() -> int:
    """Threads of this process as the kernel counts them (a C library's too)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0  # cannot tell: do not fork


@final
class ForkedProcess(subprocess.Popen[bytes]):
    """A forked child, adopted as a ``subprocess.Popen``: ``poll``, ``wait``, ``kill`` and
    ``returncode`` work on its pid as on a spawned one's (Popen's own waiting and reaping)."""

    def __init__(self, pid: int) -> None:
        # Not Popen.__init__ (there is nothing to spawn): the attributes its methods use.
        self.args = ["<forked spare>"]
        self.pid = pid
        self.returncode: Any = None
        self.stdin = self.stdout = self.stderr = None
        self.universal_newlines = False
        self.text_mode = False
        self.encoding = self.errors = None
        self._waitpid_lock = threading.Lock()
        self._child_created = True
        self._input = None
        self._communication_started = False
        self._sigint_wait_secs = 0.25
        self._closed_child_pipe_fds = True


@final
class _ForkIO(Popen2IOMaster):
    """execnet's popen master side, over a forked child's pipes instead of a spawned one's."""

    def __init__(self, process: ForkedProcess, write_fd: int, read_fd: int, execmodel: Any) -> None:
        self.popen = process
        super(Popen2IOMaster, self).__init__(open(write_fd, "wb"), open(read_fd, "rb"), execmodel)


def fork_spares(count: int, group: execnet.Group) -> list[tuple[Any, Any]]:
    """Fork ``count`` children now, then give each an execnet gateway in ``group`` and send
    it the replica's bootstrap: their (gateway, channel), in order. All forks happen before
    any gateway exists: a gateway starts a thread, and no fork may follow one."""
    children: list[tuple[int, int, int]] = []  # pid, our write end, our read end
    for stream in (sys.stdout, sys.stderr):  # what is buffered is written once, by us
        stream.flush()
    # The children's collector then leaves what they inherit alone: it would copy every page
    # it touches and walk this process's objects at each full collection. We take them back.
    gc.freeze()
    # A Ctrl-C during the forks would land in an after-fork hook (logging's, random's), which
    # only prints it and carries on: it waits until they are done, and is then raised here.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        _fork_children(count, children, blocked)
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    started = []
    for number, (pid, write_end, read_end) in enumerate(children):
        spec = XSpec(f"popen//id=spare{number}")
        spec.execmodel = group.remote_execmodel.backend
        io = _ForkIO(ForkedProcess(pid), write_end, read_end, group.execmodel)
        gateway = execnet.Gateway(io, spec)
        group._register(gateway)
        started.append((gateway, gateway.remote_exec(BOOTSTRAP)))
    return started


def _fork_children(
    count: int, children: list[tuple[int, int, int]], signal_mask: set[int | signal.Signals]
) -> None:
    """Fork up to ``count`` children, each serving execnet on its own two pipes; append each
    one's (pid, our write end, our read end) to ``children``. A child restores
    ``signal_mask`` once it is set up."""
    for number in range(count):
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # out of processes or memory: the ones forked so far, or popen ones
            for fd in (down_read, down_write, up_read, up_write):
                os.close(fd)
            return
        if pid == 0:  # the child: never returns
            for _, write_end, read_end in children:  # its elder siblings' pipes
                os.close(write_end)
                os.close(read_end)
            os.close(down_write)
            os.close(up_read)
            from pytest_reuse_env.replica.forked import serve_forked

            serve_forked(down_read, up_write, f"spare{number}", signal_mask)
        os.close(down_read)
        os.close(up_write)
        children.append((pid, down_write, up_read))
