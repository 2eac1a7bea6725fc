"""Point lookups and joins: quick queries against the warm catalog."""

from __future__ import annotations

import os
import sqlite3

import pytest

from conftest import COUNTRIES, FIRST_YEAR, GENRES, LAST_YEAR, N_AUTHORS, N_BOOKS, Catalog

pytestmark = pytest.mark.reuse


def test_row_counts(catalog: Catalog, db: sqlite3.Connection) -> None:
    assert db.execute("SELECT count(*) FROM books").fetchone() == (catalog.books,)
    assert db.execute("SELECT count(*) FROM authors").fetchone() == (catalog.authors,)


def test_catalog_was_built_here(catalog: Catalog) -> None:
    # The session fixture ran in the process that runs this test: a replica, or plain pytest.
    assert catalog.built_by_pid == os.getpid()


@pytest.mark.parametrize("book_id", [1, 2, 17, 1_000, 99_999, 150_000, 299_999, N_BOOKS])
def test_book_by_id(db: sqlite3.Connection, book_id: int) -> None:
    row = db.execute(
        "SELECT title, genre, year, pages, rating FROM books WHERE id = ?", (book_id,)
    ).fetchone()
    assert row is not None
    title, genre, year, pages, rating = row
    assert 2 <= len(title.split()) <= 6
    assert genre in GENRES
    assert FIRST_YEAR <= year <= LAST_YEAR
    assert 40 <= pages <= 1200
    assert 1.0 <= rating <= 5.0


@pytest.mark.parametrize("book_id", [0, -1, N_BOOKS + 1])
def test_missing_book(db: sqlite3.Connection, book_id: int) -> None:
    assert db.execute("SELECT 1 FROM books WHERE id = ?", (book_id,)).fetchone() is None


@pytest.mark.parametrize("genre", GENRES)
def test_genre_lookup_uses_index(db: sqlite3.Connection, genre: str) -> None:
    query = "SELECT count(*) FROM books WHERE genre = ? AND year BETWEEN 1900 AND 1950"
    plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", (genre,)))
    assert "books_genre_year" in plan
    (count,) = db.execute(query, (genre,)).fetchone()
    assert count > 0


@pytest.mark.parametrize("country", COUNTRIES)
def test_authors_by_country(db: sqlite3.Connection, country: str) -> None:
    (count,) = db.execute("SELECT count(*) FROM authors WHERE country = ?", (country,)).fetchone()
    # 20,000 authors over 8 countries: each holds roughly an eighth.
    assert N_AUTHORS / 8 * 0.8 < count < N_AUTHORS / 8 * 1.2


@pytest.mark.parametrize("author_id", [1, 7, 512, 10_000, N_AUTHORS])
def test_author_books_join(db: sqlite3.Connection, author_id: int) -> None:
    rows = db.execute(
        "SELECT a.name, b.title FROM books b JOIN authors a ON a.id = b.author_id"
        " WHERE b.author_id = ?",
        (author_id,),
    ).fetchall()
    # 300,000 books over 20,000 authors: about 15 each.
    assert 1 <= len(rows) <= 60
    assert len({name for name, _ in rows}) == 1
