"""Which modules a replica imported, who depends on whom, and what an edit invalidates.

Runs inside a replica (``reload.py`` drives it); imports only the standard library and the
package's ``fingerprint``, never pytest nor ``controller/``.

- **Kinds.** A module's file is ``stdlib`` (the interpreter's library: never watched, the
  interpreter is part of the environment fingerprint), ``installed`` (under a
  ``site-packages``/``dist-packages`` directory: watched, a change means a fresh replica),
  ``extension`` (a compiled or sourceless module outside those: cannot be re-imported) or
  ``project`` (everything else, wherever it lives: re-imported when it changes).
- **Edges.** ``A -> B`` means A holds something of B's, so A must be re-imported when B is:
  an import statement (or ``importlib.import_module``) executed while A's top level ran,
  however deep in the call stack (recorded by wrapping ``builtins.__import__``); a submodule
  depends on its package; and, found by scanning A's globals when an edit is checked, an
  object of B's that A holds (a function, a class, an instance, a module, also inside dicts,
  lists and instances up to a small depth: registries filled by B at import time). And
  ``A -> B`` when B's top level grew one of A's containers (a list, dict or set among A's
  globals or its classes' attributes, a ``singledispatch`` function's registry, a class's
  subclasses): B registered something in A, maybe a plain value the scan cannot trace
  (``HANDLERS.append("x")``). Sizes are taken as B imports A (``_container_sizes``) and
  compared once B's top level has run (``_settle``).
  Imports executed by functions after import time bind nothing at module level and make no
  edge; while a *recording* is active (a fixture's setup) they are added to it instead.
- **Files.** The state of each watched file is taken when the module is first seen, at an
  observation point (after collection, after each run, before each check). A module first seen
  at one point was imported after the previous one, so a file modified after that previous
  point may have been edited after its import: it is recorded as changed. Racy files keep a
  content digest (see ``fingerprint``).
- **Data files.** A file project code reads while a module's top level runs or a fixture is
  set up is a node too (``<data>/its/path``, see ``datareads``): an edge from that module, an
  entry in that recording; its edit invalidates them like a module's.
"""

from __future__ import annotations

import builtins
import importlib
import os
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import CodeType, FunctionType, ModuleType
from typing import Any, Final, final

from pytest_reuse_env.fingerprint import FileState, file_changed, file_state
from pytest_reuse_env.replica import seethrough
from pytest_reuse_env.replica.datareads import DataReads, data_name

__all__ = [
    "KIND_EXTENSION",
    "KIND_INSTALLED",
    "KIND_PROJECT",
    "KIND_STDLIB",
    "ModuleGraph",
    "referenced_modules",
    "source_of",
]

KIND_STDLIB: Final = "stdlib"
KIND_INSTALLED: Final = "installed"
KIND_EXTENSION: Final = "extension"
KIND_PROJECT: Final = "project"

#: A file modified this long before the previous observation point may already be newer than
#: its import (filesystem timestamps are coarse): treat it as edited after import.
SUSPECT_MARGIN_NS: Final = 50_000_000
#: The globals scan looks this deep into containers and instances, and at most this many
#: objects per module: registries are shallow, and the scan must stay cheap.
SCAN_DEPTH: Final = 3
SCAN_BUDGET: Final = 5000
#: A recorded state that differs from every real one: "treat as changed".
SUSPECT: Final = FileState(-1, -1, None)

#: Kinds whose modules (and their submodules) are never project modules: no edge, no recording.
_UNWATCHED_KINDS: Final = frozenset({KIND_STDLIB, KIND_INSTALLED})
_INSTALLED_DIRECTORY_NAMES: Final = frozenset({"site-packages", "dist-packages"})
_SKIPPED_NAMES: Final = frozenset({"__main__", "__mp_main__"})


#: This package's own modules: part of the environment fingerprint, never re-imported.
_OWN_PACKAGE: Final = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "")


#: Where the interpreter lives (not a virtualenv, which may be the project): fingerprinted.
_INTERPRETER_PREFIXES: Final = tuple(
    {os.path.join(os.path.realpath(p), "") for p in (sys.base_prefix, sys.base_exec_prefix)}
)


