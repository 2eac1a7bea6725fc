"""End to end: warm replicas stay warm through edits (replica/reload.py), and never run old code.

Every case makes a real edit between real runs, then checks two things: the run's per-test
outcomes and failure messages equal a ``--reuse=off`` run's (plain pytest), and the replica
stayed warm (no replica started, the fixtures that did not depend on the edit not set up again)
or, where the rules say so, was replaced.

Every test ends its replicas with ``--reuse-stop`` and checks by pid that they are gone.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import replicas_stopped, run, stop_and_check

INI = """
[pytest]
reuse_all = default
reuse_replicas = 1
pythonpath = .
"""

CONFTEST = """
import os
from pathlib import Path

import pytest

LOG = Path(__file__).parent / "setups.txt"


def note(name):
    with LOG.open("a") as f:
        f.write(f"{name} {os.getpid()}\\n")


@pytest.fixture(scope="session")
def db():
    note("db")
    yield {"rows": 3}
    note("db-teardown")


@pytest.fixture(scope="session")
def index():
    from app.index import build

    note("index")
    return build()
"""

CORE = """
LIMIT = 3


def double(x):
    return 2 * x
"""

INDEX = """
SIZE = 10


def build():
    return {"size": SIZE}
"""

TEST_CORE = """
from app.core import LIMIT, double


def test_double(db):
    assert double(2) == 4


def test_limit():
    assert LIMIT == 3
"""

TEST_INDEX = """
def test_size(index, db):
    assert index["size"] == 10
"""

#: "PASSED tests/test_x.py::test_y", "FAILED ... - assert 6 == 4", "ERROR tests/test_z.py - ..."
SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)(?: - (.*))?$")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("PYTEST_REUSE_ENV_ALLOW_SHORT_TTL", "1")
    # Edits between runs within one second must never be hidden by a stale .pyc.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A small project (code under test in ``app/``, tests in ``tests/``) whose replicas are
    stopped (and checked gone) at the end."""
    pytester.makefile(".ini", pytest=INI)
    write(pytester.path / "conftest.py", CONFTEST)
    write(pytester.path / "app" / "__init__.py", "")
    write(pytester.path / "app" / "core.py", CORE)
    write(pytester.path / "app" / "index.py", INDEX)
    write(pytester.path / "tests" / "test_core.py", TEST_CORE)
    write(pytester.path / "tests" / "test_index.py", TEST_INDEX)
    with replicas_stopped(pytester):
        yield pytester


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


_runs = iter(range(1_000_000))


def summary(result: pytest.RunResult) -> dict[str, tuple[str, str]]:
    """``{nodeid: (outcome, message)}`` from the ``-rA`` short test summary."""
    found: dict[str, tuple[str, str]] = {}
    for line in result.stdout.lines:
        match = SUMMARY_LINE.match(line.strip())
        if match:
            found[match[2]] = (match[1], match[3] or "")
    return found


