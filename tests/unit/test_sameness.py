"""Whether a re-imported fixture function provably does what the old one did
(replica/sameness.py), and the conftest checks built on it (replica/conftests.py)."""

from __future__ import annotations

import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_reuse_env.controller.launcher import collect_failure
from pytest_reuse_env.replica import conftests
from pytest_reuse_env.replica.sameness import same_function

OLD = """
import os

LIMIT = 3
NAME = "rows"


def helper(n):
    return min(n, LIMIT)


def fixture():
    return {NAME: helper(os.sep and 5)}
"""


def module(source: str, **globals_: object) -> types.ModuleType:
    """A module named ``conftest`` made from ``source`` (``globals_`` set before it runs)."""
    made = types.ModuleType("conftest")
    vars(made).update(globals_)
    exec(compile(textwrap.dedent(source), "conftest.py", "exec"), vars(made))
    return made


def same(old_source: str, new_source: str, invalidated: frozenset[str] = frozenset()) -> bool:
    old, new = module(old_source), module(new_source)
    return same_function(old.fixture, new.fixture, set(invalidated))


def test_the_same_source_is_the_same() -> None:
    assert same(OLD, OLD)


def test_lines_moved_by_an_edit_above_are_the_same() -> None:
    assert same(OLD, "\n\n# a comment\n" + OLD)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("return {NAME: helper(os.sep and 5)}", "return {NAME: helper(os.sep and 6)}"),
        ("LIMIT = 3", "LIMIT = 4"),  # a global its helper reads
        ('NAME = "rows"', 'NAME = "cols"'),  # a global it reads
        ("return min(n, LIMIT)", "return max(n, LIMIT)"),  # its helper's code
        ("def fixture():", "def fixture(request=None):"),
    ],
)
def test_any_change_it_can_see_is_not_the_same(old: str, new: str) -> None:
    assert old in OLD
    assert not same(OLD, OLD.replace(old, new))


def test_a_global_it_does_not_read_may_change() -> None:
    assert same(OLD + "\nOTHER = 1\n", OLD + "\nOTHER = 2\n")


def test_a_global_appearing_or_vanishing_is_not_the_same() -> None:
    source = "def fixture():\n    return VALUE\n"
    assert not same(source, "VALUE = 1\n" + source)


def test_a_re_imported_module_is_not_the_same() -> None:
    source = "def fixture():\n    return index.build()\n"
    old = module(source, index=types.ModuleType("app.index"))
    new = module(source, index=types.ModuleType("app.index"))
    assert not same_function(old.fixture, new.fixture, {"app.index"})


def test_a_shared_module_counts_with_its_invalidated_submodules() -> None:
    source = "def fixture():\n    return app.index.build()\n"
    app = types.ModuleType("app")
    old, new = module(source, app=app), module(source, app=app)
    assert same_function(old.fixture, new.fixture, {"tests.test_core"})
    assert not same_function(old.fixture, new.fixture, {"app.index"})


def test_a_shared_object_holding_an_invalidated_modules_function_is_not_the_same() -> None:
    def build() -> int:
        return 1

    build.__module__ = "app.index"
    registry = {"build": build}
    source = "def fixture():\n    return REGISTRY['build']()\n"
    old, new = module(source, REGISTRY=registry), module(source, REGISTRY=registry)
    assert same_function(old.fixture, new.fixture, {"app.core"})
    assert not same_function(old.fixture, new.fixture, {"app.index"})


@pytest.mark.parametrize(
    "source",
    [
        "CACHE = []\n\ndef fixture():\n    return CACHE\n",  # a mutable object made anew
        "class Db:\n    pass\n\ndef fixture():\n    return Db()\n",  # a class made anew
        "def outer():\n    n = 1\n    def fixture():\n        return n\n    return fixture\n"
        "fixture = outer()\n",  # a closure
    ],
)
def test_what_cannot_be_compared_is_not_the_same(source: str) -> None:
    assert not same(source, source)


