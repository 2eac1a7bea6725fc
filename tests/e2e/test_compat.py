"""End to end: the plugins people combine with pytest work through replicas.

The compatibility matrix: one test per plugin (pytest-randomly, pytest-rerunfailures,
pytest-cov, xdist's ``worker_id``/``testrun_uid``, a plugin that owns the test loop), each run
with ``--reuse=off`` and then through reuse (``--reuse-all=default``), cold and warm (a second
run attaches to the first run's replicas), compared test by test; the plugins that talk to
workers through xdist's node hooks are run with pytest-xdist loaded and with it disabled.
README's "Works with" table mirrors this file.

Every test ends its warm replicas with ``--reuse-stop`` and checks by pid that they are gone.
"""

from __future__ import annotations

import json
import random
import re
import sys
import zlib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.helpers import NOISE_OFF, replicas_stopped, run

#: Inner runs keep pytest-randomly (NOISE_OFF turns it off) only where it is under test.
QUIET = tuple(
    arg
    for flag, name in zip(NOISE_OFF[::2], NOISE_OFF[1::2], strict=True)
    if name != "no:randomly"
    for arg in (flag, name)
)
WITHOUT_RANDOMLY = ("-p", "no:randomly")
#: pytest-xdist loaded (its node hookspecs declared by xdist) or not (declared by reuse).
XDIST = pytest.mark.parametrize("xdist", ["xdist", "no-xdist"])

RECORDING_CONFTEST = """
import json
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _record(request):
    yield
    seen = getattr(request.node, "seen", None)
    if seen is not None:
        with (HERE / "seen.jsonl").open("a") as f:
            f.write(json.dumps({"nodeid": request.node.nodeid, **seen}) + "\\n")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester directory whose warm replicas are stopped (and checked gone) at the end."""
    pytester.makeconftest(RECORDING_CONFTEST)
    with replicas_stopped(pytester):
        yield pytester


def inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An inner run with the plugin on and only the plugins under test besides it."""
    return run(pytester, "-rA", *args, plugins=(*QUIET, "-p", "reuse_env"))


def xdist_args(xdist: str) -> tuple[str, ...]:
    return ("-p", "no:xdist") if xdist == "no-xdist" else ()


def seen(pytester: pytest.Pytester) -> dict[str, dict[str, object]]:
    """What each test recorded in the run just made (the file is emptied for the next)."""
    path = pytester.path / "seen.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    found: dict[str, dict[str, object]] = {}
    for line in lines:
        entry = json.loads(line)
        found[entry.pop("nodeid")] = entry
    return found


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """``{nodeid: PASSED/FAILED/...}`` from the ``-rA`` summary."""
    found: dict[str, str] = {}
    for line in result.stdout.lines:
        match = re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS|RERUN) (\S+)", line)
        if match:
            found.setdefault(match.group(2), match.group(1))
    return found


def three_runs(
    pytester: pytest.Pytester, *args: str
) -> list[tuple[pytest.RunResult, dict[str, dict[str, object]]]]:
    """Plain (``--reuse=off``), then reuse cold, then reuse warm; each with what tests saw."""
    runs = []
    for mode in (("--reuse=off",), ("--reuse-all=default",), ("--reuse-all=default",)):
        result = inner(pytester, *mode, *args)
        runs.append((result, seen(pytester)))
    return runs


def assert_warm(result: pytest.RunResult) -> None:
    assert "attached warm" in result.stdout.str(), result.stdout.str()


# -- pytest-randomly -----------------------------------------------------------------------------

RANDOM_TESTS = """
import random

import pytest


@pytest.mark.parametrize("n", range(4))
def test_random(request, n):
    request.node.seen = {"value": random.random()}


class TestInClass:
    def test_a(self, request):
        request.node.seen = {"value": random.random()}

    def test_b(self, request):
        request.node.seen = {"value": random.random()}
