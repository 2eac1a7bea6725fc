"""Data files read by project code while it sets something warm up: a module's top level or a
warm fixture's setup.

Runs inside a replica (``modgraph.ModuleGraph`` owns one ``DataReads``); imports only the
standard library, never pytest nor ``controller/``.

A session fixture that loads ``tests/data/config.json``, or a module that reads a schema at
import, keeps what it read for as long as the replica lives; plain pytest reads the file again
on every run. So a file read while something warm is built is a dependency like an imported
module: the graph names it ``<data>/its/real/path`` and gives it edges and recordings, and an
edit (or its creation, when it was missing) invalidates what read it.

Reads are heard by wrapping ``open`` (``builtins.open`` and ``io.open``, the same function:
``pathlib``'s readers, ``json.load(open(...))``, ``numpy.load``, ``shutil``'s copies),
``os.open`` and ``io.open_code`` (a source loader's ``get_data``: ``pkgutil.get_data``), as
``modgraph`` wraps ``__import__``. Python's audit hook would hear more, but it is called for
every audited event (a frame's ``f_code`` is one), and cannot be removed. Only opens for
reading count; source and bytecode files (the graph watches those as modules), the
interpreter's and installed distributions' files and ``/proc``, ``/sys``, ``/dev`` are left
out. A C library that opens a file itself (SQLite, a compiled reader) is not heard.
"""

from __future__ import annotations

import _io
import builtins
import functools
import io
import os
from collections.abc import Callable
from typing import Any, Final, final

from pytest_reuse_env.fingerprint import FileState, file_changed, file_state
from pytest_reuse_env.replica import seethrough

__all__ = ["DATA_PREFIX", "DataReads", "data_name", "data_path", "is_data"]

#: How the module graph names a data file: never a module name.
DATA_PREFIX: Final = "<data>"
_NOT_DATA_SUFFIXES: Final = (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth")
_SYSTEM_PREFIXES: Final = ("/proc/", "/sys/", "/dev/")
_WRITING: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITING_MODES: Final = frozenset("wax+")
#: Above this size a data file's edit is told by its stat values alone (no content digest).
DIGEST_LIMIT: Final = 4 * 1024 * 1024


def data_name(path: str) -> str:
    return DATA_PREFIX + path


def is_data(name: str) -> bool:
    return name.startswith(DATA_PREFIX)


def data_path(name: str) -> str:
    return name[len(DATA_PREFIX) :]


@final
class DataReads:
    """The first state of each data file read by something warm (None: it was missing)."""

    def __init__(
        self,
        record: Callable[[str], bool],
        unwatched: Callable[[str], bool],
        clock_ns: Callable[[], int],
    ) -> None:
        #: ``record(name)``: attach the read to whatever is being built; False if nothing is.
        self._record = record
        #: ``unwatched(path)``: the interpreter's, an installed distribution's, this package's.
        self._unwatched = unwatched
        self._clock_ns = clock_ns
        self.states: dict[str, FileState | None] = {}
        self._busy = False
        self._original_open: Callable[..., Any] | None = None
        self._original_os_open: Callable[..., int] | None = None
        self._original_open_code: Callable[[str], Any] | None = None

    def install(self) -> None:
        if self._original_open is not None:
            return
        self._original_open = original_open = builtins.open
        self._original_os_open = original_os_open = os.open
        self._original_open_code = original_open_code = _io.open_code
        # Compiled so that warnings see through their frames (seethrough.py), as open's own
        # EncodingWarning (stacklevel) names the caller's line.
        wrappers = seethrough.compiled(
            """
            def reading_open(file, mode="r", *args, **kwargs):
                if isinstance(mode, str) and not writing_modes.intersection(mode):
                    heard(file)
                return original_open(file, mode, *args, **kwargs)

            def reading_os_open(path, flags, *args, **kwargs):
                if isinstance(flags, int) and not flags & writing and "dir_fd" not in kwargs:
                    heard(path)
                return original_os_open(path, flags, *args, **kwargs)

            def reading_open_code(path):
                heard(path)
                return original_open_code(path)
            """,
            {
                "original_open": original_open,
                "original_os_open": original_os_open,
                "original_open_code": original_open_code,
                "heard": self._heard,
                "writing_modes": _WRITING_MODES,
                "writing": _WRITING,
            },
        )
        reading_open = functools.wraps(original_open)(wrappers["reading_open"])
        reading_os_open = functools.wraps(original_os_open)(wrappers["reading_os_open"])
        builtins.open = io.open = reading_open
        os.open = reading_os_open
        # A source loader's get_data (``pkgutil.get_data``, a package's data file) reads with
        # open_code, looked up on _io at every call; source files it reads are not data.
        _io.open_code = io.open_code = functools.wraps(original_open_code)(
            wrappers["reading_open_code"]
        )

    def uninstall(self) -> None:
        if self._original_open is None:
            return
        builtins.open = io.open = self._original_open
        os.open = self._original_os_open  # type: ignore[assignment]
        if self._original_open_code is not None:
            _io.open_code = io.open_code = self._original_open_code  # type: ignore[assignment]
        self._original_open = self._original_os_open = self._original_open_code = None

    def _heard(self, path: object) -> None:
        if self._busy:
            return
        self._busy = True  # stating and digesting the file opens it too
        try:
            self._read(path)
        except Exception:  # hearing a read must never break it
            pass
        finally:
            self._busy = False

    def _read(self, path: object) -> None:
        # Cheapest tests first: the replica's own leak checks open /proc files on every test.
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if (
            not isinstance(path, str)
            or path.endswith(_NOT_DATA_SUFFIXES)
            or path.startswith(_SYSTEM_PREFIXES)
        ):
            return
        real = os.path.realpath(path)
        if real.startswith(_SYSTEM_PREFIXES) or self._unwatched(real):
            return
        if not self._record(data_name(real)):
            return  # a test's own read: tests run again anyway
        if real not in self.states:
            # As it is when read: what was built holds this content (or knows it was missing).
            # No digest of a large file: one a fixture wrote and loads (a model) would be read
            # and hashed again at every check while it is racy.
            self.states[real] = file_state(real, self._clock_ns(), digest_limit=DIGEST_LIMIT)

    def missing(self, path: str) -> None:
        """A file whose absence something warm relied on (a module an import did not find,
        ``modgraph``): its appearance invalidates what looked for it, as a data file's
        would. Not a read: no suffix or size test, only where it would be."""
        real = os.path.realpath(path)
        if os.path.exists(real) or self._unwatched(real):
            return
        if self._record(data_name(real)):
            self.states.setdefault(real, None)

    def changed(self) -> list[str]:
        """Files that differ from what was read (or appeared since they were missing)."""
        return [
            path
            for path, state in self.states.items()
            if (os.path.isfile(path) if state is None else file_changed(path, state))
        ]

    def forget(self, path: str) -> None:
        """What read it is rebuilt: the next read records it anew."""
        self.states.pop(path, None)
