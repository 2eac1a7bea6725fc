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
