"""Data files in the replica's module graph (replica/datareads.py): which reads count, what they
attach to, and when a file counts as changed."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import os
from pathlib import Path

import pytest

from pytest_reuse_env.replica.datareads import data_name, data_path, is_data
from pytest_reuse_env.replica.modgraph import ModuleGraph

from .test_modgraph import graph, package, write

__all__ = ["graph", "package"]  # the fixtures, shared


def read_in_recording(graph: ModuleGraph, path: Path) -> set[str]:
    recording: set[str] = set()
    graph.recordings.append(recording)
    try:
        path.read_text()
    finally:
        graph.recordings.remove(recording)
    return recording


def test_a_read_while_a_fixture_is_set_up_is_a_dependency(
    tmp_path: Path, graph: ModuleGraph
) -> None:
    data = tmp_path / "settings.json"
    data.write_text('{"level": 1}')
    name = data_name(os.path.realpath(data))
    assert read_in_recording(graph, data) == {name}
    assert is_data(name)
    assert data_path(name) == os.path.realpath(data)
    assert graph.changed_files() == []
    assert graph.modules_of([os.path.realpath(data)]) == {os.path.realpath(data): [name]}

    data.write_text('{"level": 22}')
    assert graph.changed_files() == [os.path.realpath(data)]
    graph.refresh_state(os.path.realpath(data))  # what read it is rebuilt, and reads it anew
    assert graph.changed_files() == []


def test_reads_outside_anything_warm_writes_and_code_files_are_not_recorded(
    tmp_path: Path, graph: ModuleGraph
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("x")
    data.read_text()  # a test's own read: it runs again anyway
    source = tmp_path / "helper.py"
    source.write_text("X = 1\n")
    recording: set[str] = set()
    graph.recordings.append(recording)
    try:
        (tmp_path / "out.txt").write_text("written")  # a write
        with open(data, "r+"):  # read and write
            pass
        source.read_text()  # source files are modules' business
        fd = os.open("/proc/self/status", os.O_RDONLY)
        os.close(fd)
        importlib.metadata.version("pytest")  # an installed distribution's METADATA
    finally:
        graph.recordings.remove(recording)
    assert recording == set()
    assert graph.data.states == {}


def test_a_file_missing_when_read_counts_as_changed_once_it_appears(
    tmp_path: Path, graph: ModuleGraph
) -> None:
    data = tmp_path / "optional.toml"
    recording: set[str] = set()
    graph.recordings.append(recording)
    try:
        with pytest.raises(FileNotFoundError):
            data.read_text()
    finally:
        graph.recordings.remove(recording)
    assert recording == {data_name(os.path.realpath(data))}
    assert graph.changed_files() == []
    data.write_text("now here")
    assert graph.changed_files() == [os.path.realpath(data)]


def test_a_module_that_reads_a_file_at_import_depends_on_it(
    package: Path, graph: ModuleGraph
) -> None:
    write(package / "__init__.py", "")
    (package / "max.txt").write_text("10")
    write(
        package / "limits.py",
        """
        from pathlib import Path

        MAX = int((Path(__file__).parent / "max.txt").read_text())


        def again():
            return (Path(__file__).parent / "max.txt").read_text()
        """,
    )
    write(package / "user.py", "from pkgx.limits import MAX\n")
    limits = importlib.import_module("pkgx.user") and importlib.import_module("pkgx.limits")
    name = data_name(os.path.realpath(package / "max.txt"))
    assert name in graph.edges["pkgx.limits"]
    assert graph.dependents([name]) >= {name, "pkgx.limits", "pkgx.user"}
    before = dict(graph.edges)
    limits.again()  # a function's read after import: no module depends on it by that
    assert graph.edges == before


def test_a_package_data_file_read_with_pkgutil_at_import_is_a_dependency(
    package: Path, graph: ModuleGraph
) -> None:
    """pkgutil.get_data reads through the package loader's get_data, with io.open_code."""
    write(package / "__init__.py", "")
    (package / "v.txt").write_text("1")
    write(package / "data.py", "import pkgutil\n\nV = pkgutil.get_data('pkgx', 'v.txt')\n")
    importlib.import_module("pkgx.data")
    assert data_name(os.path.realpath(package / "v.txt")) in graph.edges["pkgx.data"]