def _stdlib_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {paths["stdlib"], paths["platstdlib"]}
    return tuple(os.path.join(os.path.realpath(p), "") for p in prefixes if p)


def source_of(module: ModuleType) -> str | None:
    """The module's file, symlinks resolved, ``.pyc`` mapped to its source; None if it has none."""
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str) or not filename:
        return None
    path = os.path.realpath(filename)
    if path.endswith(".pyc"):
        try:
            source = importlib.util.source_from_cache(path)
        except ValueError:
            source = path[:-1]
        if os.path.exists(source):
            return source
    return path


@final
class ModuleGraph:
    """Import edges, file states and invalidation for one replica process."""

    def __init__(self, *, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._stdlib = _stdlib_prefixes()
        #: importer -> modules it depends on (import-time imports; see the module docstring).
        self.edges: dict[str, set[str]] = {}
        #: Module name -> its kind, its source file (None: no file) once first seen.
        self.kinds: dict[str, str] = {}
        self.files: dict[str, str | None] = {}
        #: Source file -> state when its module was first seen (or re-imported).
        self.states: dict[str, FileState] = {}
        #: Module names in the order they were first seen (re-import order).
        self.order: dict[str, int] = {}
        #: Active recordings (fixture setups): project modules imported while each runs.
        self.recordings: list[set[str]] = []
        #: Code of the frames that call a fixture's or a test's function (set by the reloader):
        #: no module's top level runs below them, so the search for an importer stops there.
        self.floors: frozenset[CodeType] = frozenset()
        self._observed_ns = clock_ns()
        self._original_import: Callable[..., ModuleType] | None = None
        self._original_import_module: Callable[..., ModuleType] | None = None
        #: importer -> imported -> the imported module's container sizes as the importer's top
        #: level imported it; compared once that top level has run (``_settle``).
        self._sizes: dict[str, dict[str, tuple[tuple[str, int], ...]]] = {}
        #: Pairs already compared: sizes are taken once per pair.
        self._sized: set[tuple[str, str]] = set()
        #: Data files read while something warm was built (see the module docstring).
        self.data = DataReads(self._record_data, self.outside_project, clock_ns)

    # -- classification -------------------------------------------------------------------

    def kind_of_file(self, path: str | None) -> str:
        if path is None:
            return KIND_EXTENSION
        parts = path.split(os.sep)
        if _INSTALLED_DIRECTORY_NAMES.intersection(parts[:-1]):
            return KIND_INSTALLED
        if path.startswith(self._stdlib):
            return KIND_STDLIB
        if path.startswith(_OWN_PACKAGE):
            return KIND_INSTALLED
        if not path.endswith(".py"):
            return KIND_EXTENSION
        return KIND_PROJECT

    def kind(self, name: str) -> str | None:
        """The kind of a loaded module (None: not loaded, or a builtin/frozen one)."""
        known = self.kinds.get(name)
        if known is not None:
            return known
        module = sys.modules.get(name)
        if module is None or name in _SKIPPED_NAMES:
            return None
        if getattr(module, "__file__", None) is None:
            # Builtins, frozen modules and namespace packages: nothing to watch or re-import.
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.submodule_search_locations is not None:
                self.kinds[name] = KIND_PROJECT  # a namespace package: harmless to drop
                self.files[name] = None
                return KIND_PROJECT
            return None
        path = source_of(module)
        found = self.kind_of_file(path)
        self.kinds[name] = found
        self.files[name] = path
        return found

    def is_project(self, name: str) -> bool:
        return self.kind(name) == KIND_PROJECT

    def outside_project(self, path: str) -> bool:
        """The interpreter's (its library, its zip on sys.path), an
        installed distribution's or this package's file."""
        if path.startswith(_INTERPRETER_PREFIXES):
            return True
        return self.kind_of_file(path) in (KIND_STDLIB, KIND_INSTALLED)

    # -- recording imports ------------------------------------------------------------------

    def install(self) -> None:
        """Wrap ``builtins.__import__`` and ``importlib.import_module`` to record edges."""
        if self._original_import is not None:
            return
        self._original_import = original = builtins.__import__
        self._original_import_module = original_module = importlib.import_module
        # Compiled so that warnings see through their frames (seethrough.py): a module that
        # warns with stacklevel=2 while it is imported names its importer, as without them.
        wrappers = seethrough.compiled(
            """
            def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
                try:
                    module = original(name, globals, locals, fromlist, level)
                except ModuleNotFoundError as error:
                    if not level:
                        try:
                            not_found(error.name)
                        except Exception:
                            pass
                    raise
                if not level and kinds.get(name) in unwatched:
                    return module  # the common lazy import (json, numpy): nothing to record
                try:
                    record(name, globals, fromlist, level, module)
                except Exception:  # recording must never break an import
                    pass
                return module

            def recording_import_module(name, package=None):
                module = original_module(name, package)
                try:
                    record(module.__name__, None, (), 0, module)
                except Exception:
                    pass
                return module
            """,
            {
                "original": original,
                "original_module": original_module,
                "record": self._record,
                "not_found": self._not_found,
                "kinds": self.kinds,
                "unwatched": _UNWATCHED_KINDS,
            },
        )
        builtins.__import__ = wrappers["recording_import"]
        importlib.import_module = wrappers["recording_import_module"]
        self.data.install()

    def uninstall(self) -> None:
        self.data.uninstall()
        if self._original_import is not None:
            builtins.__import__ = self._original_import
            importlib.import_module = self._original_import_module  # type: ignore[assignment]
            self._original_import = self._original_import_module = None

    def _record(
        self,
        name: str,
        globals: Mapping[str, Any] | None,
        fromlist: Iterable[str] | None,
        level: int,
        module: ModuleType,
    ) -> None:
        if level:
            base = module.__name__ if fromlist else None
            if base is None:  # "from . import x" returns the package; "import .x" is invalid
                return
            target = base
        else:
            target = name
        targets = [target] if self.is_project(target) else []
        if fromlist:
            for entry in fromlist:
                sub = f"{target}.{entry}"
                if sub in sys.modules and self.is_project(sub):
                    targets.append(sub)
        if not targets:
            return
        for recording in self.recordings:
            recording.update(targets)
        importer = _executing_module(sys._getframe(2), self.floors)
        for done in targets:  # its import returned: its top level has run
            if done != importer and done in self._sizes:
                self._settle(done)
        if importer is not None and importer != target and self.is_project(importer):
            imported = [t for t in targets if t != importer]
            self.edges.setdefault(importer, set()).update(imported)
            for name in imported:
                pair = (importer, name)
                if pair not in self._sized:
                    self._sized.add(pair)
                    sizes = _container_sizes(sys.modules.get(name))
                    self._sizes.setdefault(importer, {})[name] = sizes

    def _not_found(self, name: str | None) -> None:
        """An import found no module ``name`` (``try: import optional_mod`` ... ``except
        ImportError``): where a top-level module of that name would be in the project's
        directories on ``sys.path`` is watched as a missing data file, so a module created
        there later re-imports the importer, which now finds it."""
        if not name or "." in name or self.kind(name) is not None:
            return
        for entry in list(sys.path):
            directory = os.path.abspath(entry or os.curdir)
            for candidate in (f"{name}.py", os.path.join(name, "__init__.py")):
                # Not the interpreter's or an installed distribution's directory: ``missing``
                # leaves those out, as it does their data files.
                self.data.missing(os.path.join(directory, candidate))

    def _settle(self, importer: str | None = None) -> None:
        """Compare the sizes taken while ``importer``'s top level ran (None: every pending
        pair's) with now: a container it grew makes the module that holds it depend on it."""
        importers = list(self._sizes) if importer is None else [importer]
        for name in importers:
            for held, before in self._sizes.pop(name, {}).items():
                holder = sys.modules.get(held)
                if holder is not None and _container_sizes(holder) != before:
                    self.edges.setdefault(held, set()).add(name)

    def record_import(self, importer: str, imported: str) -> None:
        self.edges.setdefault(importer, set()).add(imported)

    def _record_data(self, name: str) -> bool:
        """A data file was read: a dependency of every active recording and of the project
        module whose top level is running, if any; False when nothing warm is being built."""
        for recording in self.recordings:
            recording.add(name)
        importer = _executing_module(sys._getframe(1), self.floors)
        if importer is not None and self.is_project(importer):
            self.edges.setdefault(importer, set()).add(name)
            return True
        return bool(self.recordings)

    # -- files ------------------------------------------------------------------------------

    def observe(self, extra_files: Iterable[str] = ()) -> None:
        """Record the state of files of modules (and ``extra_files``) not seen before."""
        previous = self._observed_ns
        now = self._clock_ns()
        for name in list(sys.modules):
            if name in self.order or name in _SKIPPED_NAMES:
                continue
            kind = self.kind(name)
            if kind is None:
                continue
            self.order[name] = len(self.order)
            path = self.files.get(name)
            if kind != KIND_STDLIB and path is not None and path not in self.states:
                self.states[path] = self._first_state(path, previous, now)
        for path in extra_files:
            if path not in self.states:
                self.states[path] = self._first_state(path, previous, now)
        self._observed_ns = now

    def _first_state(self, path: str, previous_ns: int, now_ns: int) -> FileState:
        state = file_state(path, now_ns)
        if state is None:
            return SUSPECT
        if state.mtime_ns > previous_ns - SUSPECT_MARGIN_NS:
            return SUSPECT  # maybe edited after its import: re-import it at the next check
        return state

    def refresh_state(self, path: str) -> None:
        """The file as it is now is what the next import reads (called before re-importing).
        A data file is forgotten instead: what read it is rebuilt and reads it again."""
        if path in self.data.states:
            self.data.forget(path)
            return
        state = file_state(path, self._clock_ns())
        if state is None:
            self.states.pop(path, None)
        else:
            self.states[path] = state

    def changed_files(self) -> list[str]:
        changed = {path for path, state in self.states.items() if file_changed(path, state)}
        return sorted(changed.union(self.data.changed()))

    def modules_of(self, paths: Iterable[str]) -> dict[str, list[str]]:
        """Loaded module names by source file, for ``paths``."""
        wanted = set(paths)
        found: dict[str, list[str]] = {}
        for name in list(sys.modules):
            self.kind(name)
            path = self.files.get(name)
            if path in wanted:
                found.setdefault(path, []).append(name)
        for path in wanted.intersection(self.data.states):
            found.setdefault(path, []).append(data_name(path))
        return found

    # -- invalidation -----------------------------------------------------------------------

    def scan_references(self) -> None:
        """Add edges for objects each project module holds of another's (see docstring)."""
        self._settle()  # imports whose end no wrapper saw (pytest's importlib mode)
        for name, module in list(sys.modules.items()):
            if not self.is_project(name) or not isinstance(module, ModuleType):
                continue
            held = _referenced_modules(module)
            held.discard(name)
            targets = {t for t in held if self.is_project(t)}
            if targets:
                self.edges.setdefault(name, set()).update(targets)

    def dependents(self, changed: Iterable[str]) -> set[str]:
        """``changed`` and every loaded module that depends on one of them, transitively."""
        reverse: dict[str, set[str]] = {}
        for importer, imported in self.edges.items():
            for target in imported:
                reverse.setdefault(target, set()).add(importer)
        loaded = list(sys.modules)
        for name in loaded:
            parent = name.rpartition(".")[0]
            if parent:
                reverse.setdefault(parent, set()).add(name)
        closure: set[str] = set()
        work = list(changed)
        while work:
            name = work.pop()
            if name in closure:
                continue
            closure.add(name)
            work.extend(reverse.get(name, ()))
        return closure

    def drop(self, names: Iterable[str]) -> None:
        """Remove modules from ``sys.modules`` (and from their parents' attributes)."""
        names = list(names)
        dropped = set(names)
        # Imported anew, they take sizes anew (``_container_sizes``).
        self._sized = {p for p in self._sized if p[0] not in dropped and p[1] not in dropped}
        for name in names:
            self._sizes.pop(name, None)
            module = sys.modules.pop(name, None)
            self.edges.pop(name, None)
            self.kinds.pop(name, None)
            self.files.pop(name, None)
            self.order.pop(name, None)
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name) if parent_name else None
            if module is not None and parent is not None:
                if getattr(parent, child, None) is module:
                    try:
                        delattr(parent, child)
                    except (AttributeError, TypeError):
                        pass
        importlib.invalidate_caches()


