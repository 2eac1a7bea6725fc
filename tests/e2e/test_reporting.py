"""End to end: what a run with replicas reports is what plain pytest reports.

Every test here runs an inner pytest in a subprocess (``runpytest_subprocess``) with the plugin,
once with reuse on and, where parity is the point, once with ``--reuse=off`` as the reference.
Tests run in replicas report through pytest's own hooks, so outcomes per nodeid, summary counts,
junitxml, the warnings summary, captured output, ``-x``, ``--maxfail``, ``-k`` and ``--lf`` must
all look as they do without the plugin.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import run

# pytest-asyncio, when installed, warns at configure time about an unset ini key of its own;
# hypothesis and anyio only cost start-up time in every inner run and replica.
#: A replayed result line in ``-v`` output: "[r0] [ 50%] PASSED nodeid" (the replica id may be
#: followed by more words inside the brackets, e.g. "[r0 warm]").
PREFIXED = r"^\[(r\d+)(?: [^\]]*)?\] \[ *\d+%\] (\w+) (\S+)"


def junit_outcomes(path: Path) -> dict[str, list[str]]:
    """``{classname::name: sorted "tag:message" of failure/error/skipped children}``."""
    outcomes: dict[str, list[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        assert key not in outcomes, f"testcase {key} appears twice in {path}"
        outcomes[key] = sorted(
            f"{child.tag}:{child.get('message', '')}"
            for child in case
            if child.tag in ("failure", "error", "skipped")
        )
    return outcomes


def short_summary(result: pytest.RunResult) -> list[str]:
    """The ``-rA`` lines of the short test summary, sorted (replicas finish in any order)."""
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    summary = []
    for line in lines[start + 1 :]:
        if line.startswith("="):
            break
        summary.append(line)
    return sorted(summary)


def section_of(result: pytest.RunResult, title: str) -> str:
    """The text of the ``____ title ____`` section, up to the next section or summary."""
    lines = result.outlines
    start = next(
        i for i, line in enumerate(lines) if re.fullmatch(rf"_+ {re.escape(title)} _+", line)
    )
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(r"(_{3,} |={3,} )", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end])


def setups(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- parity with plain pytest ------------------------------------------------------------------

PARITY_CONFTEST = """
import os
import time
from pathlib import Path

import pytest

SETUPS = Path(__file__).with_name("session_setups.txt")


@pytest.fixture(scope="session", autouse=True)
def expensive_session():
    with SETUPS.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    if os.environ.get("PYTEST_REUSE_REPLICA"):
        # Both replicas get work: wait (bounded) until the other one set up too.
        deadline = time.monotonic() + 15
        while len(SETUPS.read_text().split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    yield "session"
"""

PARITY_SUITE = """
import logging
import sys
import warnings

import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup-boom")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown-boom")


@pytest.fixture(scope="module")
def module_resource(expensive_session):
    return {"session": expensive_session}


def test_pass(module_resource):
    assert module_resource == {"session": "session"}


def test_fail():
    print("stdout-of-failure")
    sys.stderr.write("stderr-of-failure\\n")
    logging.getLogger("suite").warning("log-of-failure")
    assert 1 + 1 == 3


def test_setup_error(broken_setup):
    pass


def test_teardown_error(broken_teardown):
    pass


def test_skip():
    pytest.skip("skip-reason")


@pytest.mark.skipif(True, reason="skipif-reason")
def test_skipif():
    pass


@pytest.mark.xfail(reason="xfail-reason")
def test_xfail():
    assert 0


@pytest.mark.xfail(reason="xpass-reason")
def test_xpass():
    pass


@pytest.mark.xfail(strict=True, reason="strict-reason")
def test_xpass_strict():
    pass


def test_warns():
    warnings.warn(UserWarning("suite-warning-text"))


@pytest.mark.parametrize("n", range(8))
def test_param(n, module_resource):
    assert n != 5


