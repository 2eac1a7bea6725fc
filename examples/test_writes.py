"""Tests that write, each in a transaction rolled back afterwards.

They use the named policy ``writers`` (see pytest.ini): an environment of its own, one replica.
"""

from __future__ import annotations

import sqlite3

import pytest

from conftest import Catalog

pytestmark = pytest.mark.reuse("writers")

NEW_ID = 10_000_000


def insert_book(con: sqlite3.Connection, title: str) -> None:
    con.execute("INSERT INTO books VALUES (?, ?, 1, 'poetry', 2024, 100, 4.5)", (NEW_ID, title))
    con.execute("INSERT INTO books_fts(rowid, title) VALUES (?, ?)", (NEW_ID, title))


def test_insert_is_searchable(scratch: sqlite3.Connection) -> None:
    insert_book(scratch, "zzyzx unmatched title")
    rows = scratch.execute("SELECT rowid FROM books_fts WHERE books_fts MATCH 'zzyzx'").fetchall()
    assert rows == [(NEW_ID,)]


def test_update_rating(scratch: sqlite3.Connection) -> None:
    scratch.execute("UPDATE books SET rating = 5.0 WHERE genre = 'poetry'")
    (low,) = scratch.execute(
        "SELECT count(*) FROM books WHERE genre = 'poetry' AND rating < 5.0"
    ).fetchone()
    assert low == 0


def test_delete_author_books(scratch: sqlite3.Connection) -> None:
    scratch.execute("DELETE FROM books WHERE author_id = 1")
    assert scratch.execute("SELECT 1 FROM books WHERE author_id = 1").fetchone() is None


@pytest.mark.parametrize("attempt", range(3))
def test_earlier_writes_left_nothing(
    catalog: Catalog, db: sqlite3.Connection, attempt: int
) -> None:
    # Runs after the writers above: their rollbacks must have restored the warm catalog.
    assert db.execute("SELECT count(*) FROM books").fetchone() == (catalog.books,)
    assert db.execute("SELECT 1 FROM books WHERE id = ?", (NEW_ID,)).fetchone() is None
    (low,) = db.execute(
        "SELECT count(*) FROM books WHERE genre = 'poetry' AND rating < 5.0"
    ).fetchone()
    assert low > 0
