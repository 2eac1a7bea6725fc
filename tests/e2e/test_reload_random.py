"""Proof of "never stale": random edit sequences, each followed by a warm run and a plain run.

A small project: a conftest that imports code under test (``app/index.py``) at its top, its
session fixtures built from that module, tests that depend on ``app/core.py``,
constants in test modules and in the conftest. A driver with a fixed seed edits it at random
(constants in test modules, in the code under test, in the fixture's module and in the
conftest, read by a function or a session fixture; an autouse conftest fixture added, changed and
removed; tests and test files added and removed; syntax errors and their fixes; a data file the
session fixture reads), and after
every edit runs pytest with warm replicas and with ``--reuse=off``: per-test outcomes and failure
messages must be identical every time. 30 steps here; ``-m slow`` runs a longer sequence.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_reload import plain_run, summary, warm_run, write
from tests.helpers import replicas_stopped

INI = """
[pytest]
reuse_all = default
reuse_replicas = 1
pythonpath = .
"""

#: It imports the fixture's module at its top, as most real suites do (not app/core.py: the
#: driver breaks that one with syntax errors, and a conftest that cannot load stops pytest).
CONFTEST = """
import pytest

from app import index as index_module

MARK = 1
BASE = 0


@pytest.fixture(scope="session")
def index():
    return index_module.build()


@pytest.fixture(scope="session")
def base():
    return BASE + index_module.SIZE % 2


@pytest.fixture
def mark(base):
    return MARK + base
"""

GUARD = """
# guard
@pytest.fixture(autouse=True)
def guard(index):
    assert index["size"] != {size}, "guarded"
"""

CORE = "VALUE = 2\n\n\ndef value():\n    return VALUE\n"
#: The session fixture's build reads a data file too (replica/datareads.py).
INDEX = (
    "from pathlib import Path\n\nSIZE = 10\n\n\ndef build():\n"
    "    extra = (Path(__file__).parent.parent / 'data' / 'extra.txt').read_text()\n"
    "    return {'size': SIZE + int(extra)}\n"
)

TEST_CORE = """
from app.core import VALUE, value

EXPECT = 2


def test_value():
    assert value() == EXPECT


def test_even():
    assert VALUE % 2 == 0, f"odd: {VALUE}"


def test_mark(mark):
    assert mark < 3
"""

TEST_INDEX = """
EXPECT = 10


def test_size(index):
    assert index["size"] == EXPECT
