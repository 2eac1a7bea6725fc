"""pytest's fixture registry, read and edited by the reloader (private pytest API).

Runs inside a replica (``reload.py`` and ``conftests.py`` use it); imports only the standard
library. pytest 9.1+ keys fixture definitions by the node they are visible under
(``_arg2node2fixturedefs``); older versions by nodeid (``_arg2fixturedefs``,
``_arg2nodeid2fixturedefs``): both are handled where reading, and re-registering a conftest
needs the node-keyed one (``node_keyed``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "all_fixture_defs",
    "defined_at",
    "forget_fixture_defs",
    "node_keyed",
    "under",
]


def under(nodeid: str, prefixes: list[str]) -> bool:
    """Whether ``nodeid`` is one of ``prefixes`` or lies below one."""
    return any(nodeid == p or nodeid.startswith(p + "::") for p in prefixes)


def defined_at(fixturedef: Any) -> str:
    """The nodeid of the node a definition is visible under."""
    node = getattr(fixturedef, "node", None)
    return str(node.nodeid) if node is not None else str(fixturedef.baseid or "")


def node_keyed(manager: Any) -> bool:
    """Whether this pytest keys definitions by node and defers conftest parsing (9.1+)."""
    return (
        isinstance(getattr(manager, "_arg2node2fixturedefs", None), dict)
        and isinstance(getattr(manager, "_node_autousenames", None), dict)
        and isinstance(getattr(manager, "_pending_conftests", None), dict)
    )


def all_fixture_defs(manager: Any) -> list[Any]:
    every = getattr(manager, "_get_all_fixture_defs", None)
    if every is not None:
        return list(every())
    return [d for defs in manager._arg2fixturedefs.values() for d in defs]


def forget_fixture_defs(manager: Any, prefixes: list[str]) -> None:
    """Remove definitions (and autouse names) registered at nodes under ``prefixes``."""
    for attribute in ("_arg2node2fixturedefs", "_arg2nodeid2fixturedefs"):
        table = getattr(manager, attribute, None) or {}
        for name, by_place in list(table.items()):
            for place in list(by_place):
                if under(getattr(place, "nodeid", place), prefixes):
                    del by_place[place]
            if not by_place:
                del table[name]
    legacy = getattr(manager, "_arg2fixturedefs", None)
    if legacy is not None:
        for name, defs in list(legacy.items()):
            legacy[name] = [d for d in defs if not under(defined_at(d), prefixes)]
            if not legacy[name]:
                del legacy[name]
    for attribute in ("_node_autousenames", "_nodeid_autousenames"):
        autouse = getattr(manager, attribute, None) or {}
        for place in list(autouse):
            if under(getattr(place, "nodeid", place), prefixes):
                del autouse[place]
