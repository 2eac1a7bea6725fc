"""The test suites the scenarios run, written fresh into a temporary directory.

Every expensive fixture reads its cost from ``BENCH_FIXTURE_SECONDS`` (so a "floor" contender can
run the same suite with the cost removed) and appends its process id to the file named by
``BENCH_SETUP_COUNTER``, one line per setup, so the harness can count setups per contender.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

FIXTURE_SECONDS_ENV = "BENCH_FIXTURE_SECONDS"
FIXTURE_MEGABYTES_ENV = "BENCH_FIXTURE_MEGABYTES"
SETUP_COUNTER_ENV = "BENCH_SETUP_COUNTER"

PYTEST_INI = """\
[pytest]
markers =
    reuse: run in a warm replica of pytest-reuse-env
    asyncio_cooperative: run concurrently under pytest-asyncio-cooperative
"""

EXPENSIVE_CONFTEST = f"""\
import os
import time

import pytest


@pytest.fixture(scope="session")
def expensive():
    time.sleep(float(os.environ.get("{FIXTURE_SECONDS_ENV}", "0")))
    # Touch the pages so they count as resident memory.
    ballast = b"x" * (int(os.environ.get("{FIXTURE_MEGABYTES_ENV}", "0")) * 1024 * 1024)
    counter = os.environ.get("{SETUP_COUNTER_ENV}")
    if counter:
        with open(counter, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
    return {{"value": 42, "ballast": ballast}}
"""


def quick_tests(count: int, *, sleep: float = 0.0) -> str:
    """A module of ``count`` parametrized tests marked ``reuse`` that use ``expensive``."""
    body = f"    time.sleep({sleep})\n" if sleep else ""
    return (
        "import time\n\nimport pytest\n\npytestmark = pytest.mark.reuse\n\n\n"
        f"@pytest.mark.parametrize('i', range({count}))\n"
        "def test_quick(expensive, i):\n"
        f"{body}"
        "    assert expensive['value'] + i >= 42\n"
    )


def trivial_tests(count: int) -> str:
    """A module of ``count`` tests marked ``reuse`` that use no fixture at all."""
    return (
        "import pytest\n\npytestmark = pytest.mark.reuse\n\n\n"
        f"@pytest.mark.parametrize('i', range({count}))\n"
        "def test_trivial(i):\n"
        "    pass\n"
    )


def async_tests(count: int, sleep: float) -> str:
    """``count`` async tests awaiting ``sleep`` seconds, runnable by every async contender."""
    # pytest-asyncio-cooperative looks only at a test's own markers, not the module's.
    return (
        "import asyncio\n\nimport pytest\n\npytestmark = pytest.mark.reuse\n\n\n"
        "@pytest.mark.asyncio_cooperative\n"
        f"@pytest.mark.parametrize('i', range({count}))\n"
        "async def test_wait(i):\n"
        f"    await asyncio.sleep({sleep})\n"
    )


def split(total: int, files: int) -> list[int]:
    """``total`` tests spread over ``files`` modules as evenly as possible."""
    return [total // files + (1 if n < total % files else 0) for n in range(files)]


def expensive_suite(tests: int, *, files: int = 4, sleep: float = 0.0) -> dict[str, str]:
    suite = {"pytest.ini": PYTEST_INI, "conftest.py": EXPENSIVE_CONFTEST}
    for n, count in enumerate(split(tests, files)):
        suite[f"test_quick_{n}.py"] = quick_tests(count, sleep=sleep)
    return suite


def trivial_suite(tests: int, *, files: int = 10) -> dict[str, str]:
    suite = {"pytest.ini": PYTEST_INI}
    for n, count in enumerate(split(tests, files)):
        suite[f"test_trivial_{n}.py"] = trivial_tests(count)
    return suite


def async_suite(tests: int, sleep: float) -> dict[str, str]:
    return {"pytest.ini": PYTEST_INI, "test_async.py": async_tests(tests, sleep)}


def write_suite(root: Path, files: Mapping[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


EDIT_LOOP_CONFTEST = f"""\
import os

import pytest

from app import index


@pytest.fixture(scope="session")
def expensive():
    built = index.build(float(os.environ.get("{FIXTURE_SECONDS_ENV}", "0")))
    counter = os.environ.get("{SETUP_COUNTER_ENV}")
    if counter:
        with open(counter, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
    return built
"""

EDIT_LOOP_INDEX = """\
import time


def build(seconds):
    time.sleep(seconds)
    return {"value": 42}
"""

EDIT_LOOP_CORE = """\
def add(a, b):
    return a + b
"""


def edit_loop_tests(count: int) -> str:
    """A module of ``count`` tests of ``app.core`` that use the session fixture."""
    return (
        "import pytest\n\nfrom app import core\n\npytestmark = pytest.mark.reuse\n\n\n"
        f"@pytest.mark.parametrize('i', range({count}))\n"
        "def test_add(expensive, i):\n"
        "    assert core.add(expensive['value'], i) == 42 + i\n"
    )


def edit_loop_suite(tests: int, *, files: int = 4) -> dict[str, str]:
    """The expensive suite with its code in a package: ``app/index.py`` builds the session
    fixture, ``app/core.py`` is the code under test; each can be edited between runs."""
    suite = {
        "pytest.ini": PYTEST_INI,
        "conftest.py": EDIT_LOOP_CONFTEST,
        "app/__init__.py": "",
        "app/index.py": EDIT_LOOP_INDEX,
        "app/core.py": EDIT_LOOP_CORE,
    }
    for n, count in enumerate(split(tests, files)):
        suite[f"test_core_{n}.py"] = edit_loop_tests(count)
    return suite


def one_test_suite() -> dict[str, str]:
    """A single unmarked test: what the plugin costs a run that routes nothing."""
    return {"pytest.ini": PYTEST_INI, "test_one.py": "def test_one():\n    pass\n"}


def append_edit(root: Path, name: str, serial: int) -> None:
    """A real edit of ``root/name`` that keeps its behaviour: a new line at its end (the mtime
    and the content change, as on a save)."""
    path = root / name
    with path.open("a") as f:
        f.write(f"# edit {serial}\n")


def watch_suite(tests: int, *, files: int = 4) -> dict[str, str]:
    """The edit-loop suite where each test module also imports a module of its own
    (``app/part<N>.py``): a save of a test module or of its part affects its tests only."""
    suite = edit_loop_suite(tests, files=files)
    for n, count in enumerate(split(tests, files)):
        suite[f"app/part{n}.py"] = "def offset():\n    return 0\n"
        suite[f"test_core_{n}.py"] = (
            "import pytest\n\nfrom app import core, "
            f"part{n}\n\npytestmark = pytest.mark.reuse\n\n\n"
            f"@pytest.mark.parametrize('i', range({count}))\n"
            "def test_add(expensive, i):\n"
            f"    assert core.add(expensive['value'], i + part{n}.offset()) == 42 + i\n"
        )
    return suite
