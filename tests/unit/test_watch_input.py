"""Which saved files watch mode hears of (controller/watch_input.py's filter on watchfiles)."""

from __future__ import annotations

import pytest
import watchfiles

from pytest_reuse_env.controller.watch_input import _python_filter

ROOT = "/project"
INI = f"{ROOT}/pytest.ini"


@pytest.mark.parametrize(
    "path",
    [f"{ROOT}/app/core.py", f"{ROOT}/tests/test_core.py", f"{ROOT}/conftest.py", INI],
)
def test_python_files_and_the_ini_file_are_heard(path: str) -> None:
    assert _python_filter(INI)(watchfiles.Change.modified, path)


@pytest.mark.parametrize(
    "path",
    [
        # VCS folders
        f"{ROOT}/.git/hooks/pre_commit.py",
        f"{ROOT}/.hg/store.py",
        # caches
        f"{ROOT}/app/__pycache__/core.py",
        f"{ROOT}/.pytest_cache/v/x.py",
        f"{ROOT}/.mypy_cache/x.py",
        f"{ROOT}/.ruff_cache/x.py",
        f"{ROOT}/.tox/py311/x.py",
        f"{ROOT}/.nox/tests/x.py",
        # virtual environments and installed packages
        f"{ROOT}/.venv/lib/python3.11/site-packages/x.py",
        f"{ROOT}/venv/lib/x.py",
        f"{ROOT}/env/lib/x.py",
        f"{ROOT}/vendor/site-packages/x.py",
        # build output
        f"{ROOT}/build/lib/app/core.py",
        f"{ROOT}/dist/x.py",
        # not Python, not the ini file
        f"{ROOT}/README.rst",
        f"{ROOT}/app/data.json",
        f"{ROOT}/setup.cfg",
    ],
)
def test_vcs_caches_virtualenvs_and_other_files_are_ignored(path: str) -> None:
    assert not _python_filter(INI)(watchfiles.Change.modified, path)


def test_a_data_file_read_at_import_is_heard_and_no_other() -> None:
    known = {f"{ROOT}/data/cases.txt"}
    heard = _python_filter(INI, known.__contains__)
    assert heard(watchfiles.Change.modified, f"{ROOT}/data/cases.txt")
    assert not heard(watchfiles.Change.modified, f"{ROOT}/data/other.txt")
    assert not heard(watchfiles.Change.modified, f"{ROOT}/.git/data/cases.txt")
