"""End to end: an invalidated conftest is re-registered in the warm replica (replica/conftests.py).

The project of ``test_reload.py`` (session fixtures ``db`` and ``index`` in the root conftest,
code under test in ``app/``); every run's per-test outcomes and failure messages are compared
with a ``--reuse=off`` run's, and the replica's fixture setups are counted by pid.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_reload import (
    CONFTEST,
    edit,
    first_run,
    project,
    replica_setups,
    same_as_plain,
    started_afresh,
    stayed_warm,
    summary,
    write,
)

__all__ = ["project"]  # the fixture, shared

#: The root conftest importing the code under test at its top, the commonest pattern.
CONFTEST_IMPORTING = CONFTEST.replace(
    "import pytest\n", "import pytest\n\nfrom app import index as index_module\n", 1
).replace(
    """    from app.index import build

    note("index")
    return build()""",
    """    note("index")
    return index_module.build()""",
)

TEST_ROWS = """
def test_rows(db):
    assert db["rows"] == 3
"""


def test_an_edited_conftest_fixture_is_rebuilt_in_place_and_the_others_kept(
    project: pytest.Pytester,
) -> None:
    write(project.path / "tests" / "test_rows.py", TEST_ROWS)
    pid = first_run(project)
    edit(project.path / "conftest.py", '{"rows": 3}', '{"rows": 4}')
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_rows.py::test_rows"] == ("FAILED", "assert 4 == 3")
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported conftest.py; kept index; rebuilt db (changed in conftest.py)*"],
        consecutive=False,
    )
    # The old db's finalizer ran before the new one was set up; index was never set up again.
    assert replica_setups(project, {pid}) == ["db", "index", "db-teardown", "db"]

    # A constant a kept fixture's helper reads: now index must go too.
    edit(project.path / "conftest.py", "def note(name):", "SUFFIX = ''\n\n\ndef note(name):")
    edit(project.path / "conftest.py", 'f.write(f"{name} ', 'f.write(f"{name}{SUFFIX} ')
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert replica_setups(project, {pid}) == [
        "db",
        "index",
        "db-teardown",
        "db",
        "db-teardown",
        "db",
        "index",
    ]


def test_a_conftest_importing_an_edited_module_rebuilds_only_its_dependent_fixture(
    project: pytest.Pytester,
) -> None:
    write(project.path / "conftest.py", CONFTEST_IMPORTING)
    pid = first_run(project)
    edit(project.path / "app" / "index.py", "SIZE = 10", "SIZE = 11")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_index.py::test_size"] == ("FAILED", "assert 11 == 10")
    result.stdout.fnmatch_lines(
        [
            "reuse: g-* re-imported app/index.py, conftest.py; kept db; "
            "rebuilt index (depends on app/index.py)*"
        ],
        consecutive=False,
    )
    assert (env["fixtures_kept"], env["fixtures_rebuilt"]) == (1, 1)
    assert replica_setups(project, {pid}) == ["db", "index", "index"]

    # The code under test that the conftest does not import: the conftest stays as it is.
    edit(project.path / "app" / "core.py", "2 * x", "3 * x")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported app/core.py, tests/test_core.py; kept db, index*"],
        consecutive=False,
    )


def test_a_fixture_added_to_a_nested_conftest_recollects_the_tests_below_it(
    project: pytest.Pytester,
) -> None:
    # Outside a package both conftests are named "conftest": the nested one must be watched too.
    nested = project.path / "tests" / "conftest.py"
    write(nested, "import pytest\n\n\n@pytest.fixture\ndef small():\n    return 1\n")
    pid = first_run(project)
    with nested.open("a") as f:
        f.write(
            "\n\n@pytest.fixture(autouse=True)\ndef guard(db):\n"
            "    assert db['rows'] == 4, 'guarded'\n"
        )
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_core.py::test_limit"][0] == "ERROR"
    assert "guarded" in summary(result)["tests/test_core.py::test_limit"][1]
    assert replica_setups(project, {pid}) == ["db", "index"]

    nested.write_text(nested.read_text().replace("'guarded'", "'guarded again'"))
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert "guarded again" in summary(result)["tests/test_index.py::test_size"][1]


def test_a_conftest_with_a_hook_means_a_fresh_replica(project: pytest.Pytester) -> None:
    write(
        project.path / "conftest.py",
        CONFTEST + "\n\ndef pytest_configure(config):\n    config.rows = 3\n",
    )
    pid = first_run(project)
    edit(project.path / "conftest.py", '{"rows": 3}', '{"rows": 4}')
    result, env = same_as_plain(project)
    new = started_afresh(
        result, env, "conftest.py changed (a conftest with hooks: pytest_configure)"
    )
    assert new != pid

    # A hook the edit adds: named before the new conftest runs.
    write(project.path / "conftest.py", CONFTEST)
    same_as_plain(project)
    edit(
        project.path / "conftest.py",
        "def note(name):",
        "def pytest_report_header(config):\n    return 'hello'\n\n\ndef note(name):",
    )
    result, env = same_as_plain(project)
    started_afresh(result, env, "conftest.py changed (a conftest with hooks: pytest_report_header)")