def warm_run(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """A run with warm replicas and ``--reuse-report``: the result and its one environment."""
    path = project.path / f"report-{next(_runs)}.json"
    result = run(project, "-rA", "-v", f"--reuse-report={path}", *args)
    assert path.exists(), result.stdout.str() + result.stderr.str()
    environments = json.loads(path.read_text())["environments"]
    assert len(environments) == 1, environments
    env: dict[str, Any] = environments[0]
    return result, env


def plain_run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run(project, "-rA", "--reuse=off", *args)


def same_as_plain(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """A warm run whose outcomes and failure messages equal a plain pytest run's."""
    result, env = warm_run(project, *args)
    plain = plain_run(project, *args)
    assert summary(result) == summary(plain), result.stdout.str() + "\n" + plain.stdout.str()
    assert result.ret == plain.ret, result.stdout.str()
    return result, env


def errors_section(result: pytest.RunResult) -> list[str]:
    """The ``= ERRORS =`` section: the collection errors with their tracebacks."""
    lines = result.stdout.lines
    starts = [i for i, line in enumerate(lines) if re.match(r"^=+ ERRORS =+$", line)]
    if not starts:
        return []
    section = [lines[starts[0]]]
    for line in lines[starts[0] + 1 :]:
        if re.match(r"^=+ .* =+$", line):  # the next section (the plugin's "reuse" one)
            break
        section.append(line)
    return section


def replica_setups(project: pytest.Pytester, pids: set[int]) -> list[str]:
    log = project.path / "setups.txt"
    lines = log.read_text().split("\n") if log.exists() else []
    return [line.split()[0] for line in lines if line and int(line.split()[1]) in pids]


def replica_pid(env: dict[str, Any]) -> int:
    pids = [r["pid"] for r in env["replicas"] if r["ended"] is None]
    assert len(pids) == 1, env["replicas"]
    pid: int = pids[0]
    return pid


def stayed_warm(env: dict[str, Any], pid: int) -> None:
    assert (env["replicas_started"], env["replicas_attached"]) == (0, 1), env
    assert replica_pid(env) == pid, env


def started_afresh(result: pytest.RunResult, env: dict[str, Any], why: str) -> int:
    result.stdout.fnmatch_lines([f"reuse: replica g-* is stale ({why}); starting afresh"])
    assert env["replicas_started"] == 1, env
    return replica_pid(env)


def first_run(project: pytest.Pytester) -> int:
    _, env = same_as_plain(project)
    assert env["replicas_started"] == 1
    pid = replica_pid(env)
    assert replica_setups(project, {pid}) == ["db", "index"]
    return pid


# -- 0. what the module graph's wrappers must not change ----------------------------------------


def test_a_warning_raised_while_a_module_is_imported_names_its_importer_as_in_plain_pytest(
    project: pytest.Pytester,
) -> None:
    """The graph wraps ``__import__`` in a warm replica: a module warning with
    ``stacklevel=2`` as it is imported (a deprecation shim) must still name the importing
    line, cold and warm (dateutil's tests check exactly this)."""
    write(
        project.path / "app" / "old.py",
        """
        import warnings
        warnings.warn("app.old is deprecated", DeprecationWarning, stacklevel=2)
        """,
    )
    write(
        project.path / "tests" / "test_shim.py",
        """
        import importlib
        import sys

        import pytest


        def test_the_warning_names_this_file():
            sys.modules.pop("app.old", None)
            with pytest.warns(DeprecationWarning, match="deprecated") as record:
                import app.old  # noqa: F401
            assert [w.filename for w in record] == [__file__]
            sys.modules.pop("app.old", None)
            with pytest.warns(DeprecationWarning, match="deprecated") as record:
                importlib.import_module("app.old")
            assert [w.filename for w in record] == [importlib.__file__]
        """,
    )
    for _ in range(2):  # started, then warm
        result, _ = same_as_plain(project, "tests/test_shim.py")
        result.assert_outcomes(passed=1)


# -- 1. edited test modules ---------------------------------------------------------------------


def test_an_edited_test_module_is_collected_again_in_the_warm_replica(
    project: pytest.Pytester,
) -> None:
    pid = first_run(project)
    tests = project.path / "tests" / "test_core.py"

    edit(tests, "== 4", "== 5")  # a constant in a test: now it fails
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_core.py::test_double"][0] == "FAILED"
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported tests/test_core.py; kept db, index (*)"], consecutive=False
    )
    assert env["modules_reimported"] == 1
    assert (env["fixtures_kept"], env["fixtures_rebuilt"]) == (2, 0)

    # Added, renamed and removed tests.
    edit(tests, "def test_limit():", "def test_limit_renamed():")
    tests.write_text(tests.read_text() + "\n\ndef test_added():\n    assert False, 'added'\n")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert "tests/test_core.py::test_added" in summary(result)
    assert "tests/test_core.py::test_limit" not in summary(result)

    # A new test file, then a deleted one.
    write(project.path / "tests" / "test_new.py", "def test_new(db):\n    assert db['rows'] == 4\n")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_new.py::test_new"][0] == "FAILED"
    (project.path / "tests" / "test_new.py").unlink()
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert "tests/test_new.py::test_new" not in summary(result)

    # A syntax error: reported as plain pytest reports it; the fixed run is warm again.
    edit(tests, "def test_double(db):", "def test_double(db)")
    result, env = same_as_plain(project)
    assert summary(result)["tests/test_core.py"][0] == "ERROR"
    section = errors_section(result)
    assert section == errors_section(plain_run(project)), result.stdout.str()
    assert any("SyntaxError" in line for line in section), section
    edit(tests, "def test_double(db)", "def test_double(db):")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_core.py::test_double"][0] == "FAILED"
    assert replica_setups(project, {pid}) == ["db", "index"]  # never set up again


def test_an_import_error_is_reported_as_plain_pytest_reports_it_then_the_fix_is_warm(
    project: pytest.Pytester,
) -> None:
    pid = first_run(project)
    tests = project.path / "tests" / "test_core.py"
    edit(tests, "import LIMIT, double", "import LIMIT, double, missing")
    result, _ = warm_run(project)
    plain = plain_run(project)
    assert summary(result) == summary(plain), result.stdout.str()
    assert summary(result)["tests/test_core.py"][0] == "ERROR"
    assert result.ret == plain.ret == pytest.ExitCode.INTERRUPTED
    section = errors_section(result)
    assert section == errors_section(plain), result.stdout.str() + plain.stdout.str()
    assert any("ImportError: cannot import name 'missing'" in line for line in section), section
    edit(tests, "import LIMIT, double, missing", "import LIMIT, double")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    result.assert_outcomes(passed=3)
    assert replica_setups(project, {pid}) == ["db", "index"]


# -- 2. and 3. edited project modules, fixtures rebuilt only where needed -----------------------


def test_edited_code_under_test_is_re_imported_and_fixtures_stay(
    project: pytest.Pytester,
) -> None:
    pid = first_run(project)
    edit(project.path / "app" / "core.py", "2 * x", "3 * x")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_core.py::test_double"] == ("FAILED", "assert 6 == 4")
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported app/core.py, tests/test_core.py; kept db, index (*)"],
        consecutive=False,
    )
    assert replica_setups(project, {pid}) == ["db", "index"]
    # The summary and the report count them, and what keeping the fixtures saved.
    result.stdout.fnmatch_lines(
        [
            "  through edits: 2 files re-imported, 2 warm fixtures kept (~* s of setup saved "
            "against plain pytest), 0 rebuilt"
        ]
    )
    assert (env["modules_reimported"], env["fixtures_kept"], env["fixtures_rebuilt"]) == (2, 2, 0)
    assert env["replicas_keeping"] == 1
    assert env["kept_fixture_seconds"] > 0


