"""One role value per process, computed once from its config (``role.role_of``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_reuse_env.role import REPLICA_KEY, Role, role_of


def config(*, dist: str = "no", workerinput: dict[str, Any] | None = None) -> pytest.Config:
    fake = SimpleNamespace(stash=pytest.Stash(), option=SimpleNamespace(dist=dist))
    if workerinput is not None:
        fake.workerinput = workerinput
    return cast(pytest.Config, fake)


@pytest.mark.parametrize(
    ("made", "role"),
    [
        (config(), Role.CONTROLLER),
        (config(dist="load"), Role.XDIST_CONTROLLER),
        (config(workerinput={"workerid": "gw0"}), Role.XDIST_WORKER),
        (config(workerinput={"workerid": "r0", REPLICA_KEY: True}), Role.REPLICA),
    ],
    ids=["controller", "xdist-controller", "xdist-worker", "replica"],
)
def test_each_process_role(made: pytest.Config, role: Role) -> None:
    assert role_of(made) is role
    assert role.runs_tests is (role in (Role.CONTROLLER, Role.XDIST_WORKER))
    assert role.is_worker is (role in (Role.XDIST_WORKER, Role.REPLICA))


def test_the_role_is_computed_once() -> None:
    made = config()
    assert role_of(made) is Role.CONTROLLER
    made.workerinput = {"workerid": "gw0"}  # type: ignore[attr-defined]
    assert role_of(made) is Role.CONTROLLER, "kept from the first call"


def test_no_module_tells_roles_apart_by_hand() -> None:
    """``role_of`` is the one place that reads ``workerinput`` to decide the role."""
    from tests.unit.test_layout import PACKAGE

    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if 'hasattr(config, "workerinput")' in path.read_text()
        or 'hasattr(self.config, "workerinput")' in path.read_text()
    ]
    assert offenders == []