class TestGroup:
    @pytest.fixture(scope="class")
    @classmethod
    def class_resource(cls, module_resource):
        return ["class", module_resource["session"]]

    def test_one(self, class_resource):
        assert class_resource == ["class", "session"]

    def test_two(self, class_resource):
        assert class_resource[0] == "class"
"""

#: What plain pytest reports for PARITY_SUITE: the reference the reuse run must match.
PARITY_COUNTS = {
    "passed": 12,
    "failed": 3,
    "errors": 2,
    "skipped": 2,
    "xfailed": 1,
    "xpassed": 1,
    "warnings": 1,
}


def test_parity_with_plain_pytest(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 2\nreuse_scope = run\nreuse_all = default\n")
    pytester.makeconftest(PARITY_CONFTEST)
    pytester.makepyfile(test_outcomes=PARITY_SUITE)
    session_setups = pytester.path / "session_setups.txt"

    plain = run(pytester, "--reuse=off", "-rA", "-v", "--junitxml=plain.xml")
    assert plain.parseoutcomes() == PARITY_COUNTS, plain.stdout.str()
    assert plain.ret == pytest.ExitCode.TESTS_FAILED
    assert len(setups(session_setups)) == 1
    session_setups.unlink()

    reuse = run(pytester, "-rA", "-v", "--junitxml=reuse.xml")
    out = reuse.stdout.str()
    assert reuse.ret == pytest.ExitCode.TESTS_FAILED, out
    assert reuse.parseoutcomes() == PARITY_COUNTS, out

    # Same outcome per nodeid, in the junitxml and in the -rA lines.
    plain_junit = junit_outcomes(pytester.path / "plain.xml")
    assert len(plain_junit) == 20
    assert junit_outcomes(pytester.path / "reuse.xml") == plain_junit
    assert short_summary(reuse) == short_summary(plain)

    # The session fixture ran in the replicas (at most once each), not per test.
    pids = setups(session_setups)
    assert 1 <= len(pids) <= 2, pids
    assert len(set(pids)) == len(pids), f"a replica set the session fixture up twice: {pids}"

    # Warnings summary and captured output sections of the failure.
    reuse.stdout.fnmatch_lines(
        [
            "*= warnings summary =*",
            "test_outcomes.py::test_warns",
            "*UserWarning: suite-warning-text",
        ]
    )
    failure = section_of(reuse, "test_fail")
    for section, text in [
        ("Captured stdout call", "stdout-of-failure"),
        ("Captured stderr call", "stderr-of-failure"),
        ("Captured log call", "log-of-failure"),
    ]:
        assert section in failure, failure
        assert text in failure, failure
    assert "RuntimeError: setup-boom" in out
    assert "RuntimeError: teardown-boom" in out

    # -v: each replica's results carry its xdist-style prefix; every test ran in a replica.
    prefixed = re.findall(PREFIXED, out, re.MULTILINE)
    assert {replica for replica, _, _ in prefixed} == {"r0", "r1"}, out
    plain_nodeids = set(re.findall(r"^(test_outcomes\.py::\S+) ", plain.stdout.str(), re.M))
    assert len(plain_nodeids) == 20
    assert {nodeid for _, _, nodeid in prefixed} == plain_nodeids, out


# -- stopping early, selecting, rerunning --------------------------------------------------------

STOP_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(10))
def test_n(n):
    assert n not in (1, 3)
"""


def test_exitfirst_and_maxfail_stop_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\n")
    pytester.makepyfile(test_stop=STOP_SUITE)

    # Exactly plain pytest's outcomes: the tests a replica ran ahead of the failure (it holds
    # several at once) are not shown.
    first = run(pytester, "-x")
    outcomes = first.parseoutcomes()
    assert first.ret == pytest.ExitCode.TESTS_FAILED, first.stdout.str()
    assert outcomes == {"failed": 1, "passed": 1}, outcomes
    first.stdout.fnmatch_lines(["*! stopping after 1 failures !*"])

    two = run(pytester, "--maxfail=2")
    outcomes = two.parseoutcomes()
    assert two.ret == pytest.ExitCode.TESTS_FAILED, two.stdout.str()
    assert outcomes == {"failed": 2, "passed": 2}, outcomes
    two.stdout.fnmatch_lines(["*! stopping after 2 failures !*"])


