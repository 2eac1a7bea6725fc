"""Wrappers of builtins (``__import__``, ``open``) that ``warnings`` sees through, inside a
replica.

A wrapper adds a frame between a caller and the builtin. A module that warns while it is
imported, ``warnings.warn(..., stacklevel=2)`` as deprecation shims do, would then name the
wrapper's file instead of the line that imported it, and a test that checks where the warning
points fails only in a replica. CPython's warnings skip the frames of its own import machinery
when they count ``stacklevel``: frames whose file name holds both "importlib" and "_bootstrap"
(``_warnings.c`` and ``warnings.py`` alike). The wrappers are compiled under such a name, so a
warning names the same line as without them.

Imports only the standard library.
"""

from __future__ import annotations

import textwrap
from typing import Any, Final

#: Holds "importlib" and "_bootstrap" (see above), and says whose frame it is.
FILENAME: Final = "<pytest-reuse-env wrapper, skipped by warnings as importlib._bootstrap is>"


def compiled(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run ``source`` (function definitions) in ``namespace`` under ``FILENAME``; returns the
    namespace, now holding the functions."""
    exec(compile(textwrap.dedent(source), FILENAME, "exec"), namespace)
    return namespace
