"""Re-register an invalidated conftest in place, as pytest would have registered it afresh.

Runs inside a replica (``reload.py`` drives it); imports the standard library, pytest and its
private conftest and fixture machinery (``PytestPluginManager._importconftest``,
``_conftest_plugins``, ``_dirpath2confmods``; ``FixtureManager.parsefactories`` and its
node-keyed registry, pytest 9.1+), and ``replica.fixtureregistry``; never ``controller/``.

A conftest is invalidated when its file changed or a module it depends on was (``modgraph``).
Only a conftest that is *just fixtures* is re-registered: one that defines any ``pytest_*`` name
(a hook, ``pytest_plugins``), before or after the edit, raises ``NotInPlace`` (a fresh replica:
hooks such as ``pytest_addoption`` or ``pytest_configure`` cannot run twice in one session), as
does one whose ``collect_ignore``/``collect_ignore_glob`` changed (collection would differ).

Re-registering (``Swap``): the old module leaves the plugin manager and its conftest tables;
the new one is imported as pytest imports it (``_importconftest``: assertion rewriting applies),
takes the old one's place in ``_dirpath2confmods`` (their order decides which conftest wins) and
is registered; its fixtures are parsed at the node the old ones were visible under (the
conftest's directory, or the session for the rootdir's). Each old definition whose new version
has the same signature (name, scope, params, ids, autouse, arguments) stays the registered
object with the new function (``adopt``): the items collected against it stay valid, and its
cached value is kept only if ``sameness`` proves the new function does what the old one did.
Any other change (a fixture added, removed or re-declared) makes the swap ``structural``: the
test files under the conftest's directory are collected again.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, final

import pytest

from pytest_reuse_env.replica import fixtureregistry

__all__ = ["IGNORE_NAMES", "NotInPlace", "Swap", "loaded_conftests", "plugin_names"]

#: Conftest variables that shape collection: a change means the test files listed differ.
IGNORE_NAMES: Final = ("collect_ignore", "collect_ignore_glob")
_IMMUTABLE: Final = (int, float, complex, str, bytes, bool, type(None))


class NotInPlace(Exception):
    """The conftest cannot be re-registered in place; the message says why (for ``-v``)."""


def loaded_conftests(pluginmanager: Any) -> dict[str, ModuleType]:
    """The conftest modules pytest loaded, by their file's real path."""
    found: dict[str, ModuleType] = {}
    for module in list(getattr(pluginmanager, "_conftest_plugins", ())):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str):
            found[os.path.realpath(filename)] = module
    return found


def plugin_names(module: ModuleType) -> list[str]:
    """The ``pytest_*`` names a module defines (hooks, ``pytest_plugins``)."""
    return sorted(name for name in vars(module) if name.startswith("pytest_"))


def source_plugin_names(path: str) -> list[str]:
    """The ``pytest_*`` names a conftest's source binds anywhere (``*`` for a star import,
    which may bind any), read without running it."""
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return []  # its import fails alike, and says why
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.partition(".")[0] for alias in node.names)
    return sorted(n for n in names if n.startswith("pytest_") or n == "*")


def fixture_functions(holder: ModuleType) -> list[tuple[str, Any]]:
    """``(argname, function)`` of each fixture ``parsefactories`` registers for ``holder``."""
    from _pytest.fixtures import FixtureFunctionDefinition

    found: list[tuple[str, Any]] = []
    for name, obj in list(vars(holder).items()):
        if type(obj) is FixtureFunctionDefinition:
            marker = obj._fixture_function_marker
            found.append((marker.name or name, obj._get_wrapped_function()))
    return found