@pytest.mark.parametrize(
    "lookup",
    [
        'globals()["helper"]()',
        'eval("helper")()',
        'getattr(sys.modules[__name__], "helper")()',
        'importlib.import_module(__name__).__dict__["helper"]()',
    ],
)
def test_a_global_read_by_a_computed_name_is_not_proven(lookup: str) -> None:
    """The helper it calls is named by a string: an edit of the helper is not seen in the
    fixture's code, so the fixture is rebuilt even when nothing it names changed."""
    source = (
        "import importlib\nimport sys\n\n\ndef helper():\n    return 1\n\n\n"
        f"def fixture():\n    return {lookup}\n"
    )
    assert not same(source, source.replace("return 1", "return 2"))
    assert not same(source, source)


def test_mutually_recursive_helpers_are_compared() -> None:
    source = """
    def even(n):
        return n == 0 or odd(n - 1)

    def odd(n):
        return n != 0 and even(n - 1)

    def fixture():
        return even(4)
    """
    assert same(source, source)
    assert not same(
        source, source.replace("n - 1)\n\n    def fixture", "n - 2)\n\n    def fixture")
    )


def test_only_plain_functions_are_compared() -> None:
    assert not same_function(len, len, set())


# -- conftests ------------------------------------------------------------------------------------


def test_the_hooks_a_conftest_source_defines_are_found_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "conftest.py"
    path.write_text(
        "import pytest\nfrom plugin import pytest_configure\n\n"
        "pytest_plugins = ['x']\n\n\ndef pytest_addoption(parser):\n    pass\n\n\n"
        "@pytest.fixture\ndef db():\n    return 1\n"
    )
    assert conftests.source_plugin_names(str(path)) == [
        "pytest_addoption",
        "pytest_configure",
        "pytest_plugins",
    ]
    path.write_text("from plugin import *\n")
    assert conftests.source_plugin_names(str(path)) == ["*"]
    path.write_text("import pytest\n\n\n@pytest.fixture\ndef db():\n    return 1\n")
    assert conftests.source_plugin_names(str(path)) == []


def test_the_hooks_a_conftest_module_holds_are_found() -> None:
    assert conftests.plugin_names(module("def pytest_configure(config):\n    pass\n")) == [
        "pytest_configure"
    ]
    assert conftests.plugin_names(module(OLD)) == []


class FakeDef:
    """What ``same_signature`` reads of a FixtureDef."""

    def __init__(self, **fields: Any) -> None:
        self.argname = "db"
        self._scope = "session"
        self.argnames = ("request",)
        self._autouse = False
        self.node = "node"
        self.params: Any = None
        self.ids: Any = None
        vars(self).update(fields)


@pytest.mark.parametrize(
    ("change", "same_items"),
    [
        ({}, True),
        ({"params": [1, "a", None]}, True),
        ({"argname": "index"}, False),
        ({"_scope": "module"}, False),
        ({"argnames": ()}, False),
        ({"_autouse": True}, False),
        ({"node": "other"}, False),
        ({"params": [1, 2]}, False),
        ({"ids": lambda p: str(p)}, False),  # made anew: not provably the same
    ],
)
def test_a_definition_keeps_its_place_only_with_the_same_signature(
    change: dict[str, Any], same_items: bool
) -> None:
    old = FakeDef(params=[1, "a", None]) if "params" in change else FakeDef()
    assert conftests.same_signature(old, FakeDef(**change)) is same_items


# -- the controller's wording of a collection that failed only in the replica --------------------


def test_a_collection_error_in_the_replica_is_named_by_its_file_and_last_line() -> None:
    errors = ["tests/test_models.py: Traceback...\nE   RuntimeError: collected twice\n"]
    assert collect_failure("tests/test_models.py::test_expect", errors) == (
        "collecting tests/test_models.py failed in it, not here: RuntimeError: collected twice"
    )
    assert collect_failure("tests/test_core.py::test_double", errors) is None
    assert collect_failure("tests/sub/test_x.py::test_y", ["tests/sub: boom"]) == (
        "collecting tests/sub failed in it, not here: boom"
    )
