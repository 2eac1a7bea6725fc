"""Whether a replica that collected only some test files saw its tests as the pytest process did.

A run-scoped replica collects the files holding its environment's tests, not everything the
run's arguments name (``controller/launch/collect.py``). Most suites collect the same tests
either way; some do not, and those must not run in such a replica:

- a ``pytest_collection_modifyitems`` that decides by position or by the whole run (skip every
  other test, mark a file's tests when another file is collected, keep ``items[3:]``) marks or
  deselects other tests when it sees fewer;
- a test module's ``import helpers`` finds whichever same-named module was imported first
  (pytest's default ``prepend`` import mode puts each test directory on ``sys.path``); with
  other files not imported it can be another file;
- a file outside the rootdir gets its nodeids from the arguments it was reached by.

So the pytest process sends, with the list of files, what it collected for each of those tests
(``digests``: the test's markers, its own and inherited, with their arguments) and which file
each project module it imported came from (``project_modules``). The replica compares after its
own collection (``difference``) and says what differs in READY; the controller then replaces
it with one that collects every file. What this cannot see: a hook or fixture that counts the
run's tests and acts on the number without marking them.

A warm replica (``scope="global"``, or watch mode's next round) kept the tests an earlier run
collected: a collection hook that reads a file, or a ``skipif`` condition evaluated at import
(``os.path.exists``), may decide otherwise this run with no project file edited. Its READY
carries its tests' digests, and the controller compares them with its own collection's
(``marked_otherwise``); a difference makes the replica stale.

Shared by both sides; imports the standard library and pytest.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final

import pytest

__all__ = ["difference", "digests", "marked_otherwise", "project_modules"]

#: An object's address in its default repr: the same object differs from process to process.
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")


def _text(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that raises: its type will do
        text = f"<{type(value).__qualname__}>"
    return _ADDRESS.sub("", text)


def _node_marks(node: Any, cache: dict[int, str], marks: dict[int, str]) -> str:
    """The text of a node's markers and its parents', cached per node (a module's or a class's
    are shared by every test in it) and per mark (a parametrize mark by every test it made)."""
    key = id(node)
    known = cache.get(key)
    if known is not None:
        return known
    parts = []
    for mark in getattr(node, "own_markers", ()):
        text = marks.get(id(mark))
        if text is None:
            text = marks[id(mark)] = (
                f"{mark.name}{_text(mark.args)}{_text(sorted(mark.kwargs.items()))}"
            )
        parts.append(text)
    parent = getattr(node, "parent", None)
    text = "|".join(parts) + ("/" + _node_marks(parent, cache, marks) if parent is not None else "")
    cache[key] = text
    return text


def digests(items: Iterable[pytest.Item]) -> dict[str, str]:
    """Each test's nodeid -> a short digest of its markers (its own and its collectors'), with
    their arguments: what ``pytest_collection_modifyitems`` hooks change."""
    cache: dict[int, str] = {}
    marks: dict[int, str] = {}
    # The tests of one function mostly share their text (its parametrize mark is one object).
    hashed: dict[str, str] = {}
    found = {}
    for item in items:
        text = _node_marks(item, cache, marks)
        digest = hashed.get(text)
        if digest is None:
            digest = hashed[text] = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        found[item.nodeid] = digest
    return found


def project_modules(root: str) -> dict[str, str]:
    """Modules imported from files under ``root`` (not an installed distribution, not a
    conftest: those are compared by path already) -> their file."""
    prefix = os.path.join(os.path.abspath(root), "")
    found: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (
            not isinstance(path, str)
            or not path.startswith(prefix)
            or name == "__main__"
            or name.rpartition(".")[2] == "conftest"
            or "site-packages" in path
            or "dist-packages" in path
        ):
            continue
        found[name] = os.path.normpath(path)
    return found


def marked_otherwise(expected: Mapping[str, str], found: Mapping[str, str]) -> str | None:
    """The first of the ``expected`` tests (nodeid -> ``digests``) missing from ``found`` or
    marked otherwise there, said from the pytest process's side; None if none."""
    for nodeid, digest in expected.items():
        if nodeid not in found:
            return f"it did not collect {nodeid}"
        if found[nodeid] != digest:
            return (
                f"{nodeid} has other markers in the replica (a collection hook or a skipif "
                "condition decided otherwise)"
            )
    return None


def difference(
    expected: Mapping[str, str],
    modules: Mapping[str, str],
    items: Mapping[str, pytest.Item],
    root: str,
) -> str | None:
    """How this collection differs from the pytest process's for its tests (``expected``:
    their ``digests`` there; ``modules``: its ``project_modules``), or None."""
    differs = marked_otherwise(expected, digests(items[n] for n in expected if n in items))
    if differs is not None:
        return differs
    here = project_modules(root)
    for name, path in modules.items():
        other = here.get(name)
        # The same file by another name (a symlinked directory on one sys.path entry) is
        # the same module.
        if (
            other is not None
            and other != path
            and os.path.realpath(other) != os.path.realpath(path)
        ):
            return (
                f"module {name} is {os.path.relpath(other, root)} in the replica, "
                f"{os.path.relpath(path, root)} in the pytest process"
            )
    return None
