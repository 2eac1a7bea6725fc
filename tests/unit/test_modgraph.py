"""The replica's module graph (replica/modgraph.py): kinds, edges, invalidation, file states."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_reuse_env.replica import modgraph
from pytest_reuse_env.replica.modgraph import SUSPECT, ModuleGraph


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A package ``pkgx`` on sys.path; its modules leave sys.modules afterwards."""
    root = tmp_path / "src"
    (root / "pkgx").mkdir(parents=True)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield root / "pkgx"
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "pkgx" or n.startswith("pkgx.")]:
            del sys.modules[name]


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def graph() -> Iterator[ModuleGraph]:
    graph = ModuleGraph()
    graph.install()
    try:
        yield graph
    finally:
        graph.uninstall()


def test_kinds_of_files() -> None:
    graph = ModuleGraph()
    assert graph.kind_of_file(os.__file__) == modgraph.KIND_STDLIB
    assert graph.kind_of_file(pytest.__file__) == modgraph.KIND_INSTALLED
    assert graph.kind_of_file("/somewhere/lib/site-packages/x/y.py") == modgraph.KIND_INSTALLED
    assert graph.kind_of_file("/elsewhere/project/app/core.py") == modgraph.KIND_PROJECT
    assert graph.kind_of_file("/elsewhere/project/app/fast.so") == modgraph.KIND_EXTENSION
    assert graph.kind_of_file(modgraph.__file__) == modgraph.KIND_INSTALLED  # the plugin itself


def test_import_time_imports_make_edges_and_runtime_imports_do_not(
    package: Path, graph: ModuleGraph
) -> None:
    write(package / "__init__.py", "")
    write(package / "base.py", "VALUE = 1\n")
    write(package / "lazy.py", "X = 2\n")
    write(
        package / "user.py",
        """
        from pkgx.base import VALUE


        def helper():
            from pkgx import lazy

            return lazy.X
        """,
    )
    user = importlib.import_module("pkgx.user")
    assert "pkgx.base" in graph.edges["pkgx.user"]
    recording: set[str] = set()
    graph.recordings.append(recording)
    assert user.helper() == 2
    graph.recordings.remove(recording)
    assert "pkgx.lazy" not in graph.edges["pkgx.user"]  # a function's import binds no global
    assert "pkgx.lazy" in recording  # but a fixture's setup that ran it depends on it


def test_dependents_follow_importers_and_packages(package: Path, graph: ModuleGraph) -> None:
    write(package / "__init__.py", "")
    write(package / "a.py", "X = 1\n")
    write(package / "b.py", "from pkgx import a\n")
    write(package / "c.py", "import pkgx.b\n")
    write(package / "d.py", "Y = 1\n")
    for name in ("pkgx.c", "pkgx.d"):
        importlib.import_module(name)
    assert graph.dependents({"pkgx.a"}) == {"pkgx.a", "pkgx.b", "pkgx.c"}
    # Every submodule depends on its package.
    assert graph.dependents({"pkgx"}) >= {"pkgx", "pkgx.a", "pkgx.b", "pkgx.c", "pkgx.d"}


def test_a_registry_filled_at_import_time_depends_on_who_filled_it(
    package: Path, graph: ModuleGraph
) -> None:
    write(package / "__init__.py", "")
    write(package / "registry.py", "HANDLERS = {}\n")
    write(
        package / "plugin.py",
        """
        from pkgx import registry


        def handle():
            return 1


        registry.HANDLERS["x"] = handle
        """,
    )
    importlib.import_module("pkgx.plugin")
    # The dict grew while plugin's top level ran: known at import already.
    assert "pkgx.registry" in graph.dependents({"pkgx.plugin"})
    graph.scan_references()
    assert "pkgx.registry" in graph.dependents({"pkgx.plugin"})


@pytest.mark.parametrize(
    ("registry", "plugin"),
    [
        # A plain value: no object of plugin's for the scan to find.
        ("HANDLERS = []\n", "from pkgx import registry\n\nregistry.HANDLERS.append('x')\n"),
        # singledispatch keeps its registry in a closure.
        (
            "from functools import singledispatch\n\n\n@singledispatch\n"
            "def render(x):\n    return 'default'\n",
            "from pkgx.registry import render\n\n\n@render.register(int)\n"
            "def _(x):\n    return 'int'\n",
        ),
        # A base class its subclasses register with by existing.
        (
            "class Base:\n    pass\n",
            "from pkgx.registry import Base\n\n\nclass Mine(Base):\n    pass\n",
        ),
        # Past the scan's budget: a large table first.
        (
            "TABLE = [[i] for i in range(6000)]\nREG = {}\n",
            "from pkgx import registry\n\n\ndef h():\n    pass\n\n\nregistry.REG['h'] = h\n",
        ),
    ],
    ids=["plain value", "singledispatch", "subclass", "past the scan budget"],
)
def test_a_module_whose_import_grew_anothers_container_is_depended_on(
    package: Path, graph: ModuleGraph, registry: str, plugin: str
) -> None:
    import_filler(package, registry, plugin)
    assert "pkgx.registry" in graph.dependents({"pkgx.plugin"})


def import_filler(package: Path, registry: str, plugin: str, name: str = "plugin") -> None:
    """``pkgx.registry`` and ``pkgx.<name>`` written, the latter imported."""
    write(package / "__init__.py", "")
    write(package / "registry.py", registry)
    write(package / f"{name}.py", plugin)
    importlib.import_module(f"pkgx.{name}")


