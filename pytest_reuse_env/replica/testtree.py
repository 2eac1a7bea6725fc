"""What a replica collected: its test files, their nodes, and the directories that hold them.

Runs inside a replica (``reload.py`` owns one ``CollectedTree``, fed from its collection
hooks); imports the standard library and pytest, never ``controller/``.

A directory's listing changes (its mtime moves) when a test file is added or deleted there;
the tree then lists it again through its own collector, and names the test files to collect
or drop. An added or removed ``conftest.py`` or ``__init__.py``, or a new directory holding
Python files, cannot be taken in place: ``TreeChanged``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, final

import pytest

__all__ = ["CollectedTree", "TreeChanged"]

#: A new directory with more entries than this is not searched for Python files: assume some.
_NEW_DIRECTORY_ENTRIES: Final = 2000


class TreeChanged(Exception):
    """The tree changed in a way a warm replica cannot follow: ``path`` and what happened
    (``what`` formats the path's relative name in)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(what.format(path))
        self.path = path
        self.what = what


@final
class CollectedTree:
    """The replica's collected test files and directories (see the module docstring)."""

    def __init__(self) -> None:
        #: Test file path -> its file nodes (Module, DoctestModule, ...), latest collection.
        self.file_nodes: dict[str, list[pytest.Collector]] = {}
        #: Test files whose collection failed: collected again at every refresh.
        self.failed_files: set[str] = set()
        #: Directory path -> (its collector, mtime_ns, has conftest.py, has __init__.py).
        self.directories: dict[str, tuple[pytest.Collector, int, bool, bool]] = {}

    # -- fed by collection hooks ------------------------------------------------------------

    def started(self, collector: pytest.Collector) -> str | None:
        """``pytest_collectstart``: the file's real path when ``collector`` is a test file."""
        path = getattr(collector, "path", None)
        if path is None or isinstance(collector, pytest.Session):
            return None
        key: str = os.path.realpath(path)
        if isinstance(collector, pytest.Directory):
            self.directories[key] = (collector, *_directory_state(key))
        elif isinstance(collector, pytest.File):
            nodes = self.file_nodes.setdefault(key, [])
            if collector not in nodes:
                nodes.append(collector)
            return key
        return None

    def reported(self, collector: pytest.Collector, report: pytest.CollectReport) -> None:
        """``pytest_make_collect_report``: a test file's collection failed or succeeded."""
        if isinstance(collector, pytest.File):
            key = os.path.realpath(collector.path)
            if report.failed:
                self.failed_files.add(key)
            else:
                self.failed_files.discard(key)

    # -- questions --------------------------------------------------------------------------

    def changed_directories(self) -> list[str]:
        return [d for d, entry in self.directories.items() if _dir_changed(d, entry)]

    def files_under(self, directory: str) -> set[str]:
        top = os.path.join(os.path.realpath(directory), "")
        return {path for path in self.file_nodes if path.startswith(top)}

    def is_test_package_init(self, path: str) -> bool:
        """A package collector's ``__init__.py`` (pytest imports it to set the package up) of
        a directory that holds test files."""
        directory = os.path.dirname(path)
        entry = self.directories.get(directory)
        return (
            os.path.basename(path) == "__init__.py"
            and entry is not None
            and isinstance(entry[0], pytest.Package)
            and bool(self.files_under(directory))
        )

    def directory_changes(
        self, directory: str, listings: dict[str, list[Any]], initial: Iterable[Path] | None
    ) -> set[str]:
        """Test files added to or removed from a collected directory (its listing changed);
        ``initial``: the paths pytest was given (None: unknown, everything counts)."""
        node, _, had_conftest, had_init = self.directories[directory]
        _, has_conftest, has_init = _directory_state(directory)
        if (has_conftest, has_init) != (had_conftest, had_init):
            what = "conftest.py" if has_conftest != had_conftest else "__init__.py"
            raise TreeChanged(os.path.join(directory, what), "{} added or removed")
        if initial is not None and not _collected_in_full(directory, initial):
            # A parent of the paths pytest was given: only its conftest.py counts (above).
            self.directories[directory] = (node, *_directory_state(directory))
            return set()
        listing = listings.setdefault(directory, list(node.collect()))
        paths: set[str] = set()
        for child in listing:
            child_path = os.path.realpath(child.path)
            if isinstance(child, pytest.Directory):
                if child_path not in self.directories and _holds_python(child_path):
                    raise TreeChanged(child_path, "new test directory {}")
            elif child_path not in self.file_nodes:
                paths.add(child_path)  # a new test file
        for known in self.file_nodes:
            if os.path.dirname(known) == directory and not os.path.exists(known):
                paths.add(known)  # a deleted one
        self.directories[directory] = (node, *_directory_state(directory))
        return paths

    def new_nodes(self, path: str, listings: dict[str, list[Any]]) -> list[pytest.File]:
        """Forget a test file's nodes and list it anew under its directory's collector
        (none: deleted, or no longer a test file). ``TreeChanged`` if that collector is
        unknown."""
        self.file_nodes.pop(path, None)
        self.failed_files.discard(path)
        directory = os.path.dirname(path)
        entry = self.directories.get(directory)
        if entry is None:
            if os.path.exists(path):
                raise TreeChanged(path, "no collector for the directory of {}")
            return []
        if directory not in listings:
            listings[directory] = list(entry[0].collect())
        return [
            n
            for n in listings[directory]
            if isinstance(n, pytest.File) and os.path.realpath(n.path) == path
        ]


def _collected_in_full(directory: str, initial: Iterable[Path]) -> bool:
    """Whether pytest collects everything in the directory (it is or lies in one of the
    paths pytest was given), not just the way down to those paths."""
    path = Path(directory)
    return any(path == p or p in path.parents for p in (Path(os.path.realpath(i)) for i in initial))


def _directory_state(directory: str) -> tuple[int, bool, bool]:
    try:
        mtime = os.stat(directory).st_mtime_ns
    except OSError:
        mtime = -1
    return (
        mtime,
        os.path.exists(os.path.join(directory, "conftest.py")),
        os.path.exists(os.path.join(directory, "__init__.py")),
    )


def _dir_changed(directory: str, entry: tuple[Any, int, bool, bool]) -> bool:
    try:
        return os.stat(directory).st_mtime_ns != entry[1]
    except OSError:
        return True


def _holds_python(directory: str) -> bool:
    """Whether a new directory (or one below it) holds a Python file that pytest could collect
    or load as a conftest; a directory without any (a temporary directory) changes nothing."""
    seen = 0
    for _, _, files in os.walk(directory):
        seen += len(files) + 1
        if seen > _NEW_DIRECTORY_ENTRIES or any(f.endswith(".py") for f in files):
            return True
    return False
