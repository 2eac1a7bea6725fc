"""End to end: a run-scoped replica collects only the test files that hold its environment's
tests (``controller/launch/collect.py``): the other files of the run are never imported in it,
whether it started while the run was still collecting (COLLECT) or after (START), and the
outcomes are those of plain pytest. Runs whose arguments name test ids collect those."""

from __future__ import annotations

import pytest

from tests.helpers import NOISE_OFF, processes_under, run, wait_for
from tests.helpers import ONE_RUN_SCOPED_REPLICA_INI as INI

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


# -- where collecting only some files would differ: the replica collects the whole run -------

#: Marks every other test of the run as skipped: which ones depends on every file collected.
SKIP_BY_POSITION = """
import pytest

def pytest_collection_modifyitems(items):
    for position, item in enumerate(items):
        if position % 2:
            item.add_marker(pytest.mark.skip(reason=f"position {position}"))
"""


def test_a_hook_that_marks_by_position_sees_the_same_run(pytester: pytest.Pytester) -> None:
    """Skipping every other test of the run: plain pytest skips test_c1 (position 3) and runs
    test_c2, which fails. A replica that collected only test_c_routed.py would skip test_c2
    (position 1 there) and pass test_c1: a false green run. Its first READY says the markers
    differ; a replica that collects every file replaces it, and the reuse section says why."""
    pytester.makeini(INI)
    pytester.makeconftest(SKIP_BY_POSITION)
    pytester.makepyfile(
        test_a_plain="def test_a1(): pass\ndef test_a2(): pass\ndef test_a3(): pass\n",
        test_c_routed=(
            "import pytest\n\npytestmark = pytest.mark.reuse\n\n"
            "def test_c1():\n    pass\n\n"
            "def test_c2():\n    assert 0, 'runs in plain pytest'\n"
        ),
    )
    plain = run(pytester, "-p", "no:reuse_env", "-rA", plugins=NOISE_OFF)
    plain.assert_outcomes(passed=2, skipped=2, failed=1)
    # Without pytester's --basetemp: the next run is the same command.
    result = run(pytester, "-rA", basetemp=False)
    result.assert_outcomes(passed=2, skipped=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*replicas collect every file of the run*test_c_routed.py::test_c* has other "
            "markers in the replica*",
            "*SKIPPED*test_c_routed.py: position 3*",
            "*FAILED test_c_routed.py::test_c2*",
        ]
    )
    # The command's next run knows: one replica, collecting every file from the start.
    again = run(pytester, "-rA", basetemp=False)
    again.assert_outcomes(passed=2, skipped=2, failed=1)
    again.stdout.fnmatch_lines(
        [
            "default (*): 1 replica started*",
            "*replicas collect every file of the run, as an earlier run of this command "
            "chose: one that collected only the files of its tests saw them otherwise*",
        ]
    )


def test_a_module_another_test_file_imported_first_is_the_same_module(
    pytester: pytest.Pytester,
) -> None:
    """Two helpers.py in sibling test directories (no __init__.py, pytest's default prepend
    import mode): the first test file collected imports its own, and the routed test in the
    other directory gets that one in plain pytest, and fails. A replica that collected only
    the routed file would import the other and pass: READY names the module, and a replica
    that collects every file runs the test as plain pytest does."""
    pytester.makeini(INI)
    pytester.makepyfile(
        **{
            "tests/a/helpers.py": "WHO = 'a'\n",
            "tests/b/helpers.py": "WHO = 'b'\n",
            "tests/a/test_a.py": "import helpers\n\ndef test_a():\n    assert helpers.WHO\n",
            "tests/b/test_b.py": (
                "import helpers\nimport pytest\n\n@pytest.mark.reuse\n"
                "def test_b():\n    assert helpers.WHO == 'b'\n"
            ),
        }
    )
    plain = run(pytester, "-p", "no:reuse_env", plugins=NOISE_OFF)
    plain.assert_outcomes(passed=1, failed=1)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*module helpers is tests/b/helpers.py in the*", "*FAILED tests/b/test_b.py::test_b*"]
    )


def test_a_test_whose_path_is_another_file_is_collected_through_its_file(
    pytester: pytest.Pytester,
) -> None:
    """A plugin's item names a data file as its path: the replica is sent the file its
    collector was made for, not the data file (which pytest could not collect)."""
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import pytest

        class DataItem(pytest.Item):
            def runtest(self):
                assert self.path.read_text() == "{}"

        class DataFile(pytest.File):
            def collect(self):
                yield DataItem.from_parent(
                    self, name="data_check", path=self.path.parent / "data.json"
                )

        def pytest_collect_file(file_path, parent):
            if file_path.suffix == ".cfg":
                return DataFile.from_parent(parent, path=file_path)

        def pytest_collection_modifyitems(items):
            for item in items:
                if isinstance(item, DataItem):
                    item.add_marker(pytest.mark.reuse)
        """
    )
    pytester.makefile(".cfg", specs="")
    pytester.makefile(".json", data="{}")
    pytester.makepyfile(test_plain="def test_plain(): pass\n")
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*PASSED specs.cfg::data_check*"])


def test_a_replica_that_cannot_start_with_its_files_is_replaced_by_one_with_every_file(
    pytester: pytest.Pytester,
) -> None:
    """A hook that needs the whole run fails the replica's start when it collects only some
    files: its tests are not failed for it; a replica that collects every file runs them."""
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        import pytest

        def pytest_collection_finish(session):
            if len(session.items) < 3:
                raise pytest.UsageError("this suite runs whole")
        """
    )
    pytester.makepyfile(
        test_a_plain="def test_a1(): pass\ndef test_a2(): pass\n",
        test_c_routed="import pytest\n\n@pytest.mark.reuse\ndef test_c():\n    pass\n",
    )
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*default: replicas collect every file of the run: one that collected only the "
            "files of its tests could not start*",
            "*PASSED test_c_routed.py::test_c*",
        ]
    )