def test_an_unhooked_graph_hears_nothing(tmp_path: Path) -> None:
    graph = ModuleGraph()
    graph.install()
    graph.uninstall()
    data = tmp_path / "x.json"
    data.write_text("{}")
    assert read_in_recording(graph, data) == set()


def test_os_open_for_reading_is_heard_and_for_writing_is_not(
    tmp_path: Path, graph: ModuleGraph
) -> None:
    read, written = tmp_path / "read.bin", tmp_path / "written.bin"
    read.write_bytes(b"1")
    recording: set[str] = set()
    graph.recordings.append(recording)
    try:
        os.close(os.open(read, os.O_RDONLY))
        os.close(os.open(written, os.O_WRONLY | os.O_CREAT))
    finally:
        graph.recordings.remove(recording)
    assert recording == {data_name(os.path.realpath(read))}


def test_a_large_data_file_is_told_by_its_stat_values_not_read_again(
    tmp_path: Path, graph: ModuleGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_reuse_env.replica import datareads

    monkeypatch.setattr(datareads, "DIGEST_LIMIT", 10)
    small, large = tmp_path / "small.json", tmp_path / "large.bin"
    small.write_text("{}")
    large.write_bytes(b"x" * 100)
    read_in_recording(graph, small)
    read_in_recording(graph, large)
    # Both were written just now ("racy"): only the small one keeps a content digest.
    small_state = graph.data.states[os.path.realpath(small)]
    large_state = graph.data.states[os.path.realpath(large)]
    assert small_state is not None
    assert large_state is not None
    assert small_state.digest is not None
    assert large_state.digest is None
    large.write_bytes(b"y" * 101)
    assert graph.changed_files() == [os.path.realpath(large)]


def test_a_data_file_rebuilt_for_is_forgotten_not_watched_as_a_module(
    tmp_path: Path, graph: ModuleGraph
) -> None:
    data = tmp_path / "settings.json"
    data.write_text("1")
    read_in_recording(graph, data)
    data.write_text("22")
    graph.refresh_state(os.path.realpath(data))  # its readers are rebuilt; none reads it again
    assert os.path.realpath(data) not in graph.states
    data.write_text("333")
    assert graph.changed_files() == [], "nothing depends on it until it is read again"


def test_the_open_wrappers_are_seen_through_by_warnings(graph: ModuleGraph) -> None:
    """open's own EncodingWarning (``-X warn_default_encoding``) names the caller's line."""
    import builtins

    from pytest_reuse_env.replica import seethrough

    assert builtins.open.__code__.co_filename == seethrough.FILENAME
    assert os.open.__code__.co_filename == seethrough.FILENAME
    assert builtins.open.__name__ == "open", "still wrapped with functools.wraps"
    assert io.open is builtins.open


def test_a_module_an_import_did_not_find_is_watched_where_it_would_be(
    package: Path, graph: ModuleGraph
) -> None:
    """``try: import optional_thing`` at import, not found: once a module of that name appears
    in a project directory on sys.path, the importer depends on a changed file."""
    write(package / "__init__.py", "")
    write(
        package / "feature.py",
        """
        try:
            import pkgx_optional_thing
        except ImportError:
            pkgx_optional_thing = None
        """,
    )
    importlib.import_module("pkgx.feature")
    assert graph.changed_files() == []
    created = package.parent / "pkgx_optional_thing.py"
    created.write_text("OK = True\n")
    assert graph.changed_files() == [os.path.realpath(created)]
    assert "pkgx.feature" in graph.dependents([data_name(os.path.realpath(created))])
