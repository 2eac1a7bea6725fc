"""End to end: plugins with per-run session state, ordering plugins, doctests and the output
people and tools read, each compared with ``--reuse=off`` (the compatibility matrix's rows for
syrupy, pytest-benchmark, pytest-order, pytest-dependency, ``-x``/``--maxfail``, ``--sw``,
``--setup-show``, doctests, junitxml records, progress output and the last line).

Every test routes all tests through reuse (``--reuse-all=default``); cold rows use
``reuse_scope=run``, warm rows the default global scope and end with ``--reuse-stop``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import run_compat

REUSE = ("--reuse-all=default", "-p", "no:cacheprovider")
COLD = (*REUSE, "-o", "reuse_scope=run")
OFF = ("--reuse=off", "-p", "no:cacheprovider")
#: A replayed "-v" result line: "[r0 warm] [ 50%] PASSED nodeid" (not the short summary's).
RESULT = re.compile(r"^\[[^\]]*\] \[ *\d+%\] (PASSED|FAILED|SKIPPED|ERROR) (\S+)")
#: Or plain pytest's "-v" form: "nodeid PASSED [ 50%]".
PLAIN_RESULT = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)")


def outcomes(result: pytest.RunResult) -> list[tuple[str, str]]:
    """``(nodeid, outcome)`` of every ``-v`` result line, in the order they were printed."""
    found = []
    for line in result.outlines:
        labelled = RESULT.match(line)
        if labelled:
            found.append((labelled.group(2), labelled.group(1)))
            continue
        plain = PLAIN_RESULT.match(line)
        if plain:
            found.append((plain.group(1), plain.group(2)))
    return found


@pytest.fixture
def stop_warm(pytester: pytest.Pytester) -> object:
    """Warm rows leave replicas for the next run: end them when the test ends."""
    yield None
    run_compat(pytester, "--reuse-stop")


# -- syrupy --------------------------------------------------------------------------------------

SNAPSHOT_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(4))
def test_number(snapshot, i):
    assert {"i": i} == snapshot

def test_word(snapshot):
    assert "hello" == snapshot
"""


def snapshot_files(pytester: pytest.Pytester) -> dict[str, str]:
    folder = pytester.path / "__snapshots__"
    return {p.name: p.read_text() for p in sorted(folder.glob("*.ambr"))}


def test_syrupy_unused_detection_and_update_as_plain(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_snap=SNAPSHOT_TESTS)
    pytester.makepyfile(test_other="def test_list(snapshot):\n    assert [1, 2] == snapshot\n")
    # --snapshot-update writes what plain writes (run scope: the replicas' runs end with it).
    run_compat(pytester, *COLD, "--snapshot-update").assert_outcomes(passed=6)
    written = snapshot_files(pytester)
    for path in (pytester.path / "__snapshots__").iterdir():
        path.unlink()
    run_compat(pytester, *OFF, "--snapshot-update").assert_outcomes(passed=6)
    assert snapshot_files(pytester) == written
    # All used: a passing run exits 0.
    result = run_compat(pytester, *COLD)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["6 snapshots passed."])
    # A test removed: its snapshot is unused, exit 1, as plain.
    pytester.makepyfile(test_snap=SNAPSHOT_TESTS.split("def test_word")[0])
    for args in (OFF, COLD):
        result = run_compat(pytester, *args)
        assert result.ret == 1, (args, result.stdout.str())
        result.stdout.fnmatch_lines(["5 snapshots passed. 1 snapshot unused."])
    # --snapshot-update deletes exactly that snapshot.
    result = run_compat(pytester, *COLD, "--snapshot-update")
    result.stdout.fnmatch_lines(["*1 unused snapshot deleted.*"])
    assert "test_word" not in snapshot_files(pytester)["test_snap.ambr"]
    assert "test_number[3]" in snapshot_files(pytester)["test_snap.ambr"]
    assert run_compat(pytester, *COLD).ret == 0


def test_syrupy_warm_replica_reads_changed_snapshots(
    pytester: pytest.Pytester, stop_warm: object
) -> None:
    pytester.makepyfile(test_snap=SNAPSHOT_TESTS)
    run_compat(pytester, *OFF, "--snapshot-update").assert_outcomes(passed=5)
    for _ in range(2):  # cold, then warm
        result = run_compat(pytester, *REUSE)
        assert result.ret == 0, result.stdout.str()
    path = pytester.path / "__snapshots__" / "test_snap.ambr"
    path.write_text(path.read_text().replace("'hello'", "'changed'"))
    result = run_compat(pytester, *REUSE, "--reuse-report=warm.json")
    result.assert_outcomes(passed=4, failed=1)
    report = json.loads((pytester.path / "warm.json").read_text())
    assert report["environments"][0]["replicas_attached"] >= 1, report
    # --snapshot-update in reuse rewrites it, as plain does.
    run_compat(pytester, *REUSE, "--snapshot-update").assert_outcomes(passed=5)
    assert "'hello'" in path.read_text()
    assert run_compat(pytester, *REUSE).ret == 0


