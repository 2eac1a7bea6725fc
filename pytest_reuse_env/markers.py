"""``@pytest.mark.reuse`` resolution: which policy each test runs under, or None to run it in the
pytest process.

Bad marker arguments become a :class:`pytest.UsageError` naming the marker's test (its nodeid),
the bad value and the rule, so pytest stops with exit code 4 before any replica starts. Runs in
the pytest process the user started (``plugin.py``, at collection), against the
:class:`~pytest_reuse_env.settings.ReuseSettings` read at configure time. This module knows
nothing of processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from pytest_reuse_env.policy import PolicyError, ReusePolicy

if TYPE_CHECKING:
    from pytest_reuse_env.settings import ReuseSettings

__all__ = [
    "resolve_item_policy",
    "resolve_policies",
]


def resolve_item_policy(
    item: pytest.Item,
    settings: ReuseSettings,
    known: dict[int, tuple[pytest.Mark, ReusePolicy | None]] | None = None,
) -> ReusePolicy | None:
    """The policy of ``item``, or None if it runs in the pytest process.

    The closest ``reuse`` marker decides (function over class over module); an item without
    one gets ``settings.apply_all``. Bad marker arguments raise ``pytest.UsageError`` naming
    the item's nodeid. ``known`` remembers markers already read (a module's ``pytestmark`` is
    one object shared by all its tests).
    """
    if not settings.enabled:
        return None
    marker = item.get_closest_marker("reuse")
    if marker is None:
        return settings.apply_all
    if known is not None:
        seen = known.get(id(marker))
        if seen is not None and seen[0] is marker:
            return seen[1]
    policy = _marker_policy(marker, settings, f"@pytest.mark.reuse at {item.nodeid}")
    if known is not None:
        known[id(marker)] = (marker, policy)  # the marker is kept: its id is not reused
    return policy


def _marker_policy(marker: pytest.Mark, settings: ReuseSettings, where: str) -> ReusePolicy | None:
    if len(marker.args) > 1:
        raise pytest.UsageError(
            f"{where}: takes at most one positional argument (a policy name, a ReusePolicy "
            f"or False), got {len(marker.args)}: {marker.args!r}"
        )
    base = settings.default_policy
    if marker.args:
        arg = marker.args[0]
        if arg is False or (isinstance(arg, str) and arg == "off"):
            if marker.kwargs:
                raise pytest.UsageError(
                    f"{where}: {arg!r} runs the test in the pytest process and takes no policy "
                    f"fields, got {', '.join(sorted(marker.kwargs))}"
                )
            return None
        base = _marker_base(arg, settings, where)
    try:
        policy = ReusePolicy.from_mapping(marker.kwargs, base=base)
    except PolicyError as error:
        raise pytest.UsageError(f"{where}: {error}") from None
    settings.hosts.check_group(policy.hosts, where)
    return policy


def _marker_base(arg: object, settings: ReuseSettings, where: str) -> ReusePolicy:
    if isinstance(arg, ReusePolicy):
        return arg
    if isinstance(arg, str):
        if arg == "default":
            return settings.default_policy
        if arg in settings.named:
            return settings.named[arg]
        raise pytest.UsageError(
            f"{where}: unknown policy name {arg!r}; known names: "
            f"{', '.join(settings.known_names())} (define names in the reuse_policies ini key)"
        )
    raise pytest.UsageError(
        f"{where}: the positional argument must be a policy name, a ReusePolicy or False, "
        f"got {arg!r} ({type(arg).__name__})"
    )


def resolve_policies(
    items: Sequence[pytest.Item], settings: ReuseSettings
) -> dict[str, ReusePolicy]:
    """``{nodeid: policy}`` for the items that run in replicas; raises on the first bad marker.

    Every item is resolved before the caller starts anything, so a bad marker anywhere stops
    the run before any replica exists. Empty when reuse is off.
    """
    policies: dict[str, ReusePolicy] = {}
    if not settings.enabled:
        return policies
    known: dict[int, tuple[pytest.Mark, ReusePolicy | None]] = {}
    for item in items:
        policy = resolve_item_policy(item, settings, known)
        if policy is not None:
            policies[item.nodeid] = policy
    return policies