"""


@XDIST
def test_randomly_seed_and_order_as_plain(project: pytest.Pytester, xdist: str) -> None:
    project.makepyfile(test_random=RANDOM_TESTS)
    project.makeini("[pytest]\nreuse_replicas = 1\n")
    runs = three_runs(project, "--randomly-seed=1234", "-v", *xdist_args(xdist))
    (plain, plain_seen), (cold, cold_seen), (warm, warm_seen) = runs
    for result in (plain, cold, warm):
        assert result.ret == 0, result.stdout.str()
        result.stdout.fnmatch_lines(["*Using --randomly-seed=1234*"])
    assert_warm(warm)
    # Each test's random values are plain pytest's for the same seed, cold and warm.
    assert cold_seen == plain_seen
    assert warm_seen == plain_seen
    # One replica runs the tests in the order pytest-randomly gave them, as plain pytest.
    order = [n for n in outcomes(plain)]
    assert [n for n in outcomes(cold)] == order
    assert [n for n in outcomes(warm)] == order
    assert order != sorted(order)  # shuffled (this seed does reorder these six)


def test_randomly_default_seed_reaches_warm_replicas(project: pytest.Pytester) -> None:
    """No --randomly-seed: each run has a new seed; a warm replica uses the new run's."""
    project.makepyfile(test_random=RANDOM_TESTS)
    for _ in range(2):
        result = inner(project, "--reuse-all=default")
        assert result.ret == 0, result.stdout.str()
        header = re.search(r"Using --randomly-seed=(\d+)", result.stdout.str())
        assert header is not None, result.stdout.str()
        seed = int(header.group(1))
        entries = seen(project)
        assert len(entries) == 6
        for nodeid, entry in entries.items():
            # pytest-randomly seeds each test's call phase with seed + crc32(nodeid).
            expected = random.Random(seed + zlib.crc32(nodeid.encode())).random()
            assert entry["value"] == expected, nodeid
    assert_warm(result)


# -- pytest-rerunfailures ------------------------------------------------------------------------

FLAKY_TESTS = """
from pathlib import Path

HERE = Path(__file__).parent


def test_flaky():
    marks = HERE / "attempts.txt"
    attempts = int(marks.read_text()) if marks.exists() else 0
    marks.write_text(str(attempts + 1))
    assert attempts % 2 == 1, "fails every other attempt"


def test_steady():
    pass


def test_broken():
    assert False
"""


@XDIST
def test_rerunfailures_as_plain(project: pytest.Pytester, xdist: str) -> None:
    project.makepyfile(test_flaky=FLAKY_TESTS)
    runs = three_runs(project, "--reruns=2", *WITHOUT_RANDOMLY, *xdist_args(xdist))
    (plain, _), (cold, _), (warm, _) = runs
    assert_warm(warm)
    expected = plain.parseoutcomes()
    assert expected == {"failed": 1, "passed": 2, "rerun": 3}, plain.stdout.str()
    for result in (cold, warm):
        assert result.parseoutcomes() == expected, result.stdout.str()
        assert outcomes(result) == outcomes(plain)
        assert "KeyError" not in result.stdout.str()


# -- pytest-cov ----------------------------------------------------------------------------------

PACKAGE = {
    "pkg/__init__.py": "CONSTANT = 1\n\n\ndef used():\n    return 1\n\n\ndef unused():\n"
    "    return 2\n",
    "pkg/db.py": "def make_db():\n    x = 1\n    return {'x': x}\n",
    "pkg/lazy.py": "VALUE = 3\n\n\ndef lazy():\n    return VALUE\n",
}

COV_CONFTEST = (
    RECORDING_CONFTEST
    + """

@pytest.fixture(scope="session")
def db():
    from pkg.db import make_db  # imported only here: import-time lines run once per replica

    return make_db()
"""
)

COV_TESTS = """
import pkg


def test_used(db):
    assert pkg.used() == 1


def test_lazy():
    from pkg.lazy import lazy

    assert lazy() == 3


def test_local():
    assert pkg.CONSTANT == 1
"""