# -- pytest-benchmark ----------------------------------------------------------------------------


def test_benchmark_one_table_one_json(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bench="""
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_sum(benchmark, n):
            benchmark(sum, range(10 * n))

        @pytest.mark.parametrize("n", range(4))
        def test_plain(n):
            pass
        """
    )
    fast = ("--benchmark-min-rounds=1", "--benchmark-max-time=0.0001")
    names = {}
    for label, args in (("off", OFF), ("reuse", COLD)):
        result = run_compat(pytester, *args, *fast, f"--benchmark-json={label}.json")
        result.assert_outcomes(passed=7)
        assert result.stdout.str().count("benchmark: 3 tests") == 1, result.stdout.str()
        data = json.loads((pytester.path / f"{label}.json").read_text())
        names[label] = sorted(b["fullname"] for b in data["benchmarks"])
    assert names["reuse"] == names["off"]
    assert len(names["reuse"]) == 3
    result.stdout.fnmatch_lines(["*note: 3 tests ran in this process*benchmark*"])


# -- pytest-order, pytest-dependency, -x, --maxfail, --sw ----------------------------------------


def test_order_and_dependency_as_plain(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a="""
        import pytest

        @pytest.mark.order(3)
        def test_third(): pass

        @pytest.mark.order(1)
        def test_first(): pass

        @pytest.mark.dependency()
        def test_base(): pass

        @pytest.mark.dependency(depends=["test_a.py::test_base"], scope="session")
        def test_needs_base(): pass

        @pytest.mark.dependency()
        def test_broken(): assert False

        @pytest.mark.dependency(depends=["test_a.py::test_broken"], scope="session")
        def test_needs_broken(): pass
        """,
        test_b="""
        import pytest

        @pytest.mark.order(2)
        def test_second(): pass

        @pytest.mark.parametrize("i", range(4))
        def test_other(i): pass
        """,
    )
    # Two replicas started together: order and dependencies must not depend on who is faster.
    two = ("-o", "reuse_replicas=2", "-v")
    plain = outcomes(run_compat(pytester, *OFF, "-v"))
    result = run_compat(pytester, *COLD, *two)
    assert outcomes(result) == plain
    assert plain[:3] == [
        ("test_a.py::test_first", "PASSED"),
        ("test_b.py::test_second", "PASSED"),
        ("test_a.py::test_third", "PASSED"),
    ]
    assert ("test_a.py::test_needs_broken", "SKIPPED") in plain
    result.stdout.fnmatch_lines(["*note: pytest-order markers: tests ran one at a time*"])


MAXFAIL_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(12))
def test_x(i):
    assert i not in (3, 6, 9)
