"""Whether a replica that collected only some files saw its tests as the pytest process did
(collection_check.py): markers per test, the project's modules, tests it did not collect."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_reuse_env.collection_check import difference, digests, project_modules


class Node:
    def __init__(self, nodeid: str, marks: Any = (), parent: Node | None = None) -> None:
        self.nodeid = nodeid
        self.own_markers = [m.mark for m in marks]
        self.parent = parent


class Opaque:
    """An argument whose repr holds its address: it differs from process to process."""


def tree(*marks: Any, module_marks: tuple[Any, ...] = ()) -> Any:
    module = Node("test_a.py", list(module_marks))
    return {
        "test_a.py::test_one": Node("test_a.py::test_one", list(marks), module),
        "test_a.py::test_two": Node("test_a.py::test_two", [], module),
    }


def test_the_same_markers_give_the_same_digests_an_added_one_another() -> None:
    here = digests(tree(pytest.mark.slow).values())
    assert here == digests(tree(pytest.mark.slow).values())
    skipped = digests(tree(pytest.mark.slow, pytest.mark.skip(reason="odd")).values())
    assert skipped["test_a.py::test_one"] != here["test_a.py::test_one"]
    assert skipped["test_a.py::test_two"] == here["test_a.py::test_two"]


def test_a_collectors_markers_and_a_markers_arguments_count() -> None:
    plain = digests(tree().values())
    strict = digests(tree(module_marks=(pytest.mark.xfail(strict=True),)).values())
    loose = digests(tree(module_marks=(pytest.mark.xfail(strict=False),)).values())
    assert len({plain["test_a.py::test_two"], strict["test_a.py::test_two"]}) == 2
    assert strict["test_a.py::test_two"] != loose["test_a.py::test_two"]


def test_an_objects_address_in_a_markers_arguments_is_not_a_difference() -> None:
    skipif: Any = pytest.mark.skipif  # its condition: any object, here one without a repr
    one = digests(tree(skipif(Opaque(), reason="r")).values())
    other = digests(tree(skipif(Opaque(), reason="r")).values())
    assert one == other


def test_the_same_collection_has_no_difference(tmp_path: Path) -> None:
    items = tree(pytest.mark.slow)
    expected = digests(items.values())
    assert difference(expected, {}, items, str(tmp_path)) is None


def test_a_test_the_replica_did_not_collect_is_a_difference(tmp_path: Path) -> None:
    items = tree()
    expected = digests(items.values())
    del items["test_a.py::test_two"]
    assert difference(expected, {}, items, str(tmp_path)) == (
        "it did not collect test_a.py::test_two"
    )


def test_a_test_marked_otherwise_is_a_difference(tmp_path: Path) -> None:
    expected = digests(tree(pytest.mark.skip).values())
    found = difference(expected, {}, tree(), str(tmp_path))
    assert found is not None
    assert found.startswith("test_a.py::test_one has other markers in the replica")


@pytest.fixture
def project_module(tmp_path: Path) -> Any:
    """A module ``helpers_under_test`` imported from a file under ``tmp_path``."""
    path = tmp_path / "a" / "helpers.py"
    path.parent.mkdir()
    path.write_text("WHO = 'a'\n")
    module = types.ModuleType("helpers_under_test")
    module.__file__ = str(path)
    sys.modules["helpers_under_test"] = module
    yield path
    del sys.modules["helpers_under_test"]


def test_project_modules_are_those_under_the_root_but_conftests(
    tmp_path: Path, project_module: Path
) -> None:
    conftest = types.ModuleType("pkg.conftest")
    conftest.__file__ = str(tmp_path / "pkg" / "conftest.py")
    sys.modules["pkg.conftest"] = conftest
    try:
        found = project_modules(str(tmp_path))
    finally:
        del sys.modules["pkg.conftest"]
    assert found == {"helpers_under_test": str(project_module)}


def test_a_module_imported_from_another_file_is_a_difference(
    tmp_path: Path, project_module: Path
) -> None:
    """``import helpers`` found tests/b/helpers.py in the replica, tests/a/helpers.py in the
    pytest process, where another test file had imported it first."""
    other = str(tmp_path / "b" / "helpers.py")
    assert difference({}, {"helpers_under_test": other}, {}, str(tmp_path)) == (
        "module helpers_under_test is a/helpers.py in the replica, b/helpers.py in the pytest "
        "process"
    )
    assert difference({}, {"helpers_under_test": str(project_module)}, {}, str(tmp_path)) is None
    assert difference({}, {"not_imported_here": other}, {}, str(tmp_path)) is None


def test_the_same_file_by_another_name_is_the_same_module(
    tmp_path: Path, project_module: Path
) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "a")
    linked = str(tmp_path / "link" / "helpers.py")
    assert difference({}, {"helpers_under_test": linked}, {}, str(tmp_path)) is None
