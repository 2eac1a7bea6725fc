"""Which part a pytest process plays: computed once per process by the plugin.

pytest-free apart from reading the config it is given; imported by both sides.
"""

from __future__ import annotations

import enum
from typing import Any, final

import pytest

#: Inside a replica, ``config.workerinput`` carries this key (set by the replica side).
REPLICA_KEY = "reuse_replica"


@final
class Role(enum.Enum):
    """The process's role. Computed from ``config`` once, in ``pytest_configure``."""

    #: The pytest process the user started, running tests itself (no ``-n``).
    CONTROLLER = "controller"
    #: ``pytest -n N``'s own process: its workers run the tests, it prints their reports.
    XDIST_CONTROLLER = "xdist-controller"
    #: An xdist worker: routes the tests xdist hands it one at a time.
    XDIST_WORKER = "xdist-worker"
    #: A replica's own pytest session: it runs what it is sent.
    REPLICA = "replica"

    @property
    def runs_tests(self) -> bool:
        """True where tests are routed to replicas (not in xdist's controller, not in a
        replica)."""
        return self in (Role.CONTROLLER, Role.XDIST_WORKER)

    @property
    def is_worker(self) -> bool:
        """True where ``config.workerinput`` exists (xdist worker or replica)."""
        return self in (Role.XDIST_WORKER, Role.REPLICA)


_KEY = pytest.StashKey["Role"]()


def _compute(config: pytest.Config) -> Role:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Role.REPLICA if workerinput.get(REPLICA_KEY) else Role.XDIST_WORKER
    if getattr(config.option, "dist", "no") != "no":
        return Role.XDIST_CONTROLLER
    return Role.CONTROLLER


def role_of(config: pytest.Config) -> Role:
    """The role of the process that owns ``config`` (computed on first use, then kept)."""
    found = config.stash.get(_KEY, None)
    if found is None:
        found = config.stash[_KEY] = _compute(config)
    return found