LONG_STOP_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


@pytest.mark.parametrize("n", range(80))
def test_n(n):
    assert n not in (41, 57)
"""


@pytest.mark.parametrize("stop", ["-x", "--maxfail=2"])
def test_a_failure_after_held_passes_stops_the_run_where_plain_pytest_stops(
    pytester: pytest.Pytester, stop: str
) -> None:
    # Enough quick passes for the replica to hold them back and send them together
    # (replica/held.py): the failure still comes right after them, and -x and --maxfail stop
    # exactly where plain pytest does.
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\n")
    pytester.makepyfile(test_stop=LONG_STOP_SUITE)
    plain = run(pytester, stop, "-rA", "--reuse=off")
    reused = run(pytester, stop, "-rA")
    assert reused.ret == plain.ret == pytest.ExitCode.TESTS_FAILED, reused.stdout.str()
    assert reused.parseoutcomes() == plain.parseoutcomes(), reused.stdout.str()

    def summary(result: pytest.RunResult) -> list[str]:
        return [line for line in result.outlines if line.startswith(("PASSED ", "FAILED "))]

    assert summary(reused) == summary(plain)


SELECT_SUITE = """
import pytest

pytestmark = pytest.mark.reuse


def test_alpha_ok():
    pass


def test_alpha_bad():
    assert 0


def test_beta_ok():
    pass


def test_beta_bad():
    assert 0


def test_local_bad():
    assert 0


test_local_bad = pytest.mark.reuse(False)(test_local_bad)
"""


def test_keyword_selection_and_last_failed(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\n")
    pytester.makepyfile(test_select=SELECT_SUITE)

    selected = run(pytester, "-k", "alpha", "-v")
    assert selected.parseoutcomes() == {"passed": 1, "failed": 1, "deselected": 3}
    assert "beta" not in selected.stdout.str()

    full = run(pytester)
    assert full.parseoutcomes() == {"passed": 2, "failed": 3}

    # The cache saw the replayed failures: --lf reruns exactly those.
    again = run(pytester, "--lf", "-v")
    out = again.stdout.str()
    outcomes = again.parseoutcomes()
    assert outcomes["failed"] == 3, out
    assert "passed" not in outcomes, out
    assert "run-last-failure: rerun previous 3 failures" in out
    assert "test_alpha_ok" not in out
    assert "test_beta_ok" not in out
    for name in ("test_alpha_bad", "test_beta_bad", "test_local_bad"):
        assert f"test_select.py::{name} " in out, out


# -- which tests go to replicas ------------------------------------------------------------------

ROUTING_CONFTEST = """
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("where.txt")


def pytest_collection_modifyitems(items):
    for item in items:
        if "hooked" in item.name:
            item.add_marker(pytest.mark.reuse)


@pytest.fixture
def record(request):
    replica = os.environ.get("PYTEST_REUSE_REPLICA", "-")
    with LOG.open("a") as f:
        f.write(f"{request.node.name} {replica} {os.getpid()}\\n")
    return replica
"""

ROUTING_MODULE_MARK = """
import pytest

pytestmark = pytest.mark.reuse


def test_module_one(record):
    assert record != "-"


def test_module_two(record):
    assert record != "-"
"""

ROUTING_MIXED = """
import os

import pytest


@pytest.mark.reuse
class TestMarkedClass:
    def test_in_class(self, record):
        assert record != "-"


@pytest.mark.reuse("solo")
def test_named_policy(record):
    assert record != "-"


def test_hooked(record):
    assert record != "-"


def test_unmarked(record):
    assert record == "-"
    assert "PYTEST_REUSE_REPLICA" not in os.environ
