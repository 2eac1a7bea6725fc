"""Aggregates over the whole catalog, summarized once per module."""

from __future__ import annotations

import os
import sqlite3

import pytest

from conftest import FIRST_YEAR, GENRES, LAST_YEAR, Catalog

pytestmark = pytest.mark.reuse


@pytest.fixture(scope="module")
def genre_stats(db: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Books and mean rating per genre (module scope: one full scan per module per process)."""
    print(f"summarizing genres in pid {os.getpid()}")
    rows = db.execute("SELECT genre, count(*), avg(rating) FROM books GROUP BY genre")
    return {genre: (count, mean) for genre, count, mean in rows}


def test_every_genre_present(genre_stats: dict[str, tuple[int, float]]) -> None:
    assert sorted(genre_stats) == sorted(GENRES)


def test_genre_counts_sum_to_total(
    catalog: Catalog, genre_stats: dict[str, tuple[int, float]]
) -> None:
    assert sum(count for count, _ in genre_stats.values()) == catalog.books


@pytest.mark.parametrize("genre", GENRES)
def test_genre_share_and_mean_rating(
    catalog: Catalog, genre_stats: dict[str, tuple[int, float]], genre: str
) -> None:
    count, mean = genre_stats[genre]
    assert abs(count - catalog.books / len(GENRES)) < catalog.books * 0.01
    assert 2.9 < mean < 3.1  # ratings are uniform on [1, 5]


@pytest.mark.parametrize("start", range(FIRST_YEAR, LAST_YEAR, 25))
def test_quarter_century_is_populated(db: sqlite3.Connection, start: int) -> None:
    (count,) = db.execute(
        "SELECT count(*) FROM books WHERE year >= ? AND year < ?", (start, start + 25)
    ).fetchone()
    assert count > 10_000


def test_most_prolific_authors(db: sqlite3.Connection) -> None:
    rows = db.execute(
        "SELECT author_id, count(*) AS n FROM books GROUP BY author_id ORDER BY n DESC LIMIT 10"
    ).fetchall()
    counts = [n for _, n in rows]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > 15


def test_long_books_rate_like_short_ones(db: sqlite3.Connection) -> None:
    (long_mean,) = db.execute("SELECT avg(rating) FROM books WHERE pages > 1000").fetchone()
    (short_mean,) = db.execute("SELECT avg(rating) FROM books WHERE pages < 100").fetchone()
    assert abs(long_mean - short_mean) < 0.1