"""


@pytest.mark.parametrize("stop", [("-x",), ("--maxfail=2",)], ids=["x", "maxfail2"])
def test_exitfirst_and_maxfail_stop_where_plain_stops(
    pytester: pytest.Pytester, stop: tuple[str, ...], stop_warm: object
) -> None:
    pytester.makepyfile(test_m=MAXFAIL_TESTS)
    plain = outcomes(run_compat(pytester, *OFF, "-v", *stop))
    assert len(plain) == (4 if stop == ("-x",) else 7)
    for _ in range(2):  # cold (starting replicas), then warm
        assert outcomes(run_compat(pytester, *REUSE, "-v", *stop)) == plain


def test_a_run_that_stops_at_a_failure_starts_one_replica(pytester: pytest.Pytester) -> None:
    # -x runs one test at a time on one replica: starting the policy's second early is waste.
    pytester.makepyfile(test_m=MAXFAIL_TESTS)
    result = run_compat(pytester, *COLD, "-o", "reuse_replicas=2", "-x", "--reuse-report=r.json")
    result.assert_outcomes(passed=3, failed=1)
    (environment,) = json.loads((pytester.path / "r.json").read_text())["environments"]
    assert environment["replicas_started"] == 1
    assert (environment["tests_cold"], environment["tests_warm"]) == (1, 3), "one replica, warm"


def test_stepwise_never_deselects_a_failing_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m=MAXFAIL_TESTS)
    runs = {}
    for label, args in (("off", ("--reuse=off",)), ("reuse", ("--reuse-all=default",))):
        if (pytester.path / ".pytest_cache").exists():
            import shutil

            shutil.rmtree(pytester.path / ".pytest_cache")
        runs[label] = [
            outcomes(run_compat(pytester, *args, "-o", "reuse_scope=run", "--sw", "-v"))
            for _ in range(3)
        ]
    assert runs["reuse"] == runs["off"]
    assert runs["off"][2] == [("test_m.py::test_x[3]", "FAILED")]


def test_setup_show_lines_as_plain(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_s="""
        import pytest

        @pytest.fixture(scope="module")
        def shared():
            yield 1

        @pytest.fixture
        def own(shared):
            yield 2

        def test_one(own): pass
        def test_two(own): pass
        """
    )

    def fixture_lines(result: pytest.RunResult) -> list[str]:
        return [
            line.strip() for line in result.outlines if re.search(r"SETUP|TEARDOWN|::test_", line)
        ]

    plain = fixture_lines(run_compat(pytester, *OFF, "--setup-show", "-p", "no:syrupy"))
    assert "SETUP    M shared" in plain
    reuse = fixture_lines(run_compat(pytester, *COLD, "--setup-show", "-p", "no:syrupy"))
    assert reuse == plain


# -- doctests ------------------------------------------------------------------------------------


def test_doctests_pass_warm_without_leak_warning(
    pytester: pytest.Pytester, stop_warm: object
) -> None:
    pytester.makepyfile(
        mod='''
        def double(x):
            """
            >>> double(2)
            4
            """
            return 2 * x
        ''',
        test_m="def test_m():\n    pass\n",
    )
    for _ in range(3):  # cold, warm, warm
        result = run_compat(pytester, *REUSE, "--doctest-modules")
        result.assert_outcomes(passed=2)
        assert "left state behind" not in result.stdout.str()


# -- output for people and tools -----------------------------------------------------------------


def test_last_line_is_pytests_and_results_sit_under_their_file(
    pytester: pytest.Pytester, stop_warm: object
) -> None:
    for name in ("a", "b", "c"):
        pytester.makepyfile(
            **{
                f"test_{name}": f"""
                import pytest

                @pytest.mark.parametrize("i", range(5))
                def test_{name}(i):
                    pass
                """
            }
        )
    for _ in range(2):
        result = run_compat(pytester, *REUSE, "-o", "reuse_replicas=2")
        result.assert_outcomes(passed=15)
        assert re.search(r"=+ 15 passed in [\d.]+s", result.outlines[-1]), result.outlines[-1]
        result.stdout.fnmatch_lines(["*replicas stay warm for the next run*"])
        per_file: dict[str, int] = {}
        for line in result.outlines:
            progress = re.match(r"^(test_\w)\.py (\.+)", line)
            if progress:
                per_file[progress.group(1)] = per_file.get(progress.group(1), 0) + len(
                    progress.group(2)
                )
        assert per_file == {"test_a": 5, "test_b": 5, "test_c": 5}, result.stdout.str()


def test_junitxml_suite_properties_and_attributes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\njunit_family = xunit1\n")
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.fixture(scope="session")
        def database(record_testsuite_property):
            record_testsuite_property("database", "sqlite")

        @pytest.mark.parametrize("i", range(3))
        def test_attr(record_xml_attribute, database, record_property, i):
            record_xml_attribute("owner", f"team{i}")
            record_property("k", i)
        """
    )

    def recorded(path: Path) -> tuple[list[tuple[str, str]], dict[str, str | None]]:
        suite = ET.parse(path).getroot().find("testsuite")
        assert suite is not None
        properties = [
            (p.get("name", ""), p.get("value", "")) for p in suite.findall("properties/property")
        ]
        owners = {c.get("name", ""): c.get("owner") for c in suite.iter("testcase")}
        return properties, owners

    run_compat(pytester, *OFF, "--junitxml=off.xml").assert_outcomes(passed=3)
    # Two replicas each set the session fixture up: the property is the run's, once.
    result = run_compat(pytester, *COLD, "--junitxml=on.xml", "-o", "reuse_replicas=2")
    result.assert_outcomes(passed=3)
    assert "ReuseEnvWarning" not in result.stdout.str()
    assert recorded(pytester.path / "on.xml") == recorded(pytester.path / "off.xml")
    assert recorded(pytester.path / "off.xml")[0] == [("database", "sqlite")]