def _container_sizes(module: object) -> tuple[tuple[str, int], ...]:
    """The sizes of what another module's top level may register into: a module's list, dict
    and set globals, the same among its own classes' attributes, a class's subclasses, and a
    ``singledispatch`` function's registry."""
    if not isinstance(module, ModuleType):
        return ()
    name = module.__name__
    sizes: list[tuple[str, int]] = []
    for key, value in list(vars(module).items()):
        if isinstance(value, (list, dict, set)):
            sizes.append((key, len(value)))
        elif isinstance(value, FunctionType):
            registry = getattr(value, "registry", None)
            if isinstance(registry, Mapping):
                sizes.append((key, len(registry)))
        elif isinstance(value, type) and getattr(value, "__module__", None) == name:
            try:
                sizes.append((key, len(type.__subclasses__(value))))
            except TypeError:
                continue
            for attribute, held in list(vars(value).items()):
                if isinstance(held, (list, dict, set)):
                    sizes.append((f"{key}.{attribute}", len(held)))
    return tuple(sizes)


def _executing_module(frame: Any, floors: frozenset[CodeType] = frozenset()) -> str | None:
    """The module whose top level is running in ``frame`` or below it, down to a ``floors``
    frame (None: none is). The floors keep a lazy import in a fixture or a test cheap: without
    them each such import walked pytest's whole stack (about 4 us at its depth)."""
    while frame is not None:
        code = frame.f_code
        if code in floors:
            return None
        if code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            return name if isinstance(name, str) else None
        frame = frame.f_back
    return None