def test_editing_a_fixtures_module_rebuilds_that_fixture_only(project: pytest.Pytester) -> None:
    pid = first_run(project)
    edit(project.path / "app" / "index.py", "SIZE = 10", "SIZE = 11")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_index.py::test_size"][0] == "FAILED"
    result.stdout.fnmatch_lines(
        ["reuse: g-* re-imported app/index.py; kept db; rebuilt index (depends on app/index.py)*"],
        consecutive=False,
    )
    assert (env["fixtures_kept"], env["fixtures_rebuilt"]) == (1, 1)
    assert replica_setups(project, {pid}) == ["db", "index", "index"]


def test_a_fixture_that_asked_for_a_rebuilt_one_with_getfixturevalue_is_rebuilt_first(
    project: pytest.Pytester,
) -> None:
    # pytest ties only declared arguments to a fixture's teardown; a session fixture whose body
    # asks for an edited module's fixture must go too, and be torn down before it.
    write(
        project.path / "tests" / "conftest.py",
        """
        import os
        from pathlib import Path

        import pytest

        LOG = Path(__file__).parent.parent / "setups.txt"


        @pytest.fixture(scope="session")
        def scaled(request):
            value = request.getfixturevalue("base") * 10
            yield value
            with LOG.open("a") as f:
                f.write(f"scaled-teardown {os.getpid()}\\n")
        """,
    )
    write(
        project.path / "tests" / "test_scaled.py",
        """
        import os
        from pathlib import Path

        import pytest

        LOG = Path(__file__).parent.parent / "setups.txt"


        @pytest.fixture(scope="session")
        def base():
            yield 1
            with LOG.open("a") as f:
                f.write(f"base-teardown {os.getpid()}\\n")


        def test_scaled(scaled):
            assert scaled == 10
        """,
    )
    pid = first_run(project)
    edit(project.path / "tests" / "test_scaled.py", "yield 1", "yield 2")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["tests/test_scaled.py::test_scaled"] == ("FAILED", "assert 20 == 10")
    result.stdout.fnmatch_lines(
        [
            "reuse: g-* re-imported tests/test_scaled.py; kept db, index; rebuilt base (defined"
            " in a re-collected module), scaled (requests base) (*)"
        ],
        consecutive=False,
    )
    assert replica_setups(project, {pid}) == ["db", "index", "scaled-teardown", "base-teardown"]


