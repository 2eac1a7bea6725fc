"""Starting a replica process: from the bootstrap's channel to a served pytest session.

Runs inside a replica, first thing: ``serve`` is what the controller's execnet bootstrap
(``controller/launch/popen.py``, ``controller/launch/hosts.py``) imports and calls; a detached
replica (``daemon.py``) calls ``run_session`` itself. Here the process is set up (working
directory, ``sys.path``, stderr to the log, the teardown watchdog thread), the replica's pytest
session is built from START and run, and a failure to start is reported as START_FAILED.
Imports the standard library, pytest (inside ``run_session``) and the replica side;
``hostspec`` only for a replica on another host, ``reload`` only in watch mode.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from typing import Any

from pytest_reuse_env import protocol
from pytest_reuse_env.replica import terminal
from pytest_reuse_env.replica.logfile import _log_fd, redirect_stderr
from pytest_reuse_env.replica.main_module import imitate_main
from pytest_reuse_env.replica.session import ReplicaSession
from pytest_reuse_env.replica.worker import apply_environment
from pytest_reuse_env.role import REPLICA_KEY


def serve(channel: Any) -> None:
    """Entry point of a run-scoped replica: the bootstrap the controller sends with
    execnet's remote_exec calls it with the gateway's channel."""
    _preload()
    name, start = channel.receive()
    assert name == protocol.START, name
    host = start.get("host")
    if host is None:
        _serve(channel, start)
        return
    # Another machine or interpreter: its paths, its copy of the project.
    from pytest_reuse_env import hostspec as hosts

    root = hosts.relocate(start, host)
    scratch = hosts.scratch_of(start, host)
    try:
        refused = hosts.first_difference(root, host["files"])
        if refused is not None:
            channel.send(
                protocol.start_failed(
                    os.getpid(),
                    f"host {host['name']} ({host['spec']}) refused to start a replica: "
                    f"{refused} (project root there: {root}; use --reuse-rsync or update that "
                    "copy)",
                )
            )
            return
        _serve(channel, start)
    finally:
        # A replica that ended (not one killed: its log stays) leaves nothing on that machine.
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _serve(channel: Any, start: protocol.StartPayload) -> None:
    redirect_stderr(start["log_path"])
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    # Channel callbacks run on execnet's receiver thread: only enqueue.
    channel.setcallback(inbox.put, endmarker=protocol.END)
    if start.get("reload"):
        replica = _reloading_session(channel, inbox, start)
    else:
        replica = ReplicaSession(channel, inbox, start)
    run_session(channel, start, replica)


def _preload() -> None:
    """Import what pytest's configuration imports in every run: its own plugins' modules. A
    spare does it while it waits for START (about 10 ms of a replica's start); a replica sent
    START at once would do the same a moment later, in ``_prepareconfig``. Nothing of the
    project's or of other plugins is imported: that waits for START (its environment, its
    module graph)."""
    try:
        from _pytest.config import default_plugins
    except ImportError:  # pytest's private layout moved: nothing preloaded, nothing lost
        return
    for name in default_plugins:
        with contextlib.suppress(Exception):
            importlib.import_module(f"_pytest.{name}")


def _reloading_session(
    channel: Any, inbox: queue.SimpleQueue[Any], start: protocol.StartPayload
) -> ReplicaSession:
    """Watch mode: the controller sends ATTACH between rounds, and this run-scoped replica
    catches up with edited files first, as a detached one does (``reload.py``)."""
    from pytest_reuse_env.replica.reload import Reloader

    reloader = Reloader()
    reloader.graph.install()  # before the session imports any project module

    def refresh() -> protocol.ReloadPayload:
        result = reloader.refresh()
        for error in result.teardown_errors:
            with contextlib.suppress(OSError, EOFError, ValueError):
                channel.send(protocol.teardown_error(os.getpid(), error))
        return result.payload()

    replica = ReplicaSession(channel, inbox, start, refresh=refresh, on_ready=reloader.ready)
    replica.plugins.append(reloader)
    reloader.bind(replica)
    return replica


def run_session(channel: Any, start: protocol.StartPayload, replica: ReplicaSession) -> None:
    """Build the replica's pytest session from ``start`` and serve until told to stop."""
    os.chdir(start["invocation_dir"])
    sys.path[:0] = [p for p in start["sys_path"] if p not in sys.path]
    os.environ[protocol.REPLICA_ENV_VAR] = start["replica_id"]
    imitate_main(start["main"])
    _log_fd()  # before any capture takes fd 2 over
    threading.Thread(
        target=_teardown_watchdog, args=(replica,), name="reuse-teardown-watchdog", daemon=True
    ).start()
    exit_code: object = None
    try:
        from _pytest.config import _prepareconfig

        workerinput = {"workerid": start["replica_id"], **start.get("workerinput", {})}
        workerinput[REPLICA_KEY] = True
        apply_environment(workerinput)  # before conftests are imported, as in an xdist worker
        config = _prepareconfig(
            list(start["args"]),
            plugins=[
                replica,
                replica.leaks,
                replica.worker,
                *replica.plugins,
                replica.perrun,
                terminal,
            ],
        )
        for dest, value in start["option_overrides"].items():
            if hasattr(config.option, dest):
                setattr(config.option, dest, value)
        # Like an xdist worker: junitxml, cacheprovider and stepwise stay quiet here; the
        # reuse plugin sees "reuse_replica" and does not start a controller of its own.
        config.workerinput = workerinput  # type: ignore[attr-defined]
        config.workeroutput = {}  # type: ignore[attr-defined]
        exit_code = config.hook.pytest_cmdline_main(config=config)
    except BaseException:  # every failure must reach the controller as text
        _start_failed(replica, traceback.format_exc())
        return
    if not replica.ready_sent:
        lines = [f"the replica's pytest session ended with exit code {exit_code} before serving"]
        lines += replica.internal_errors
        lines += replica.collect_errors
        _start_failed(replica, "\n".join(lines))
        return
    replica.send(
        protocol.finished(replica.tests_run, int(exit_code) if isinstance(exit_code, int) else None)
    )


def _start_failed(replica: ReplicaSession, text: str) -> None:
    """Tell the controller why the replica could not start, and leave it in the log (kept
    for the user, who is told its path)."""
    with contextlib.suppress(OSError):
        os.write(_log_fd(), f"replica could not start:\n{text}\n".encode())
    replica.send(protocol.start_failed(os.getpid(), text))


def _teardown_watchdog(replica: ReplicaSession) -> None:
    """Dumps every thread's stack to the log once when a test's teardown runs past 80 % of
    reuse_teardown_timeout (the controller kills the replica at 100 %). One thread for the
    replica's life: arming faulthandler around every teardown would cost a thread per test."""
    limit = max(0.5, replica.start["teardown_timeout"] * 0.8)
    dumped_for: float | None = None
    while True:
        time.sleep(min(0.25, limit / 4))
        # A test still running is announced: the controller shows it and times it.
        with contextlib.suppress(Exception):  # a closed channel: the serve loop ends anyway
            replica.flush_held(stale_only=True)
            replica.outbox.announce(after=protocol.ANNOUNCE_SECONDS)
        started = replica.teardown_started
        if started is None or started == dumped_for:
            continue
        if time.monotonic() - started > limit:
            os.write(_log_fd(), f"Timeout ({limit:g} s in teardown)!\n".encode())
            faulthandler.dump_traceback(file=_log_fd(), all_threads=True)
            dumped_for = started
