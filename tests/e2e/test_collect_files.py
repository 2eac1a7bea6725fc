"""End to end: a run-scoped replica collects only the test files that hold its environment's
tests (``controller/launch/collect.py``): the other files of the run are never imported in it,
whether it started while the run was still collecting (COLLECT) or after (START), and the
outcomes are those of plain pytest. Runs whose arguments name test ids collect those."""

from __future__ import annotations

import pytest

from tests.helpers import ONE_RUN_SCOPED_REPLICA_INI as INI
from tests.helpers import processes_under, run, wait_for

MARKED = """
import os
import pytest

pytestmark = pytest.mark.reuse


def test_one():
    assert os.environ.get("PYTEST_REUSE_REPLICA"), "ran in a replica"


@pytest.mark.parametrize("i", range(3))
def test_more(i):
    assert os.environ.get("PYTEST_REUSE_REPLICA"), "ran in a replica"
"""

#: A test file of the same run with no routed test: it says when a replica imports it.
OTHER = """
import os

if os.environ.get("PYTEST_REUSE_REPLICA"):
    open("imported-in-a-replica-{name}", "w").close()


def test_here():
    assert not os.environ.get("PYTEST_REUSE_REPLICA")
"""


def make_suite(pytester: pytest.Pytester, marked: str = MARKED) -> None:
    pytester.makeini(INI)
    # Routed tests in the middle: the replica starts while the rest is still collected.
    pytester.makepyfile(
        **{
            "tests/test_a_other.py": OTHER.format(name="a"),
            "tests/test_m_marked.py": marked,
            "tests/sub/test_z_other.py": OTHER.format(name="z"),
        }
    )


def imported_in_replicas(pytester: pytest.Pytester) -> list[str]:
    return sorted(p.name for p in pytester.path.glob("imported-in-a-replica-*"))


def test_a_replica_started_while_collecting_imports_only_its_test_files(
    pytester: pytest.Pytester,
) -> None:
    make_suite(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=6)
    assert imported_in_replicas(pytester) == [], result.stdout.str()
    assert wait_for(lambda: not processes_under(pytester.path))


def test_a_replica_started_after_collection_imports_only_its_test_files(
    pytester: pytest.Pytester,
) -> None:
    """The first replica dies in a test; its replacement starts once collection is done and
    is told its files in START."""
    crash_once = MARKED.replace(
        "def test_one():\n",
        "def test_one():\n"
        "    if not os.path.exists('crashed'):\n"
        "        open('crashed', 'w').close()\n"
        "        os._exit(3)\n",
    )
    make_suite(pytester, crash_once)
    result = run(pytester)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*test_one*crash*"])
    assert imported_in_replicas(pytester) == [], result.stdout.str()


def test_a_replica_whose_tests_were_all_deselected_collects_nothing(
    pytester: pytest.Pytester,
) -> None:
    """It started at the first routed test collected; ``-k`` then left none of them."""
    make_suite(pytester)
    result = run(pytester, "-k", "test_here")
    result.assert_outcomes(passed=2, deselected=4)
    assert result.ret == 0
    assert imported_in_replicas(pytester) == []
    assert wait_for(lambda: not processes_under(pytester.path))


def test_arguments_naming_test_ids_are_collected_as_given(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = run(
        pytester, "tests/test_m_marked.py::test_one", "tests/test_m_marked.py::test_more[1]"
    )
    result.assert_outcomes(passed=2)
    assert imported_in_replicas(pytester) == []


def test_a_conftest_beside_other_files_still_marks_the_routed_tests(
    pytester: pytest.Pytester,
) -> None:
    """In plain pytest a conftest.py is loaded as its directory is collected, and its
    session-wide hooks then apply to every item: here one beside an unrouted file skips a
    routed test that would fail. A replica that collects only the routed file loads it too."""
    pytester.makeini(INI)
    pytester.makepyfile(
        **{
            "tests/a/test_routed.py": """
                import pytest

                @pytest.mark.reuse
                def test_skipped_by_a_sibling_conftest():
                    assert False, "ran: the sibling conftest's marker was missing"

                @pytest.mark.reuse
                def test_runs():
                    pass
            """,
            "tests/b/conftest.py": """
                import pytest

                def pytest_collection_modifyitems(items):
                    for item in items:
                        if item.name == "test_skipped_by_a_sibling_conftest":
                            item.add_marker(pytest.mark.skip(reason="tests/b/conftest.py"))
            """,
            "tests/b/test_other.py": OTHER.format(name="b"),
        }
    )
    plain = run(pytester, "-p", "no:reuse_env", "-rs", plugins=())
    plain.assert_outcomes(passed=2, skipped=1)
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*tests/b/conftest.py*"])
    assert imported_in_replicas(pytester) == [], result.stdout.str()
