"""What the leak checks read of ``/proc/self`` (Linux): open descriptors, child processes and
resident memory, in few system calls, since it runs around every test.

The files read on every test (``statm``; ``stat`` and each thread's ``children`` when the
process has children) stay open, at high
descriptor numbers, and are read again with ``pread``: one system call rather than open, read
and close. A test that closes them (``os.closerange``) only makes the next reading open them
again. They are the replica's own descriptors (``ProcFiles.own``), never a test's leak.

Descriptors are listed again only when their number changed: Linux (6.2 and later) gives the
number as the size of ``/proc/self/fd``, one ``stat``, where listing the directory costs the
kernel an entry made for each descriptor (about three times as long, right after a test).

Runs inside a replica; imports the standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
from collections.abc import Callable, Iterable
from typing import Final, TypeVar, final

_T = TypeVar("_T")

PROC: Final = "/proc/self"
#: Bound at import, before a replica's module graph wraps ``os.open`` to hear data files
#: (replica/datareads.py): these reads are never data, and they run on every test.
_os_open: Final = os.open
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TASKS: Final = f"{PROC}/task/"
#: num_threads' index in /proc/self/stat after the command name's closing parenthesis
#: (proc(5): the text after ")" starts at field 3; num_threads is field 20).
_NUM_THREADS: Final = 17
#: The lowest number a kept file may have: far above what tests open, so a test that closed
#: one cannot have reopened something of its own in its place, and below the soft limit.
_KEPT_FROM_MAX: Final = 1000


def _kept_from() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(_KEPT_FROM_MAX, max(soft // 2, 3)) if soft > 0 else _KEPT_FROM_MAX


def keep_high(fd: int, lowest: int | None = None) -> int:
    """``fd`` moved to the lowest free number from ``lowest`` up (by default far above what
    tests open, ``_kept_from``), close-on-exec; ``fd`` itself when no number that high is free.
    A descriptor the replica keeps for itself (these ``/proc`` files, ``held.py``'s file)."""
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _kept_from() if lowest is None else lowest)
    except OSError:  # no number that high: keep it where it is
        return fd
    os.close(fd)
    return high


@final
class ProcFiles:
    """``/proc`` files kept open and read with ``pread``."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._from = _kept_from()
        #: The process's threads as last listed (``children``).
        self.tids: tuple[str, ...] = ()
        #: The open descriptors as last listed (``open_fds``), and their number then.
        self.fds: frozenset[int] = frozenset()
        self.fd_count: int | None = None

    @property
    def own(self) -> frozenset[int]:
        return frozenset(self._fds.values())

    def read(self, path: str, size: int = 65536) -> bytes:
        """Up to ``size`` bytes of the file at ``path``, kept open."""
        return self._use(path, os.O_RDONLY, lambda fd: os.pread(fd, size, 0))

    def size(self, path: str) -> int:
        """The size the kernel gives the directory at ``path``, kept open: ``fstat`` on it, no
        path to resolve."""
        return self._use(path, os.O_RDONLY | os.O_DIRECTORY, lambda fd: os.fstat(fd).st_size)

    def _use(self, path: str, flags: int, use: Callable[[int], _T]) -> _T:
        """``use`` on the kept descriptor of ``path``, opened (again) when there is none or it
        failed (a test closed it; a thread that ended)."""
        fd = self._fds.get(path)
        if fd is not None:
            try:
                return use(fd)
            except OSError as exc:
                del self._fds[path]
                if exc.errno != errno.EBADF:  # still ours: close it
                    os.close(fd)
        high = keep_high(_os_open(path, flags | os.O_CLOEXEC), self._from)
        self._fds[path] = high
        try:
            return use(high)
        except OSError:
            del self._fds[path]
            os.close(high)
            raise

    def keep_only(self, paths: set[str], under: str) -> None:
        """Close the kept files under ``under`` that are not in ``paths`` (ended threads')."""
        for path in [p for p in self._fds if p.startswith(under) and p not in paths]:
            fd = self._fds.pop(path)
            try:
                os.fstat(fd)
            except OSError:
                continue  # closed under us: not ours to close
            os.close(fd)


def open_fds(files: ProcFiles) -> frozenset[int]:
    """Every open descriptor: the last listing while their number is the same (where the
    kernel gives the number; elsewhere always listed). A test that closes a descriptor it did
    not open and leaves one of its own open, at the same number of them, is not seen: the
    listing's numbers could not tell a replaced descriptor either."""
    count = _fd_count(files)
    if count is None or count != files.fd_count:
        files.fds = _list_fds()
        files.fd_count = count
    return files.fds


def _fd_count(files: ProcFiles) -> int | None:
    """How many descriptors are open, from the size of ``/proc/self/fd`` (None before Linux
    6.2, where the size is 0): ``fstat`` on that directory, kept open in ``files``."""
    try:
        return files.size(f"{PROC}/fd") or None
    except OSError:
        return None


def _list_fds() -> frozenset[int]:
    """Every open descriptor, the listing's own two left out: the directory's, and the copy
    of it ``os.listdir`` reads (the lowest number above it that was free, closed again)."""
    try:
        listing = _os_open(f"{PROC}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return frozenset()
    try:
        fds = {int(fd) for fd in os.listdir(listing)}
    finally:
        os.close(listing)
    fds.discard(listing)
    for fd in sorted(fd for fd in fds if fd > listing):
        if not is_open(fd):
            fds.discard(fd)
            break
    return frozenset(fds)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def children(files: ProcFiles, python_threads: Iterable[int | None] = ()) -> frozenset[int]:
    """The pids of this process's children (each thread's: a child belongs to the thread that
    forked it). The threads are listed again only when their number changed or a Python
    thread (``python_threads``: native ids) is new: most tests start no thread. (A thread
    started outside Python that replaced another, at the same count, is not seen: its
    children are then missed until the count changes.)"""
    if not _has_children():
        return frozenset()  # nearly always: one system call, no /proc reading
    count = _thread_count(files)
    known = set(files.tids)
    if (
        count is None
        or count != len(files.tids)
        or any(str(tid) not in known for tid in python_threads if tid is not None)
    ):
        files.tids = _threads()
    return frozenset(_children_of(files))


def _has_children() -> bool:
    """Whether this process has a child, running or not yet reaped (by any of its threads):
    ``waitid`` answers without waiting and without reaping."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):  # no waitid here: list them
        return True
    return True


def _threads() -> tuple[str, ...]:
    try:
        return tuple(os.listdir(_TASKS))
    except OSError:
        return ()


def _children_of(files: ProcFiles) -> set[int]:
    pids: set[int] = set()
    paths = {f"{_TASKS}{tid}/children" for tid in files.tids}
    for path in paths:
        try:
            pids.update(int(pid) for pid in files.read(path).split())
        except (OSError, ValueError):  # a thread that ended
            continue
    files.keep_only(paths, _TASKS)
    return pids


def _thread_count(files: ProcFiles) -> int | None:
    """num_threads of ``/proc/self/stat``."""
    try:
        return int(files.read(f"{PROC}/stat").rpartition(b")")[2].split()[_NUM_THREADS])
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes(files: ProcFiles) -> int:
    """From ``statm``, far cheaper for the kernel to write than ``stat``."""
    try:
        return int(files.read(f"{PROC}/statm", 256).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0