"""


def test_markers_route_tests_to_replicas(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nreuse_replicas = 1\nreuse_scope = run\n"
        "reuse_policies =\n    solo: replicas=1 timeout=50\n"
    )
    pytester.makeconftest(ROUTING_CONFTEST)
    pytester.makepyfile(test_module_mark=ROUTING_MODULE_MARK, test_mixed=ROUTING_MIXED)

    result = run(pytester, "-v")
    out = result.stdout.str()
    assert result.parseoutcomes() == {"passed": 6}, out
    where = {
        name: (replica, int(pid))
        for name, replica, pid in (
            line.split() for line in (pytester.path / "where.txt").read_text().splitlines()
        )
    }
    assert set(where) == {
        "test_module_one",
        "test_module_two",
        "test_in_class",
        "test_named_policy",
        "test_hooked",
        "test_unmarked",
    }
    default_env = {
        where[name]
        for name in ("test_module_one", "test_module_two", "test_in_class", "test_hooked")
    }
    # One replica serves the default policy; the named policy has an environment of its own.
    assert len(default_env) == 1, where
    (default_replica, default_pid) = default_env.pop()
    named_replica, named_pid = where["test_named_policy"]
    assert named_replica != default_replica
    assert named_pid != default_pid
    local_replica, local_pid = where["test_unmarked"]
    assert local_replica == "-"
    assert local_pid not in (default_pid, named_pid)

    # -v: replayed results carry their replica's prefix; the local test has none.
    replayed = {nodeid: replica for replica, _, nodeid in re.findall(PREFIXED, out, re.M)}
    assert replayed == {
        "test_module_mark.py::test_module_one": default_replica,
        "test_module_mark.py::test_module_two": default_replica,
        "test_mixed.py::TestMarkedClass::test_in_class": default_replica,
        "test_mixed.py::test_hooked": default_replica,
        "test_mixed.py::test_named_policy": named_replica,
    }, out
    assert re.search(r"^test_mixed.py::test_unmarked PASSED", out, re.M), out


def test_dash_s_prints_replica_output_once_and_drops_the_sections(
    pytester: pytest.Pytester,
) -> None:
    """With -s a replica still captures (its stdout is no terminal): the controller prints each
    phase's output as its report arrives, once, and the failure shows no captured section, as
    in plain pytest -s."""
    pytester.makeini("[pytest]\nreuse_replicas = 1\nreuse_scope = run\n")
    pytester.makepyfile(
        test_out="""
        import sys
        import pytest

        @pytest.fixture
        def noisy():
            print("from" + "-setup")  # built at run time: the traceback's source shows the code
            yield
            print("from" + "-teardown")

        @pytest.mark.reuse
        def test_talks(noisy):
            print("from" + "-call")
            sys.stderr.write("to" + "-stderr\\n")
            assert False
        """
    )
    result = run(pytester, "-s")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for text in ("from-setup", "from-call", "from-teardown"):
        assert out.count(text) == 1, out
    assert "to-stderr" in result.stderr.str()
    assert "Captured stdout" not in out
    assert out.index("from-setup") < out.index("from-call") < out.index("from-teardown")


def test_a_warning_from_a_replicas_last_test_is_never_lost(pytester: pytest.Pytester) -> None:
    """pytest records a test's warnings after its logfinish: the run must not end between."""
    pytester.makeini("[pytest]\nreuse_replicas = 2\nreuse_scope = run\n")
    pytester.makepyfile(
        test_warn="""
        import warnings
        import pytest

        @pytest.mark.reuse
        @pytest.mark.parametrize("i", range(2))
        def test_warns_last(i):
            warnings.warn(f"late-warning-{i}", UserWarning)
        """
    )
    for _ in range(5):
        result = run(pytester)
        result.assert_outcomes(passed=2, warnings=2)
        result.stdout.fnmatch_lines(["*late-warning-0*"])
        result.stdout.fnmatch_lines(["*late-warning-1*"])