@final
@dataclass
class Swap:
    """One conftest module replaced by its re-import (see the module docstring)."""

    #: Its plugin name: its path as pytest spelled it.
    name: str
    old: ModuleType
    #: The node its fixtures are visible under.
    node: Any
    #: Its registered fixture definitions before the swap.
    old_defs: list[Any]
    new: ModuleType | None = None
    #: (old definition kept registered, new definition whose function it takes).
    pairs: list[tuple[Any, Any]] = field(default_factory=list)
    #: Old definitions without a counterpart (gone from the registry), and new ones.
    removed: list[Any] = field(default_factory=list)
    added: list[Any] = field(default_factory=list)

    @property
    def structural(self) -> bool:
        return bool(self.removed or self.added)

    @property
    def directory(self) -> Path:
        return Path(os.path.abspath(self.name)).parent

    @classmethod
    def prepare(cls, config: pytest.Config, module: ModuleType, node: Any) -> Swap:
        """Check the conftest may be re-registered and find what it registered; ``node`` is
        where its fixtures are visible when it registered none (None: unknown). The messages
        of ``NotInPlace`` describe the conftest ("a conftest with hooks: ...")."""
        pm = config.pluginmanager
        name = pm.get_name(module)
        if name is None or not name.endswith("conftest.py"):
            raise NotInPlace("a conftest pytest did not register as one")
        if not os.path.exists(name):
            raise NotInPlace("a conftest, removed")
        hooks = plugin_names(module) or source_plugin_names(os.path.realpath(name))
        if hooks:
            raise NotInPlace(f"a conftest with hooks: {', '.join(hooks)}")
        manager = config.pluginmanager.get_plugin("funcmanage")
        if manager is None or not fixtureregistry.node_keyed(manager):
            raise NotInPlace("a conftest, and this pytest cannot re-register one")
        old_defs: list[Any] = []
        places: list[Any] = []
        for argname, function in fixture_functions(module):
            for place, defs in manager._arg2node2fixturedefs.get(argname, {}).items():
                mine = [d for d in defs if d.func is function and d not in old_defs]
                if mine and place not in places:
                    places.append(place)
                old_defs += mine
        if len(places) > 1:
            raise NotInPlace("a conftest whose fixtures are registered at several nodes")
        node = places[0] if places else node
        if node is None:
            raise NotInPlace("a conftest whose directory has no collector")
        return cls(name=name, old=module, node=node, old_defs=old_defs)

    def reregister(self, config: pytest.Config, session: pytest.Session) -> None:
        """Import the conftest anew and register it in the old one's place. The messages of
        ``NotInPlace`` follow the conftest's name ("raised on re-import: ...")."""
        pm = config.pluginmanager
        manager = session._fixturemanager
        ignores = {n: getattr(self.old, n, None) for n in IGNORE_NAMES}
        positions = {
            directory: mods.index(self.old)
            for directory, mods in pm._dirpath2confmods.items()
            if self.old in mods
        }
        for directory in positions:
            pm._dirpath2confmods[directory].remove(self.old)
        pm._conftest_plugins.discard(self.old)
        if pm.is_registered(self.old):
            pm.unregister(self.old)
        try:
            new = pm._importconftest(
                Path(self.name),
                config.getoption("importmode"),
                config.rootpath,
                consider_namespace_packages=config.getini("consider_namespace_packages"),
            )
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a conftest may fail, skip or exit at import
            cause = getattr(exc, "cause", exc)
            raise NotInPlace(f"raised on re-import: {cause!r}") from exc
        self.new = new
        for directory, index in positions.items():
            mods = pm._dirpath2confmods.get(directory)
            if mods is not None:
                if new in mods:
                    mods.remove(new)
                mods.insert(index, new)
        hooks = plugin_names(new)
        if hooks:
            raise NotInPlace(f"defines hooks after the edit: {', '.join(hooks)}")
        for name, old_value in ignores.items():
            if not _same_data(old_value, getattr(new, name, None)):
                raise NotInPlace(f"changed its {name}")
        # Registration deferred its fixtures to its directory's collection, long done.
        manager._pending_conftests.pop(self.directory, None)
        self._parse(manager, new)

    def _parse(self, manager: Any, new: ModuleType) -> None:
        table: dict[str, dict[Any, list[Any]]] = manager._arg2node2fixturedefs
        autouse = manager._node_autousenames.setdefault(self.node, [])
        for old in self.old_defs:
            if getattr(old, "_autouse", False) and old.argname in autouse:
                autouse.remove(old.argname)
        before = {id(d) for d in fixtureregistry.all_fixture_defs(manager)}
        manager.parsefactories(holder=new, node=self.node)
        fresh = [d for d in fixtureregistry.all_fixture_defs(manager) if id(d) not in before]
        unpaired = list(fresh)
        for old in self.old_defs:
            match = next((d for d in unpaired if same_signature(old, d)), None)
            defs = table.get(old.argname, {}).get(self.node, [])
            if old in defs:
                defs.remove(old)
            if match is None:
                self.removed.append(old)
                continue
            unpaired.remove(match)
            defs[defs.index(match)] = old  # the old object, in the new one's place
            self.pairs.append((old, match))
        self.added = unpaired
        for name, by_node in list(table.items()):
            if self.node in by_node and not by_node[self.node]:
                del by_node[self.node]
            if not by_node:
                del table[name]

    def adopt(self) -> None:
        """The kept definitions take their new functions (after the rebuilt ones' teardown)."""
        for old, new in self.pairs:
            old.func = new.func


def same_signature(old: Any, new: Any) -> bool:
    """Whether items collected against ``old`` would have been collected alike against
    ``new``: same name, scope, parameters, ids, autouse, arguments and node."""
    return (
        type(old) is type(new)
        and old.argname == new.argname
        and old._scope == new._scope
        and tuple(old.argnames) == tuple(new.argnames)
        and getattr(old, "_autouse", False) == getattr(new, "_autouse", False)
        and old.node is new.node
        and _same_data(old.params, new.params)
        and _same_data(old.ids, new.ids)
    )


def _same_data(old: object, new: object) -> bool:
    """Equal plain data (None, numbers, strings, and lists/tuples of them), or the very same
    object; anything else is not proven equal."""
    if old is new:
        return True
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return (
            type(old) is type(new)
            and len(old) == len(new)
            and all(_same_data(a, b) for a, b in zip(old, new, strict=True))
        )
    return type(old) is type(new) and isinstance(old, _IMMUTABLE) and old == new
