"""Fixtures of the example suite: a book catalog that is expensive to build.

The session fixture ``catalog`` builds a SQLite database of 300,000 books and 20,000 authors,
with indexes and an FTS5 full-text index, using only the standard library (about 2 s). Under
plain pytest the build happens once per run; under ``-p reuse_env`` it happens once per replica
process, and every ``reuse``-marked test after that queries the warm catalog.

Every build appends one line to a log whose path travels in ``EXAMPLES_SETUP_LOG`` (replica
processes inherit the controller's environment), and the terminal summary prints that log, so a
user can see how many times, and in which processes, the catalog was built.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SETUP_LOG_ENV = "EXAMPLES_SETUP_LOG"
SEED = 20241126
N_BOOKS = 300_000
N_AUTHORS = 20_000
GENRES = ("biography", "cooking", "fantasy", "history", "mystery", "poetry", "science", "travel")
COUNTRIES = ("BR", "CA", "DE", "FR", "IN", "JP", "KE", "NO")
FIRST_YEAR, LAST_YEAR = 1850, 2024
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ten",
    "vor",
    "sel",
    "da",
    "quin",
    "zu",
    "bel",
    "mar",
    "nor",
    "tis",
    "lu",
    "gre",
    "han",
    "os",
    "pel",
    "win",
)

_created_log = pytest.StashKey[Path]()


@dataclass(frozen=True)
class Catalog:
    """A built catalog: where it is, what it holds, and who built it."""

    path: Path
    books: int
    authors: int
    built_by_pid: int
    build_seconds: float

    def connect(self, *, readonly: bool = True) -> sqlite3.Connection:
        mode = "ro" if readonly else "rw"
        return sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True)


def build_catalog(path: Path, *, books: int = N_BOOKS, authors: int = N_AUTHORS) -> None:
    """Write a deterministic catalog database to ``path`` (the expensive part)."""
    rng = random.Random(SEED)
    vocabulary = sorted(
        {"".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(3000)}
    )
    con = sqlite3.connect(path)
    try:
        con.executescript("""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE authors (
                id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL);
            CREATE TABLE books (
                id INTEGER PRIMARY KEY, title TEXT NOT NULL,
                author_id INTEGER NOT NULL REFERENCES authors(id),
                genre TEXT NOT NULL, year INTEGER NOT NULL,
                pages INTEGER NOT NULL, rating REAL NOT NULL);
        """)
        con.executemany(
            "INSERT INTO authors VALUES (?, ?, ?)",
            (
                (
                    i,
                    f"{rng.choice(vocabulary).title()} {rng.choice(vocabulary).title()}",
                    rng.choice(COUNTRIES),
                )
                for i in range(1, authors + 1)
            ),
        )
        con.executemany(
            "INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 6))),
                    rng.randint(1, authors),
                    rng.choice(GENRES),
                    rng.randint(FIRST_YEAR, LAST_YEAR),
                    rng.randint(40, 1200),
                    round(rng.uniform(1.0, 5.0), 2),
                )
                for i in range(1, books + 1)
            ),
        )
        con.executescript("""
            CREATE INDEX books_author ON books(author_id);
            CREATE INDEX books_genre_year ON books(genre, year);
            CREATE VIRTUAL TABLE books_fts USING fts5(
                title, content='books', content_rowid='id');
            INSERT INTO books_fts(books_fts) VALUES ('rebuild');
            CREATE VIRTUAL TABLE title_words USING fts5vocab(books_fts, 'row');
            ANALYZE;
        """)
        con.commit()
    finally:
        con.close()


def pytest_configure(config: pytest.Config) -> None:
    # The first process to configure (the one the user started) picks the log; replica and
    # xdist worker processes inherit the variable and append to the same file.
    if SETUP_LOG_ENV not in os.environ:
        fd, name = tempfile.mkstemp(prefix="reuse-env-examples-", suffix=".log")
        os.close(fd)
        os.environ[SETUP_LOG_ENV] = name
        config.stash[_created_log] = Path(name)


def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_created_log, None)
    if log is not None:
        log.unlink(missing_ok=True)
        os.environ.pop(SETUP_LOG_ENV, None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    log = terminalreporter.config.stash.get(_created_log, None)
    if log is None or not log.exists():
        return
    lines = log.read_text().splitlines()
    pids = sorted({line.split()[1] for line in lines})
    if not lines and not any(terminalreporter.stats.get(k) for k in ("passed", "failed", "error")):
        return  # nothing ran (--collect-only, --reuse-stop, ...)
    terminalreporter.section("catalog builds")
    if not lines:
        terminalreporter.write_line(
            "catalog not built in this run: no catalog test ran, or all found a warm replica"
        )
        return
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"catalog built {len(lines)} time(s) in {len(pids)} process(es); "
        f"this pytest process is pid {os.getpid()}"
    )


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The full catalog, built once per process that runs catalog tests."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.sqlite3"
    print(f"building catalog in pid {os.getpid()}")
    started = time.perf_counter()
    build_catalog(path)
    built = Catalog(
        path=path,
        books=N_BOOKS,
        authors=N_AUTHORS,
        built_by_pid=os.getpid(),
        build_seconds=time.perf_counter() - started,
    )
    log = os.environ.get(SETUP_LOG_ENV)
    # A replica kept warm for later runs still carries the first run's log path: once that run
    # has removed its log, there is nobody to tell.
    if log and os.path.exists(log):
        with open(log, "a") as f:
            f.write(
                f"pid {built.built_by_pid} built {built.books} books in "
                f"{built.build_seconds:.2f} s at {time.strftime('%H:%M:%S')}\n"
            )
    return built


@pytest.fixture(scope="session")
def db(catalog: Catalog) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the catalog, shared by every test in the process."""
    con = catalog.connect()
    yield con
    con.close()


@pytest.fixture
def scratch(catalog: Catalog) -> Iterator[sqlite3.Connection]:
    """A writable connection inside a transaction that is rolled back after the test.

    Warm state outlives a test in a replica: tests that write must leave nothing behind.
    """
    con = catalog.connect(readonly=False)
    con.execute("BEGIN")
    yield con
    con.rollback()
    con.close()
