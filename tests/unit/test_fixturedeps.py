"""Warm fixtures kept through an edit (replica/fixturedeps.py): the project's, not pytest's."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from _pytest.tmpdir import tmp_path_factory

from pytest_reuse_env.replica.fixturedeps import FixtureRecord, WarmFixtures
from pytest_reuse_env.replica.modgraph import ModuleGraph


def db() -> dict[str, int]:  # this file is the project's here
    return {"rows": 3}


@functools.wraps(db)
def wrapped_db() -> dict[str, int]:  # as pytest-asyncio wraps an async fixture
    return db()


@dataclass(eq=False)  # hashed by identity, as pytest's FixtureDef
class Definition:
    argname: str
    func: Any
    cached_result: Any = (1, None, None)


@dataclass
class Manager:
    definitions: list[Definition] = field(default_factory=list)

    def _get_all_fixture_defs(self) -> list[Definition]:
        return self.definitions


@dataclass
class Session:
    _fixturemanager: Manager


def test_kept_lists_the_projects_warm_fixtures_and_their_cost_not_pytests() -> None:
    warm = WarmFixtures(ModuleGraph())
    definitions = [
        Definition("db", db),
        Definition("conn", wrapped_db),
        Definition("tmp_path_factory", tmp_path_factory),
        Definition("gone", db, cached_result=None),  # torn down: not kept
    ]
    for order, definition in enumerate(definitions):
        warm.records[definition] = FixtureRecord(request=None, order=order, seconds=1.0 + order)
    names, seconds = warm.kept(Session(Manager(definitions)))  # type: ignore[arg-type]
    assert names == ["conn", "db"]
    assert seconds == 1.0 + 2.0