def _referenced_modules(module: ModuleType) -> set[str]:
    found: set[str] = set()
    budget = [SCAN_BUDGET]
    seen: set[int] = set()
    prefix = module.__name__ + "."
    for name, value in list(vars(module).items()):
        if isinstance(value, ModuleType) and value.__name__ == prefix + name:
            continue  # a package's submodule: bound by the import system, not a dependency
        _scan(value, SCAN_DEPTH, found, budget, seen, module.__name__)
    return found


def referenced_modules(value: object) -> set[str]:
    """Modules whose functions, classes or instances ``value`` is or holds (a fixture's value)."""
    found: set[str] = set()
    _scan(value, SCAN_DEPTH, found, [SCAN_BUDGET], set(), "")
    return found


def _scan(
    value: object, depth: int, found: set[str], budget: list[int], seen: set[int], home: str
) -> None:
    if budget[0] <= 0 or id(value) in seen:
        return
    budget[0] -= 1
    seen.add(id(value))
    try:
        if isinstance(value, ModuleType):
            found.add(value.__name__)
            return
        if isinstance(value, (FunctionType, type)):
            owner = value.__module__
            if isinstance(owner, str):
                found.add(owner)
            if not isinstance(value, type) or owner != home or depth <= 0:
                return
            children: Iterator[object] = iter(list(vars(value).values()))
        else:
            owner = type(value).__module__
            if isinstance(owner, str) and owner != "builtins":
                found.add(owner)
            if depth <= 0:
                return
            if isinstance(value, dict):
                children = iter(list(value.values())[:SCAN_BUDGET])
            elif isinstance(value, (list, tuple, set, frozenset)):
                children = iter(list(value)[:SCAN_BUDGET])
            else:
                # An instance (an app object, a registry): what others put into it.
                # object's own lookup: a proxy's __getattr__ must not run here.
                attributes = object.__getattribute__(value, "__dict__")
                if not isinstance(attributes, dict):
                    return
                children = iter(list(attributes.values()))
        for child in children:
            _scan(child, depth - 1, found, budget, seen, home)
    except Exception:  # a hostile __getattr__ or a container changing under us: skip it
        return