def coverage_by_file(result: pytest.RunResult) -> dict[str, float]:
    found = {}
    for line in result.stdout.lines:
        match = re.match(r"^(pkg/\S+\.py)\s+\d+\s+\d+\s+(\d+(?:\.\d+)?)%", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


@XDIST
@pytest.mark.parametrize("scope", ["global", "run"])
def test_cov_same_coverage_as_plain(project: pytest.Pytester, xdist: str, scope: str) -> None:
    for path, text in PACKAGE.items():
        (project.path / path).parent.mkdir(exist_ok=True)
        (project.path / path).write_text(text)
    project.makeconftest(COV_CONFTEST)
    project.makepyfile(test_cov=COV_TESTS)
    project.makeini(f"[pytest]\nreuse_scope = {scope}\n")
    args = ("--cov=pkg", "--cov-report=term", "--cov-precision=1")
    runs = three_runs(project, *args, *WITHOUT_RANDOMLY, *xdist_args(xdist))
    (plain, _), (cold, _), (warm, _) = runs
    expected = coverage_by_file(plain)
    assert set(expected) == {"pkg/__init__.py", "pkg/db.py", "pkg/lazy.py"}, plain.stdout.str()
    for result in (cold, warm):
        assert result.ret == 0, result.stdout.str()
        found = coverage_by_file(result)
        assert found.keys() == expected.keys(), result.stdout.str()
        for path, percent in expected.items():
            assert abs(found[path] - percent) <= 0.5, (path, found, expected, result.stdout.str())
        assert "failed workers" not in result.stdout.str()
    if scope == "global":
        assert_warm(warm)
    # Nothing of a replica's is left for a later run's combine to pick up.
    assert not [p.name for p in project.path.glob(".coverage.*")]


#: ``-p late_replica``: imported before pytest-cov starts. With COV_HANDSHAKE set, every replica
#: but the first (``first.marker``) waits here until the controller has combined coverage.
LATE_REPLICA_PLUGIN = """
import os
import time
from pathlib import Path

HERE = Path(__file__).parent


def wait_for(path, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


replica = os.environ.get("PYTEST_REUSE_REPLICA")
if replica and os.environ.get("COV_HANDSHAKE"):
    try:
        os.close(os.open(HERE / "first.marker", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        (HERE / "late-waiting.marker").write_text(replica)
        wait_for(HERE / "combined.marker")
"""

#: The controller's side of the handshake: once the late replica waits, it goes on (its
#: pytest-cov starts) right before pytest-cov combines (COV_HANDSHAKE=before: the lease data of
#: the replica that served is in a data file then) or between combining and the report (after).
LATE_REPLICA_CONFTEST = """

if os.environ.get("PYTEST_REUSE_REPLICA"):
    _late = HERE / "late-waiting.marker"
    if _late.exists() and _late.read_text() == os.environ["PYTEST_REUSE_REPLICA"]:
        (HERE / "late-started.marker").touch()  # after its pytest-cov started
elif os.environ.get("COV_HANDSHAKE"):
    from late_replica import wait_for
    from pytest_cov import engine

    _finish = engine.Central.finish

    def _let_the_late_replica_start():
        (HERE / "combined.marker").touch()
        wait_for(HERE / "late-started.marker")

    def _finish_while_a_replica_starts(self):
        wait_for(HERE / "late-waiting.marker")
        if os.environ["COV_HANDSHAKE"] == "before":
            _let_the_late_replica_start()
        _finish(self)
        if os.environ["COV_HANDSHAKE"] == "after":
            _let_the_late_replica_start()

    engine.Central.finish = _finish_while_a_replica_starts
"""


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("scope", ["run", "global"])
def test_cov_kept_when_a_replica_starts_as_the_run_combines(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, scope: str, moment: str
) -> None:
    """One replica runs every test while another is still starting: its pytest-cov starts
    just before the run combines coverage, or between combining and the report (made so here;
    machine load did it, "No data to report"), and must neither erase the data files nor count
    as a failed worker."""
    for path, text in PACKAGE.items():
        (project.path / path).parent.mkdir(exist_ok=True)
        (project.path / path).write_text(text)
    project.makeconftest(COV_CONFTEST + LATE_REPLICA_CONFTEST)
    project.makepyfile(test_cov=COV_TESTS, late_replica=LATE_REPLICA_PLUGIN)
    project.makeini(
        f"[pytest]\nreuse_scope = {scope}\nreuse_replicas = (1, 2)\nreuse_replica_limit = 2\n"
    )
    cov = ("--cov=pkg", "--cov-report=term", "--cov-precision=1")
    args = ("-p", "late_replica", *cov, *WITHOUT_RANDOMLY, *xdist_args("no-xdist"))
    plain = inner(project, "--reuse=off", *args)
    expected = coverage_by_file(plain)
    assert set(expected) == {"pkg/__init__.py", "pkg/db.py", "pkg/lazy.py"}, plain.stdout.str()
    if scope == "global":  # one warm replica (one test selected: one replica started)
        first = inner(project, "--reuse-all=default", *args, "-k", "test_used")
        assert first.ret == 0, first.stdout.str()
        (project.path / "first.marker").touch()  # the warm one serves, a new one starts late
    monkeypatch.setenv("COV_HANDSHAKE", moment)
    result = inner(project, "--reuse-all=default", *args)
    output = result.stdout.str()
    assert result.ret == 0, output
    assert result.parseoutcomes() == {"passed": 3}, output
    # The late replica's pytest-cov started when it was let go (no wait ran out).
    combined, started = (project.path / f"{name}.marker" for name in ("combined", "late-started"))
    assert combined.stat().st_mtime_ns <= started.stat().st_mtime_ns, output
    found = coverage_by_file(result)
    assert found.keys() == expected.keys(), output
    for path, percent in expected.items():
        assert abs(found[path] - percent) <= 0.5, (path, found, expected, output)
    assert "failed workers" not in output
    if scope == "global":
        assert_warm(result)
    # The data file the run leaves (for coverage html/xml later) holds it too.
    report = project.run(sys.executable, "-m", "coverage", "report", "--precision=1")
    assert coverage_by_file(report) == found, report.stdout.str() + report.stderr.str()
    assert not [p.name for p in project.path.glob(".coverage.*")]


# -- xdist's worker_id and testrun_uid -----------------------------------------------------------

WORKER_TESTS = """
import os

import pytest


@pytest.mark.parametrize("n", range(4))
def test_ids(request, worker_id, testrun_uid, n):
    request.node.seen = {
        "worker_id": worker_id,
        "testrun_uid": testrun_uid,
        "env_worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "env_uid": os.environ.get("PYTEST_XDIST_TESTRUNUID"),
    }
"""


def test_worker_id_and_testrun_uid_as_under_xdist(project: pytest.Pytester) -> None:
    project.makepyfile(test_ids=WORKER_TESTS)
    runs = three_runs(project, *WITHOUT_RANDOMLY)
    (_, plain_seen), (cold, cold_seen), (warm, warm_seen) = runs
    assert {e["worker_id"] for e in plain_seen.values()} == {"master"}
    uids = []
    for result, entries in ((cold, cold_seen), (warm, warm_seen)):
        assert result.ret == 0, result.stdout.str()
        assert len(entries) == 4
        ids = {e["worker_id"] for e in entries.values()}
        assert ids <= {"gw0", "gw1"}, entries  # replica slots, as pytest -n 2 names workers
        run_uids = {e["testrun_uid"] for e in entries.values()}
        assert len(run_uids) == 1, entries  # one uid for the whole run, every replica
        uids.append(run_uids.pop())
        for entry in entries.values():
            assert entry["env_worker"] == entry["worker_id"]
            assert entry["env_uid"] == entry["testrun_uid"]
    assert_warm(warm)
    assert uids[0] != uids[1]  # the warm run has its own uid, not the first run's
    # --testrunuid (xdist's option) is the uid every replica sees.
    given = inner(project, "--reuse-all=default", "--testrunuid=shared-uid", *WITHOUT_RANDOMLY)
    assert given.ret == 0, given.stdout.str()
    assert {e["testrun_uid"] for e in seen(project).values()} == {"shared-uid"}


# -- a plugin that owns the test loop ------------------------------------------------------------

LOOP_OWNER = """
import pytest


class OwnLoop:
    # Like pytest-asyncio-cooperative: let the inner loop do nothing, then run every test.
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session):
        before = session.config.option.collectonly
        session.config.option.collectonly = True
        yield
        session.config.option.collectonly = before
        for i, item in enumerate(session.items):
            nextitem = session.items[i + 1] if i + 1 < len(session.items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        return True


def pytest_configure(config):
    config.pluginmanager.register(OwnLoop(), "own-loop")
"""


def test_loop_owning_plugin_runs_each_test_once(project: pytest.Pytester) -> None:
    project.makeconftest(RECORDING_CONFTEST + LOOP_OWNER)
    project.makepyfile(test_three="def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n")
    plain = inner(project, "--reuse=off", *WITHOUT_RANDOMLY)
    reused = inner(project, "--reuse-all=default", *WITHOUT_RANDOMLY)
    assert plain.parseoutcomes()["passed"] == 3
    assert reused.parseoutcomes()["passed"] == 3, reused.stdout.str()
    assert outcomes(reused) == outcomes(plain)
    text = reused.stdout.str()
    assert text.count("reuse is off for this run: plugin 'own-loop'") == 1, text
    assert "-p no:own-loop" in text


def test_matrix_versions_are_installed() -> None:
    """The versions README's table names are the ones this matrix ran with."""
    for name in ("pytest-cov", "pytest-randomly", "pytest-rerunfailures", "pytest-xdist"):
        assert version(name)
    assert Path(__file__).name == "test_compat.py"


def test_cov_after_an_edit_as_plain(project: pytest.Pytester) -> None:
    """A warm replica that re-imports an edited module reports its new lines, not the old."""
    for path, text in PACKAGE.items():
        (project.path / path).parent.mkdir(exist_ok=True)
        (project.path / path).write_text(text)
    project.makeconftest(COV_CONFTEST)
    project.makepyfile(test_cov=COV_TESTS)
    args = ("--cov=pkg", "--cov-report=term", "--cov-precision=1", *WITHOUT_RANDOMLY)
    cold = inner(project, "--reuse-all=default", *args)
    assert cold.ret == 0, cold.stdout.str()
    seen(project)
    lazy = project.path / "pkg" / "lazy.py"
    lazy.write_text(
        "VALUE = 3\nOTHER = 4\n\n\ndef lazy():\n    return VALUE\n\n\ndef more():\n    return 5\n"
    )
    plain = inner(project, "--reuse=off", *args)
    warm = inner(project, "--reuse-all=default", *args)
    assert_warm(warm)  # the replica re-imported the edited module (reuse_reload)
    expected = coverage_by_file(plain)
    found = coverage_by_file(warm)
    assert found.keys() == expected.keys(), warm.stdout.str()
    for path, percent in expected.items():
        assert abs(found[path] - percent) <= 0.5, (path, found, expected, warm.stdout.str())
