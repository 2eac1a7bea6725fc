"""The registry against real processes: lease and reserve races, lock holders that die or stay.

These start Python processes (a few seconds each), so they live beside the end-to-end tests;
the registry's logic is tested in tests/unit/test_registry.py, whose helpers these share.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pytest_reuse_env.registry import Registry, RegistryBusy
from tests.unit.test_registry import (
    CHILD_TIMEOUT,
    LEASE_RACER,
    LOCK_HOLDER,
    ME,
    ME_STARTED,
    RESERVE_RACER,
    children,
    clock,
    expect_line,
    make_record,
    race,
    registry,
    registry_dir,
    spawn,
)

__all__ = ["children", "clock", "registry", "registry_dir"]  # fixtures, used by name


def test_one_lease_wins_a_race_between_processes(
    registry: Registry, registry_dir: Path, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    registry.add(make_record())
    results = race(children, tmp_path, LEASE_RACER, [str(registry_dir), "env-a"], 6)
    assert Counter(results) == {"g-00000001": 1, None: 5}


def test_reserve_respects_max_in_a_race_between_processes(
    registry: Registry, registry_dir: Path, tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    args = [str(registry_dir), "env-a", str(ME), repr(ME_STARTED)]
    results = race(children, tmp_path, RESERVE_RACER, args, 5)
    assert Counter(results) == {True: 2, False: 3}
    assert [record.state for record in registry.records()] == ["starting", "starting"]


def test_a_killed_lock_holder_does_not_block(
    registry: Registry, registry_dir: Path, children: list[subprocess.Popen[str]]
) -> None:
    holder = spawn(children, LOCK_HOLDER, str(registry_dir))
    expect_line(holder, "locked")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=CHILD_TIMEOUT)
    assert (registry_dir / "registry.lock").exists()
    assert Registry(registry_dir, lock_timeout=2.0).records() == []


def test_lock_wait_is_bounded(registry_dir: Path, children: list[subprocess.Popen[str]]) -> None:
    Registry(registry_dir)
    holder = spawn(children, LOCK_HOLDER, str(registry_dir))
    expect_line(holder, "locked")
    waiting = Registry(registry_dir, lock_timeout=0.1)
    with pytest.raises(RegistryBusy) as info:
        waiting.records()
    assert str(info.value).startswith(
        "registry lock held for more than 0.1 s by another process: "
        f"{registry_dir / 'registry.lock'}; fix: "
    )
    holder.kill()
    holder.wait(timeout=CHILD_TIMEOUT)
    assert waiting.records() == []
