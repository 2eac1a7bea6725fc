"""End to end: data files read while something warm was built (replica/datareads.py).

A session fixture that loads a JSON file, a test module and a project module that read a file
at import keep what they read for the replica's life; plain pytest reads the files again on
every run. Each case edits the data file between real runs of the project of
``test_reload.py``, compares the warm run with a ``--reuse=off`` run, and checks the replica
stayed warm with only what read the file rebuilt.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_reload import (
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

SETTINGS_FIXTURE = """

@pytest.fixture(scope="session")
def settings():
    import json
    note("settings")
    return json.loads((Path(__file__).parent / "data" / "settings.json").read_text())
"""


def add_settings(project: pytest.Pytester) -> None:
    """A session fixture ``settings`` that loads data/settings.json, and a test of it."""
    conftest = project.path / "conftest.py"
    conftest.write_text(conftest.read_text() + SETTINGS_FIXTURE)
    write(project.path / "data" / "settings.json", '{"level": 1}')
    write(
        project.path / "tests" / "test_settings.py",
        "def test_level(settings, db):\n    assert settings['level'] == 1\n",
    )


def test_a_fixture_that_read_an_edited_data_file_is_rebuilt_and_no_other(
    project: pytest.Pytester,
) -> None:
    add_settings(project)
    _, env = same_as_plain(project)
    pid = env["replicas"][0]["pid"]
    assert replica_setups(project, {pid}) == ["db", "index", "settings"]

    write(project.path / "data" / "settings.json", '{"level": 2}')
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_settings.py::test_level"] == ("FAILED", "assert 2 == 1")
    result.stdout.fnmatch_lines(
        ["reuse: g-* *kept db, index; rebuilt settings (depends on data/settings.json)*"],
        consecutive=False,
    )
    assert replica_setups(project, {pid}) == ["db", "index", "settings", "settings"]

    # Deleted, then back: a fixture that failed to read it is set up again each time.
    (project.path / "data" / "settings.json").unlink()
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_settings.py::test_level"][0] == "ERROR"
    write(project.path / "data" / "settings.json", '{"level": 1}')
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_settings.py::test_level"][0] == "PASSED"

    # No edit: nothing rebuilt.
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert env["fixtures_rebuilt"] == 0, env


def test_modules_that_read_an_edited_data_file_at_import_are_re_imported(
    project: pytest.Pytester,
) -> None:
    write(project.path / "data" / "cases.txt", "1\n2\n")
    write(
        project.path / "app" / "limits.py",
        "from pathlib import Path\n\n"
        "MAX = int((Path(__file__).parent.parent / 'data' / 'max.txt').read_text())\n",
    )
    write(project.path / "data" / "max.txt", "10")
    write(
        project.path / "tests" / "test_cases.py",
        "from pathlib import Path\n\nimport pytest\n\nfrom app.limits import MAX\n\n"
        "CASES = (Path(__file__).parent.parent / 'data' / 'cases.txt').read_text().split()\n\n\n"
        "@pytest.mark.parametrize('case', CASES)\n"
        "def test_case(case, db):\n    assert int(case) < MAX\n",
    )
    pid = first_run(project)

    # A test module's parameters come from the file: a new case, a new test.
    write(project.path / "data" / "cases.txt", "1\n2\n30\n")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_cases.py::test_case[30]"][0] == "FAILED"

    # The code under test read the file at import: re-imported, with its importers.
    edit(project.path / "data" / "max.txt", "10", "50")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_cases.py::test_case[30]"][0] == "PASSED"
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported app/limits.py, tests/test_cases.py; kept db, index (*)"],
        consecutive=False,
    )
    assert replica_setups(project, {pid}) == ["db", "index"]


def test_a_data_file_whose_reader_is_not_set_up_again_is_no_longer_watched(
    project: pytest.Pytester,
) -> None:
    add_settings(project)
    _, env = same_as_plain(project)
    pid = env["replicas"][0]["pid"]
    # The edit tears settings down; the runs that follow do not ask for it again.
    for level in (2, 3):
        write(project.path / "data" / "settings.json", f'{{"level": {level}}}')
        result, env = same_as_plain(project, "-k", "not level")
        stayed_warm(env, pid)
        assert "tests/test_settings.py::test_level" not in summary(result)


# -- collection-time decisions on state no project file holds ------------------------------------


def test_a_skipif_condition_that_changed_with_no_edit_makes_the_replica_stale(
    project: pytest.Pytester,
) -> None:
    """``skipif(not os.path.exists(...))`` is evaluated as the test module is imported: the
    warm replica's test was skipped by it. The flag file appears, no project file changes:
    plain pytest runs the test (it fails), and so does the run, in a fresh replica, since this
    run's collection marks it otherwise."""
    write(
        project.path / "tests" / "test_flag.py",
        "import os\n\nimport pytest\n\n\n"
        "@pytest.mark.skipif(not os.path.exists('feature.flag'), reason='no flag')\n"
        "def test_flagged():\n    assert False, 'the feature is on'\n",
    )
    first_run(project)
    (project.path / "feature.flag").write_text("")
    result, env = same_as_plain(project)
    started_afresh(result, env, "tests/test_flag.py::test_flagged has other markers*")


def test_a_collection_hook_that_reads_a_file_decides_again_in_a_warm_replica(
    project: pytest.Pytester,
) -> None:
    """A conftest hook skips the tests named in skip.txt, read as it runs (at collection, not
    at import): which test it skips changes with the file, no project module with it."""
    write(
        project.path / "tests" / "conftest.py",
        "import pytest\n\n\n"
        "def pytest_collection_modifyitems(items):\n"
        "    names = open('skip.txt').read().split()\n"
        "    for item in items:\n"
        "        if item.name in names:\n"
        "            item.add_marker(pytest.mark.skip(reason='listed'))\n",
    )
    write(project.path / "skip.txt", "test_limit\n")
    first_run(project)
    write(project.path / "skip.txt", "test_double\n")
    result, env = same_as_plain(project)
    started_afresh(result, env, "tests/test_core.py::test_* has other markers*")


def test_a_module_an_optional_import_did_not_find_is_imported_once_it_exists(
    project: pytest.Pytester,
) -> None:
    """``try: import optional_mod`` found nothing: the test skipped itself. The module is
    created next to the test (on sys.path there): plain pytest imports it and the test fails;
    the warm replica re-imports the test module, which finds it."""
    write(
        project.path / "tests" / "test_optional.py",
        "import pytest\n\ntry:\n    import optional_mod\nexcept ImportError:\n"
        "    optional_mod = None\n\n\n"
        "def test_optional():\n"
        "    if optional_mod is None:\n        pytest.skip('no optional_mod')\n"
        "    assert optional_mod.OK\n",
    )
    first_run(project)
    write(project.path / "tests" / "optional_mod.py", "OK = False\n")
    same_as_plain(project)