def test_a_registry_imported_anew_is_linked_to_its_filler_again(
    package: Path, graph: ModuleGraph
) -> None:
    """The first edit of the filler re-imports both; the second must too."""
    import_filler(
        package, "HANDLERS = []\n", "from pkgx import registry\n\nregistry.HANDLERS.append('x')\n"
    )
    dropped = graph.dependents({"pkgx.plugin"})
    assert "pkgx.registry" in dropped
    graph.drop(dropped)
    importlib.import_module("pkgx.plugin")
    assert "pkgx.registry" in graph.dependents({"pkgx.plugin"})


def test_importing_a_module_without_registering_anything_makes_no_reverse_edge(
    package: Path, graph: ModuleGraph
) -> None:
    import_filler(
        package,
        "HANDLERS = []\n",
        "from pkgx import registry\n\nCOUNT = len(registry.HANDLERS)\n",
        name="user",
    )
    graph.scan_references()
    assert graph.dependents({"pkgx.user"}) == {"pkgx.user"}


def test_a_package_does_not_depend_on_its_submodules_by_holding_them(
    package: Path, graph: ModuleGraph
) -> None:
    write(package / "__init__.py", "")
    write(package / "a.py", "X = 1\n")
    importlib.import_module("pkgx.a")
    graph.scan_references()
    assert graph.dependents({"pkgx.a"}) == {"pkgx.a"}


def test_drop_removes_modules_and_their_parents_attributes(
    package: Path, graph: ModuleGraph
) -> None:
    write(package / "__init__.py", "")
    write(package / "a.py", "X = 1\n")
    parent = importlib.import_module("pkgx")
    importlib.import_module("pkgx.a")
    graph.drop({"pkgx.a"})
    assert "pkgx.a" not in sys.modules
    assert not hasattr(parent, "a")
    write(package / "a.py", "X = 22\n")
    assert importlib.import_module("pkgx.a").X == 22


def test_a_file_modified_after_the_previous_observation_counts_as_changed(
    package: Path,
) -> None:
    write(package / "__init__.py", "")
    write(package / "a.py", "X = 1\n")
    write(package / "b.py", "X = 1\n")
    old = 1_000_000_000_000_000_000
    os.utime(package / "a.py", ns=(old, old))
    now = [old + 10_000_000_000]
    graph = ModuleGraph(clock_ns=lambda: now[0])
    importlib.import_module("pkgx.a")
    importlib.import_module("pkgx.b")  # its mtime is the real time: after "now"
    graph.observe()
    assert graph.states[str(package / "b.py")] == SUSPECT
    assert graph.states[str(package / "a.py")] != SUSPECT
    changed = graph.changed_files()
    assert str(package / "b.py") in changed
    assert str(package / "a.py") not in changed
    # A same-size edit that keeps the old mtime is still seen: a is not racy, so stat decides;
    # a size change always shows.
    write(package / "a.py", "X = 12\n")
    os.utime(package / "a.py", ns=(old, old))
    assert str(package / "a.py") in graph.changed_files()


def test_recording_survives_a_failing_import(package: Path, graph: ModuleGraph) -> None:
    write(package / "__init__.py", "")
    write(package / "bad.py", "raise RuntimeError('no')\n")
    with pytest.raises(RuntimeError):
        importlib.import_module("pkgx.bad")
    assert "pkgx.bad" not in sys.modules


def test_the_search_for_an_importer_stops_at_a_floor_frame(
    package: Path, graph: ModuleGraph
) -> None:
    # A floor is pytest's frame calling a fixture's or a test's function: no module's top level
    # runs below it, so a lazy import there needs no walk down pytest's whole stack.
    write(package / "__init__.py", "")
    write(package / "base.py", "X = 1\n")
    write(package / "late.py", "Y = 2\n")
    write(package / "runner.py", "def floor(function):\n    return function()\n")
    write(
        package / "outer.py",
        """
        from pkgx.runner import floor


        def load():
            from pkgx import base

            return base.X


        VALUE = floor(load)
        """,
    )
    write(package / "user.py", "from pkgx import late\n")
    runner = importlib.import_module("pkgx.runner")
    graph.floors = frozenset({runner.floor.__code__})
    importlib.import_module("pkgx.outer")
    assert "pkgx.base" not in graph.edges["pkgx.outer"]  # the walk stopped at the floor
    recording: set[str] = set()
    graph.recordings.append(recording)
    runner.floor(lambda: importlib.import_module("pkgx.user"))
    graph.recordings.remove(recording)
    assert graph.edges["pkgx.user"] == {"pkgx", "pkgx.late"}  # a top level above it is found
    assert {"pkgx.user", "pkgx.late"} <= recording


def test_an_import_of_the_standard_library_is_not_recorded(graph: ModuleGraph) -> None:
    graph.observe()
    recording: set[str] = set()
    graph.recordings.append(recording)
    import json  # noqa: F401
    from json import decoder  # noqa: F401

    graph.recordings.remove(recording)
    assert recording == set()


WARNS_ON_IMPORT = (
    "import warnings\nwarnings.warn('pkgx.old is deprecated', DeprecationWarning, stacklevel=2)\n"
)


def test_a_warning_raised_while_importing_names_the_importer_not_the_wrapper(
    package: Path, graph: ModuleGraph
) -> None:
    """dateutil's own tests check this: ``stacklevel=2`` names the line that imported."""
    (package / "old.py").write_text(WARNS_ON_IMPORT)
    with pytest.warns(DeprecationWarning, match="pkgx.old is deprecated") as statement:
        import pkgx.old  # type: ignore[import-not-found]  # noqa: F401
    sys.modules.pop("pkgx.old")
    with pytest.warns(DeprecationWarning, match="pkgx.old is deprecated") as call:
        importlib.import_module("pkgx.old")
    assert [w.filename for w in [*statement, *call]] == [__file__, importlib.__file__]