def test_a_module_that_raises_on_re_import_means_a_fresh_replica(
    project: pytest.Pytester,
) -> None:
    # A registration that refuses a second one, kept where no project module is imported anew
    # (a project registry would be: it grows as models.py is imported): the re-import raises,
    # a fresh process's import does not.
    write(
        project.path / "app" / "models.py",
        """
        import sys

        if getattr(sys, "_reuse_test_model", False):
            raise RuntimeError("model registered twice")
        sys._reuse_test_model = True
        VALUE = 1
        """,
    )
    write(
        project.path / "tests" / "test_models.py",
        "import app.models\n\n\ndef test_value():\n    assert app.models.VALUE == 1\n",
    )
    pid = first_run(project)
    edit(project.path / "app" / "models.py", "VALUE = 1", "VALUE = 2")
    result, env = same_as_plain(project)
    new = started_afresh(result, env, "app/models.py raised on re-import: RuntimeError*")
    assert new != pid


# -- 4. today's three holes ---------------------------------------------------------------------


def test_code_under_test_outside_the_invocation_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sibling = pytester.path / "sibling"
    write(sibling / "lib.py", "VALUE = 1\n")
    inner = pytester.path / "proj"
    write(inner / "pytest.ini", INI.replace("pythonpath = .", "pythonpath = ../sibling"))
    write(inner / "test_lib.py", "import lib\n\n\ndef test_value():\n    assert lib.VALUE == 1\n")
    monkeypatch.chdir(inner)
    try:
        result, env = warm_run(pytester)
        result.assert_outcomes(passed=1)
        pid = replica_pid(env)
        edit(sibling / "lib.py", "VALUE = 1", "VALUE = 2")
        result, env = warm_run(pytester)
        result.assert_outcomes(failed=1)
        stayed_warm(env, pid)
        result.stdout.fnmatch_lines(["reuse: g-* re-imported ../sibling/lib.py, test_lib.py*"])
    finally:
        stop_and_check(pytester)


def test_started_from_the_tests_directory_with_the_edit_in_src(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.path / "tests")
    pid = first_run(project)
    edit(project.path / "app" / "core.py", "2 * x", "3 * x")
    result, env = same_as_plain(project)
    stayed_warm(env, pid)
    assert summary(result)["test_core.py::test_double"][0] == "FAILED"


def test_a_distribution_reinstalled_under_the_same_version(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = project.path / "site" / "site-packages"

    def install(value: int) -> None:
        code = f"VALUE = {value}\n"
        write(site / "mylib" / "__init__.py", code)
        write(site / "mylib-1.0.dist-info" / "METADATA", "Name: mylib\nVersion: 1.0\n")
        write(
            site / "mylib-1.0.dist-info" / "RECORD",
            f"mylib/__init__.py,sha256=v{value},{len(code)}\n",
        )

    install(1)
    monkeypatch.setenv("PYTHONPATH", str(site))
    write(
        project.path / "tests" / "test_lib.py",
        "import mylib\n\n\ndef test_value():\n    assert mylib.VALUE == 1\n",
    )
    first_run(project)
    install(2)
    result, env = same_as_plain(project)
    assert summary(result)["tests/test_lib.py::test_value"][0] == "FAILED"
    assert env["replicas_started"] == 1  # another environment: its fingerprint changed


def test_reload_off_means_a_fresh_replica_for_any_edit(project: pytest.Pytester) -> None:
    write(project.path / "pytest.ini", INI + "reuse_reload = off\n")
    pid = first_run(project)
    edit(project.path / "tests" / "test_core.py", "LIMIT == 3", "LIMIT == 4")
    result, env = same_as_plain(project)
    new = started_afresh(result, env, "tests/test_core.py changed (reuse_reload = off)")
    assert new != pid
    assert replica_setups(project, {new}) == ["db", "index"]


def test_reload_exclude_means_a_fresh_replica(project: pytest.Pytester) -> None:
    write(project.path / "pytest.ini", INI + "reuse_reload_exclude = app/index.py\n")
    pid = first_run(project)
    edit(project.path / "app" / "index.py", "SIZE = 10", "SIZE = 12")
    result, env = same_as_plain(project)
    pid = started_afresh(result, env, "app/index.py changed (reuse_reload_exclude: app/index.py)")
    assert replica_setups(project, {pid}) == ["db", "index"]
