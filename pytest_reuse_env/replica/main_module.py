"""``__main__`` and ``sys.argv`` in a replica as plain pytest has them in the controller.

A replica's interpreter was started with ``python -c`` (execnet's popen bootstrap, or the
detached replica's), so its ``__main__`` has no ``__file__``: code that re-runs the main module
in a child process (multiprocessing's spawn, anyio's ``to_process``) then behaves differently
from plain pytest. The controller sends what its own ``__main__`` is (``protocol.MainPayload``);
the replica points its ``__main__`` at the same module, found in this interpreter (on another host
the paths differ), and takes the controller's ``sys.argv``.

Imports only the standard library and the package's ``protocol`` module.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

from pytest_reuse_env import protocol


def imitate_main(main: protocol.MainPayload) -> None:
    """Make this process's ``__main__`` and ``sys.argv`` look like the controller's.

    ``python -m pytest``: ``__main__`` gets pytest's ``__main__.py`` (``__file__``,
    ``__spec__``, ``__loader__``, ``__package__``); the ``pytest`` script: ``__file__`` and a
    loader for that script. A module or file this interpreter cannot find is left out rather
    than named wrongly (a child process would fail to load it).
    """
    module = sys.modules["__main__"]
    spec: Any = None
    if main["spec"]:
        try:
            spec = importlib.util.find_spec(main["spec"])
        except (ImportError, ValueError):
            spec = None
    path = spec.origin if spec is not None and spec.has_location else main["file"]
    if path and os.path.isfile(path):
        module.__file__ = path
        if spec is not None:
            module.__spec__ = spec
            module.__loader__ = spec.loader
            module.__package__ = spec.parent
            module.__cached__ = spec.cached  # type: ignore[attr-defined]
        else:
            module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    argv = list(main["argv"]) or [""]
    sys.argv = [path or argv[0], *argv[1:]]
