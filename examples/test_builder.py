"""Tests of the catalog builder itself, on a tiny catalog.

They are not marked ``reuse``: they need no warm state, so they run in the pytest process.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import build_catalog


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.sqlite3"
    build_catalog(path, books=500, authors=50)
    return path


def test_tiny_catalog_sizes(tiny: Path) -> None:
    con = sqlite3.connect(tiny)
    assert con.execute("SELECT count(*) FROM books").fetchone() == (500,)
    assert con.execute("SELECT count(*) FROM authors").fetchone() == (50,)
    con.close()


def test_builder_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.sqlite3"
    build_catalog(again, books=500, authors=50)
    query = "SELECT id, title, author_id, genre, year, pages, rating FROM books ORDER BY id"
    first, second = sqlite3.connect(tiny), sqlite3.connect(again)
    assert first.execute(query).fetchall() == second.execute(query).fetchall()
    first.close()
    second.close()


def test_fts_index_is_complete(tiny: Path) -> None:
    con = sqlite3.connect(tiny)
    con.execute("INSERT INTO books_fts(books_fts) VALUES ('integrity-check')")
    con.close()
