"""End to end: async tests run concurrently on one loop (``replica/asyncbatch/batch.py``).

Each test runs an inner pytest in process (``pytester.runpytest``) with a tiny conftest plugin
whose ``pytest_runtestloop`` hands the collected async items to ``run_concurrently`` in
``BATCHES`` batches, ``LIMIT`` at a time, with a ``TEST_TIMEOUT`` per test. Without ``LIMIT`` the
plugin steps aside and pytest-asyncio runs the same file the ordinary way (the reference).
Fixtures append to the ``EVENTS`` file, so set-up counts and teardown order can be read back.
Every wait in an inner test is bounded, and so is every inner test (``TEST_TIMEOUT``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_reuse_env.replica.asyncbatch.batch import CONCURRENT_SECTION
from pytest_reuse_env.replica.asyncbatch.eligible import is_async_item
from tests.helpers import run_in_process

pytest.importorskip("pytest_asyncio")

CONFTEST = """
import math
import os

import pytest

from pytest_reuse_env.replica.asyncbatch.batch import run_concurrently
from pytest_reuse_env.replica.asyncbatch.eligible import is_async_item


def event(text):
    with open(os.environ["EVENTS"], "a") as events:
        events.write(text + "\\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    if "LIMIT" not in os.environ or session.config.option.collectonly:
        return None
    items = [item for item in session.items if is_async_item(item)]
    assert len(items) == len(session.items), "only async tests in these files"
    size = max(1, math.ceil(len(items) / int(os.environ.get("BATCHES", "1"))))
    for start in range(0, len(items), size):
        run_concurrently(
            session,
            items[start : start + size],
            limit=int(os.environ["LIMIT"]),
            timeout=float(os.environ.get("TEST_TIMEOUT", "10")),
        )
    return True
"""

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def events(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "events.txt"
    path.touch()
    monkeypatch.setenv("EVENTS", str(path))
    monkeypatch.delenv("LIMIT", raising=False)
    monkeypatch.setenv("TEST_TIMEOUT", "10")
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI.format(mode="auto"))
    return path


def run_with_limit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, limit: int | None, *args: str
) -> pytest.RunResult:
    if limit is None:
        monkeypatch.delenv("LIMIT", raising=False)
    else:
        monkeypatch.setenv("LIMIT", str(limit))
    return run_in_process(pytester, *args, plugins=("-p", "no:cacheprovider", "-p", "no:randomly"))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def reports(result: pytest.RunResult) -> dict[tuple[str, str], pytest.TestReport]:
    found: dict[tuple[str, str], pytest.TestReport] = {}
    for report in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        assert (report.nodeid, report.when) not in found, "one report per phase"
        found[(report.nodeid, report.when)] = report
    return found


BARRIER = """
import asyncio
import pytest

barrier = asyncio.Barrier({parties})

@pytest.mark.parametrize("n", range({tests}))
async def test_meet(n):
    await barrier.wait()
"""


def test_barrier_of_n_completes_under_limit_n(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(BARRIER.format(parties=4, tests=4))
    monkeypatch.setenv("TEST_TIMEOUT", "5")
    started = time.monotonic()
    run_with_limit(pytester, monkeypatch, 4).assert_outcomes(passed=4)
    assert time.monotonic() - started < 4


def test_barrier_of_n_plus_one_times_out_under_limit_n(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(BARRIER.format(parties=5, tests=5))
    monkeypatch.setenv("TEST_TIMEOUT", "0.3")
    result = run_with_limit(pytester, monkeypatch, 4)
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines(["*ConcurrentTestTimeout: the test ran past its timeout of 0.3 s*"])


SESSION_FIXTURES = """
import asyncio

import pytest_asyncio


@pytest.fixture(scope="session")
def session_sync():
    event("setup session_sync")
    yield "s"
    event("teardown session_sync")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_async():
    await asyncio.sleep(0.01)
    event("setup session_async")
    yield "sa"
    event("teardown session_async")


"""

SCOPED = """
import asyncio
import os

import pytest
import pytest_asyncio

from conftest import event


@pytest.fixture(scope="module")
def module_sync(session_sync):
    event("setup module_sync " + __name__)
    return "m"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_async():
    await asyncio.sleep(0.01)
    event("setup module_async " + __name__)
    return "ma"


@pytest.fixture
def outer(request):
    event("setup outer " + request.node.name)
    yield request.node.name
    event("teardown outer " + request.node.name)


@pytest.fixture
async def inner(outer, request):
    await asyncio.sleep(0.01)
    event("setup inner " + request.node.name)
    request.addfinalizer(lambda: event("finalizer inner " + request.node.name))
    yield outer + "!"
    await asyncio.sleep(0.01)
    event("teardown inner " + request.node.name)


@pytest.mark.parametrize("n", range(4))
async def test_uses_everything(n, session_sync, session_async, module_sync, module_async, inner):
    await asyncio.sleep(0.05)
    assert (session_sync, session_async, module_sync, module_async) == ("s", "sa", "m", "ma")
    assert inner == f"test_uses_everything[{n}]!"
"""


def test_scoped_fixtures_once_function_fixtures_per_test_in_order(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST + SESSION_FIXTURES)
    pytester.makepyfile(test_one=SCOPED, test_two=SCOPED)
    run_with_limit(pytester, monkeypatch, 8).assert_outcomes(passed=8)
    log = lines(events)
    for once in ("setup session_sync", "setup session_async", "teardown session_sync"):
        assert log.count(once) == 1, log
    for module in ("test_one", "test_two"):
        assert log.count(f"setup module_sync {module}") == 1, log
        assert log.count(f"setup module_async {module}") == 1, log
    for n in range(4):
        name = f"test_uses_everything[{n}]"
        own = [line.rsplit(" ", 1)[0] for line in log if line.endswith(" " + name)]
        assert own == 2 * [
            "setup outer",
            "setup inner",
            "teardown inner",
            "finalizer inner",
            "teardown outer",
        ], own
    # The four tests of a module overlapped: all set up before the first teardown.
    first_teardown = log.index("teardown inner test_uses_everything[0]")
    assert sum(line.startswith("setup inner") for line in log[:first_teardown]) == 4


def test_second_batch_reuses_session_fixtures(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST + SESSION_FIXTURES)
    pytester.makepyfile(test_one=SCOPED)
    monkeypatch.setenv("BATCHES", "2")
    run_with_limit(pytester, monkeypatch, 2).assert_outcomes(passed=4)
    log = lines(events)
    assert log.count("setup session_async") == 1, log
    assert log.count("setup module_sync test_one") == 1, log
    assert log.count("teardown session_async") == 1, log


ISOLATION = """
import asyncio
import logging

import pytest

turn = {"A": asyncio.Event(), "B": asyncio.Event()}


async def wait_for(name):
    await asyncio.wait_for(turn[name].wait(), 5)


@pytest.fixture
def mark(tmp_path, request):
    (tmp_path / request.node.name).write_text("mine")
    return tmp_path


async def test_a(mark, capsys, caplog):
    print("A1")
    logging.getLogger("t").warning("log A")
    turn["B"].set()
    await wait_for("A")
    print("A2")
    assert [path.name for path in mark.iterdir()] == ["test_a"]
    assert capsys.readouterr().out == "A1\\nA2\\n"
    assert [record.getMessage() for record in caplog.records] == ["log A"]


async def test_b(mark, capsys, caplog):
    await wait_for("B")
    print("B1")
    logging.getLogger("t").warning("log B")
    turn["A"].set()
    assert [path.name for path in mark.iterdir()] == ["test_b"]
    assert capsys.readouterr().out == "B1\\n"
    assert [record.getMessage() for record in caplog.records] == ["log B"]


async def test_c_prints():
    print("C1")
    turn["C"] = asyncio.Event()
    await asyncio.sleep(0.05)
    import sys
    print("C2 err", file=sys.stderr)
    assert False


async def test_d_prints():
    print("D1")
    await asyncio.sleep(0.02)
    print("D2")
    logging.getLogger("t").warning("log D")
    assert False
"""


def test_tmp_path_capsys_caplog_and_output_are_per_test(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_iso=ISOLATION)
    result = run_with_limit(pytester, monkeypatch, 4)
    result.assert_outcomes(passed=2, failed=2)
    found = reports(result)
    call_c = found[("test_iso.py::test_c_prints", "call")]
    call_d = found[("test_iso.py::test_d_prints", "call")]
    assert (call_c.capstdout, call_c.capstderr) == ("C1\n", "C2 err\n")
    assert (call_d.capstdout, call_d.capstderr) == ("D1\nD2\n", "")
    assert "log D" in call_d.caplog
    assert "log" not in call_c.caplog
    result.stdout.fnmatch_lines(["*Captured stdout call*", "C1", "*Captured stderr call*"])


OUTCOMES = """
import asyncio

import pytest

@pytest.fixture
async def broken_setup():
    await asyncio.sleep(0)
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

@pytest.fixture(scope="module")
def broken_module():
    raise RuntimeError("module broke")

@pytest.fixture
def skips():
    pytest.skip("from a fixture")

async def test_pass():
    await asyncio.sleep(0.01)

async def test_fail():
    assert 1 == 2

@pytest.mark.skip(reason="marked")
async def test_skip_mark():
    pass

@pytest.mark.skipif(True, reason="condition")
async def test_skipif():
    pass

async def test_skip_call():
    pytest.skip("inside")

async def test_skip_fixture(skips):
    pass

@pytest.mark.xfail(reason="expected")
async def test_xfail():
    assert 0

@pytest.mark.xfail(reason="unexpectedly fine")
async def test_xpass():
    pass

@pytest.mark.xfail(strict=True)
async def test_xpass_strict():
    pass

@pytest.mark.xfail(run=False)
async def test_xfail_notrun():
    pass

async def test_xfail_call():
    pytest.xfail("imperative")

async def test_setup_error(broken_setup):
    pass

async def test_teardown_error(broken_teardown):
    pass

async def test_fail_and_teardown_error(broken_teardown):
    assert False

async def test_module_error(broken_module):
    pass

@pytest.fixture(scope="class")
def shared():
    return []

class TestGrouped:
    async def test_one(self, shared):
        shared.append(1)

    async def test_two(self, shared):
        await asyncio.sleep(0.01)
        assert shared == [1]
"""


def outcomes(result: pytest.RunResult) -> dict[tuple[str, str], tuple[str, bool]]:
    return {
        key: (report.outcome, hasattr(report, "wasxfail"))
        for key, report in reports(result).items()
    }


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_outcomes_match_plain_pytest_asyncio(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    pytester.makeini(INI.format(mode=mode))
    source = OUTCOMES
    if mode == "strict":
        source = (
            "import pytest\nimport pytest_asyncio\npytestmark = pytest.mark.asyncio\n"
            + source.replace("@pytest.fixture\nasync", "@pytest_asyncio.fixture\nasync")
        )
    pytester.makepyfile(test_outcomes=source)
    plain = outcomes(run_with_limit(pytester, monkeypatch, None))
    concurrent = outcomes(run_with_limit(pytester, monkeypatch, 6))
    assert len({nodeid for nodeid, _ in plain}) == 17
    assert concurrent == plain


TIMEOUT = """
import asyncio

import pytest

from conftest import event

@pytest.fixture
def tracked(request):
    yield
    event("teardown " + request.node.name)

async def test_slow(tracked):
    await asyncio.sleep(30)

async def test_fast(tracked):
    await asyncio.sleep(0.2)

@pytest.mark.timeout(0.2)
async def test_marked(tracked):
    await asyncio.sleep(30)
"""


def test_timeout_cancels_only_the_slow_test(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_timeout=TIMEOUT)
    monkeypatch.setenv("TEST_TIMEOUT", "1")
    started = time.monotonic()
    result = run_with_limit(pytester, monkeypatch, 3)
    assert time.monotonic() - started < 5
    found = reports(result)
    assert found[("test_timeout.py::test_fast", "call")].passed
    for name, seconds in (("test_slow", "1"), ("test_marked", "0.2")):
        call = found[(f"test_timeout.py::{name}", "call")]
        assert call.failed
        assert f"timeout of {seconds} s" in call.longreprtext
        assert "await asyncio.sleep(30)" in call.longreprtext  # where it was stuck
    assert sorted(lines(events)) == [
        "teardown test_fast",
        "teardown test_marked",
        "teardown test_slow",
    ]


ANYIO = """
import anyio
import pytest

from conftest import event

pytestmark = pytest.mark.anyio
ready = {}

@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"

@pytest.fixture(scope="module")
async def module_value():
    event("setup module_value")
    return 42

@pytest.fixture
async def per_test(module_value):
    await anyio.sleep(0)
    yield module_value + 1
    event("teardown per_test")

async def test_first(per_test):
    ready.setdefault("first", anyio.Event()).set()
    with anyio.fail_after(5):
        await ready.setdefault("second", anyio.Event()).wait()
    assert per_test == 43

async def test_second(per_test):
    ready.setdefault("second", anyio.Event()).set()
    with anyio.fail_after(5):
        await ready.setdefault("first", anyio.Event()).wait()
    assert per_test == 43
"""


def test_anyio_tests_run_concurrently(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("anyio")
    pytester.makeini(INI.format(mode="strict"))
    pytester.makepyfile(test_anyio=ANYIO)
    run_with_limit(pytester, monkeypatch, 2).assert_outcomes(passed=2)
    assert sorted(lines(events)) == ["setup module_value", *2 * ["teardown per_test"]]


OVERLAP = """
import asyncio

async def test_a():
    await asyncio.sleep(0.2)

async def test_b():
    await asyncio.sleep(0.2)

async def test_failing():
    await asyncio.sleep(0.05)
    assert False

async def test_later():
    pass
"""


def test_failing_report_names_the_tests_it_ran_with(
    pytester: pytest.Pytester, events: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_overlap=OVERLAP)
    result = run_with_limit(pytester, monkeypatch, 3)
    result.assert_outcomes(passed=3, failed=1)
    sections = dict(reports(result)[("test_overlap.py::test_failing", "call")].sections)
    assert sections[CONCURRENT_SECTION] == "test_overlap.py::test_a, test_overlap.py::test_b"
    result.stdout.fnmatch_lines(
        [f"*{CONCURRENT_SECTION}*", "test_overlap.py::test_a, test_overlap.py::test_b"]
    )


def test_only_async_tests_without_fd_capture_are_eligible(
    pytester: pytest.Pytester, events: Path
) -> None:
    path = pytester.makepyfile(
        """
        async def test_async(): pass
        async def test_capfd(capfd): pass
        def test_sync(): pass
        """
    )
    # In process: syrupy (in the test extra) cannot finish pytester's bare session.
    module = pytester.getmodulecol(path, configargs=("-p", "no:syrupy"))
    items = pytester.genitems([module])
    eligible = {item.name: is_async_item(item) for item in items}
    assert eligible == {"test_async": True, "test_capfd": False, "test_sync": False}