"""


class Project:
    """The project on disk and the random edits the driver makes to it."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.extra_tests = 0
        self.extra_files: list[Path] = []
        self.broken: list[tuple[Path, str]] = []
        self.edits: list[Callable[[], str]] = [
            self.constant_in_test,
            self.constant_in_test,
            self.constant_in_code,
            self.constant_in_code,
            self.constant_in_fixture_module,
            self.constant_in_conftest,
            self.session_constant_in_conftest,
            self.add_remove_or_change_guard,
            self.add_or_remove_test,
            self.add_or_remove_file,
            self.break_or_fix,
            self.data_file,
        ]

    def create(self) -> None:
        write(self.root / "pytest.ini", INI)
        write(self.root / "conftest.py", CONFTEST)
        write(self.root / "app" / "__init__.py", "")
        write(self.root / "app" / "core.py", CORE)
        write(self.root / "app" / "index.py", INDEX)
        write(self.root / "data" / "extra.txt", "0")
        write(self.root / "tests" / "test_core.py", TEST_CORE)
        write(self.root / "tests" / "test_index.py", TEST_INDEX)

    def step(self) -> str:
        return self.rng.choice(self.edits)()

    def _set(self, path: Path, name: str, value: int) -> str:
        lines = path.read_text().split("\n")
        lines = [f"{name} = {value}" if line.startswith(f"{name} = ") else line for line in lines]
        path.write_text("\n".join(lines))
        return f"{path.relative_to(self.root)}: {name} = {value}"

    def data_file(self) -> str:
        path = self.root / "data" / "extra.txt"
        value = (int(path.read_text()) + self.rng.choice([1, 2])) % 3  # always a change
        path.write_text(str(value))
        return f"data/extra.txt: {value}"

    def constant_in_test(self) -> str:
        path = self.root / "tests" / self.rng.choice(["test_core.py", "test_index.py"])
        return self._set(path, "EXPECT", self.rng.choice([2, 3, 10, 11]))

    def constant_in_code(self) -> str:
        return self._set(self.root / "app" / "core.py", "VALUE", self.rng.randint(1, 4))

    def constant_in_fixture_module(self) -> str:
        return self._set(self.root / "app" / "index.py", "SIZE", self.rng.choice([10, 11]))

    def constant_in_conftest(self) -> str:
        return self._set(self.root / "conftest.py", "MARK", self.rng.randint(1, 4))

    def session_constant_in_conftest(self) -> str:
        return self._set(self.root / "conftest.py", "BASE", self.rng.randint(0, 1))

    def add_remove_or_change_guard(self) -> str:
        """An autouse fixture in the conftest: added, removed (both change which fixtures
        every test uses) or its constant changed."""
        path = self.root / "conftest.py"
        text = path.read_text()
        marker = "\n# guard\n"
        if marker in text and self.rng.random() < 0.5:
            path.write_text(text[: text.index(marker)])
            return "removed the guard fixture"
        size = self.rng.choice([10, 11, 12])
        text = text[: text.index(marker)] if marker in text else text
        path.write_text(text + GUARD.format(size=size))
        return f"guard fixture against size {size}"

    def add_or_remove_test(self) -> str:
        path = self.root / "tests" / "test_core.py"
        text = path.read_text()
        marker = "\n\n# added\n"
        if marker in text and self.rng.random() < 0.5:
            path.write_text(text[: text.index(marker)])
            return "removed the added tests"
        self.extra_tests += 1
        number = self.extra_tests
        path.write_text(
            text
            + (marker if marker not in text else "")
            + f"\n\ndef test_added_{number}():\n    assert VALUE != {number % 4}\n"
        )
        return f"added test_added_{number}"

    def add_or_remove_file(self) -> str:
        if self.extra_files and self.rng.random() < 0.5:
            path = self.extra_files.pop(self.rng.randrange(len(self.extra_files)))
            path.unlink()
            return f"deleted {path.name}"
        path = (
            self.root / "tests" / f"test_extra_{len(self.extra_files)}_{self.rng.randint(0, 99)}.py"
        )
        if path.exists():
            return "no edit"
        threshold = self.rng.randint(1, 4)
        write(
            path,
            f"from app.core import value\n\n\ndef test_extra(index):\n"
            f"    assert value() < {threshold} and index['size'] == 10\n",
        )
        self.extra_files.append(path)
        return f"new file {path.name}"

    def break_or_fix(self) -> str:
        if self.broken:
            path, text = self.broken.pop()
            path.write_text(text)
            return f"fixed {path.name}"
        path = self.rng.choice(
            [self.root / "tests" / "test_core.py", self.root / "app" / "core.py"]
        )
        text = path.read_text()
        self.broken.append((path, text))
        path.write_text(text + "\ndef broken(:\n")
        return f"syntax error in {path.name}"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    with replicas_stopped(pytester):
        yield pytester.path


def drive(pytester: pytest.Pytester, seed: int, steps: int) -> None:
    project = Project(pytester.path, random.Random(seed))
    project.create()
    history: list[str] = ["initial"]
    warm_steps = 0
    for number in range(steps + 1):
        if number:
            history.append(project.step())
        result, env = warm_run(pytester)
        plain = plain_run(pytester)
        where = f"seed {seed}, after: {' / '.join(history)}"
        assert summary(result) == summary(plain), (
            where + "\n" + result.stdout.str() + "\n" + plain.stdout.str()
        )
        assert result.ret == plain.ret, where
        warm_steps += env["replicas_started"] == 0
    # The point of it all: most edits did not cost a fresh replica.
    assert warm_steps >= steps // 2, (warm_steps, history)


@pytest.mark.timeout(900)
def test_random_edits_never_give_a_stale_result(pytester: pytest.Pytester, project: Path) -> None:
    drive(pytester, seed=13, steps=30)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_longer_random_edit_sequences(pytester: pytest.Pytester, project: Path, seed: int) -> None:
    drive(pytester, seed=seed, steps=100)
