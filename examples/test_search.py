"""Full-text search: the FTS5 index agrees with a plain scan, and ranks sensibly."""

from __future__ import annotations

import os
import sqlite3

import pytest

pytestmark = pytest.mark.reuse


@pytest.fixture(scope="module")
def common_words(db: sqlite3.Connection) -> list[str]:
    """The 12 most frequent title words (module scope: computed once per module per process)."""
    print(f"ranking title words in pid {os.getpid()}")
    rows = db.execute("SELECT term FROM title_words ORDER BY doc DESC, term LIMIT 12").fetchall()
    return [term for (term,) in rows]


def scan_count(db: sqlite3.Connection, word: str) -> int:
    """Books whose title contains ``word`` as a whole word, by a full table scan."""
    (count,) = db.execute(
        "SELECT count(*) FROM books WHERE instr(' ' || title || ' ', ' ' || ? || ' ') > 0",
        (word,),
    ).fetchone()
    return int(count)


def fts_count(db: sqlite3.Connection, query: str) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM books_fts WHERE books_fts MATCH ?", (query,)
    ).fetchone()
    return int(count)


@pytest.mark.parametrize("rank", range(12))
def test_index_agrees_with_scan(db: sqlite3.Connection, common_words: list[str], rank: int) -> None:
    word = common_words[rank]
    assert fts_count(db, f'"{word}"') == scan_count(db, word) > 0


@pytest.mark.parametrize("prefix", ["ka", "lo", "mi", "zu", "win"])
def test_prefix_query_covers_exact_words(db: sqlite3.Connection, prefix: str) -> None:
    (exact,) = db.execute(
        "SELECT term FROM title_words WHERE term >= ? ORDER BY term LIMIT 1", (prefix,)
    ).fetchone()
    assert exact.startswith(prefix)
    assert fts_count(db, f"{prefix}*") >= fts_count(db, f'"{exact}"') > 0


class TestBooleanQueries:
    """FTS5 query operators behave like set operations on the matching rows."""

    def words(self, common_words: list[str]) -> tuple[str, str]:
        return common_words[0], common_words[1]

    def ids(self, db: sqlite3.Connection, query: str) -> set[int]:
        rows = db.execute("SELECT rowid FROM books_fts WHERE books_fts MATCH ?", (query,))
        return {rowid for (rowid,) in rows}

    def test_and_is_intersection(self, db: sqlite3.Connection, common_words: list[str]) -> None:
        a, b = self.words(common_words)
        assert self.ids(db, f"{a} AND {b}") == self.ids(db, a) & self.ids(db, b)

    def test_or_is_union(self, db: sqlite3.Connection, common_words: list[str]) -> None:
        a, b = self.words(common_words)
        assert self.ids(db, f"{a} OR {b}") == self.ids(db, a) | self.ids(db, b)

    def test_not_is_difference(self, db: sqlite3.Connection, common_words: list[str]) -> None:
        a, b = self.words(common_words)
        assert self.ids(db, f"{a} NOT {b}") == self.ids(db, a) - self.ids(db, b)

    def test_phrase_is_subset(self, db: sqlite3.Connection, common_words: list[str]) -> None:
        a, b = self.words(common_words)
        assert self.ids(db, f'"{a} {b}"') <= self.ids(db, f"{a} AND {b}")


class TestRanking:
    def test_bm25_is_ordered(self, db: sqlite3.Connection, common_words: list[str]) -> None:
        scores = [
            score
            for (score,) in db.execute(
                "SELECT bm25(books_fts) FROM books_fts WHERE books_fts MATCH ? ORDER BY rank"
                " LIMIT 50",
                (common_words[3],),
            )
        ]
        assert len(scores) == 50
        assert scores == sorted(scores)

    def test_highlight_marks_the_word(
        self, db: sqlite3.Connection, common_words: list[str]
    ) -> None:
        word = common_words[5]
        (marked,) = db.execute(
            "SELECT highlight(books_fts, 0, '[', ']') FROM books_fts WHERE books_fts MATCH ?"
            " LIMIT 1",
            (f'"{word}"',),
        ).fetchone()
        assert f"[{word}]" in marked
