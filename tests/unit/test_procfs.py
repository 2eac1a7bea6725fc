"""The leak checks' /proc readings (``replica/procfs.py``): kept-open files read with pread,
reopened when a test closed them, never counted as a test's descriptors."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading

import pytest

from pytest_reuse_env.replica import hygiene, procfs
from pytest_reuse_env.replica.hygiene import LeakRules, leaks, read_state

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_file_is_kept_open_high_and_read_again_fresh() -> None:
    files = procfs.ProcFiles()
    first = procfs.resident_bytes(files)
    (fd,) = files.own
    assert fd >= procfs._kept_from() or fd < 3 + 64, "high, unless no number that high exists"
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "not inherited by what tests exec"
    ballast = bytearray(64 * 2**20)  # touched: resident
    assert procfs.resident_bytes(files) > first + 32 * 2**20, "each reading is fresh"
    del ballast
    assert files.own == {fd}, "the same descriptor, not one a reading"


def test_a_file_a_test_closed_is_opened_again() -> None:
    files = procfs.ProcFiles()
    procfs.resident_bytes(files)
    (fd,) = files.own
    os.close(fd)  # what os.closerange in a test does to it
    assert procfs.resident_bytes(files) > 0
    assert len(files.own) == 1


def test_children_are_seen_per_thread_and_ended_threads_files_closed() -> None:
    files = procfs.ProcFiles()
    found: list[subprocess.Popen[bytes]] = []

    def fork_one() -> None:
        found.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))

    thread = threading.Thread(target=fork_one)
    thread.start()
    thread.join()
    (child,) = found
    try:
        assert child.pid in procfs.children(files), "a child forked by another thread"
        kept = len(files.own)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.pid not in procfs.children(files)
    assert len(files.own) <= kept, "the ended thread's file is closed, not kept"


def test_the_kept_files_are_no_leak_even_when_a_test_closes_them() -> None:
    before = read_state()
    for fd in hygiene._PROC_FILES.own:
        os.close(fd)  # a test's os.closerange took them
    assert leaks(before, read_state(), LeakRules()) == []


def test_a_thread_replaced_by_another_is_listed_again() -> None:
    """Same number of threads, one of them new: its child is still seen."""
    files = procfs.ProcFiles()
    stop = threading.Event()
    first = threading.Thread(target=stop.wait)
    first.start()
    procfs.children(files, [t.native_id for t in threading.enumerate()])  # the first included
    stop.set()
    first.join()
    found: list[subprocess.Popen[bytes]] = []
    forked, hold = threading.Event(), threading.Event()

    def fork_and_stay() -> None:
        found.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
        forked.set()
        hold.wait(30)

    second = threading.Thread(target=fork_and_stay)
    second.start()
    try:
        assert forked.wait(10), "the thread did not start its child"
        python = [t.native_id for t in threading.enumerate()]
        assert found[0].pid in procfs.children(files, python)
    finally:
        hold.set()
        second.join(10)
        for child in found:
            child.kill()
            child.wait(timeout=10)


def test_descriptors_are_listed_again_when_their_number_changes() -> None:
    files = procfs.ProcFiles()
    first = procfs.open_fds(files)
    read, write = os.pipe()
    try:
        opened = procfs.open_fds(files)
        assert {read, write} <= opened - first
        os.close(write)
        now = procfs.open_fds(files)
        assert read in now
        assert write not in now
    finally:
        os.close(read)
    assert read not in procfs.open_fds(files)


def test_descriptors_are_not_listed_again_at_the_same_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = procfs.ProcFiles()
    procfs.open_fds(files)
    listings: list[int] = []
    real = procfs._list_fds

    def listing() -> frozenset[int]:
        listings.append(1)
        return real()

    monkeypatch.setattr(procfs, "_list_fds", listing)
    procfs.open_fds(files)
    assert listings == ([1] if procfs._fd_count(procfs.ProcFiles()) is None else []), (
        "one stat when the kernel gives the number; a listing where it does not"
    )


def test_without_the_number_every_reading_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux before 6.2 gives /proc/self/fd a size of 0."""
    monkeypatch.setattr(procfs, "_fd_count", lambda files: None)
    files = procfs.ProcFiles()
    procfs.open_fds(files)
    read, write = os.pipe()
    os.close(write)
    try:
        assert read in procfs.open_fds(files)
    finally:
        os.close(read)
