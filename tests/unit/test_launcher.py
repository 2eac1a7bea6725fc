"""Which launch strategy the launcher picks for a policy (``ReplicaLauncher.strategy``/``launch``),
and its fallback to run-scoped popen replicas when the registry fails mid-run: fakes for the
strategies and the registry, no process started."""

from __future__ import annotations

import queue
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import execnet
import pytest

from pytest_reuse_env.controller.launch.daemon import DaemonStrategy
from pytest_reuse_env.controller.launcher import ReplicaLauncher
from pytest_reuse_env.controller.registry_access import RegistryAccess
from pytest_reuse_env.hostspec import HostTable, parse_spec
from pytest_reuse_env.policy import ReusePolicy
from pytest_reuse_env.registry import Registry, RegistryError

from .fakeconfig import settings_of


class FakeStrategy:
    """Records launches; raises ``error`` when given one."""

    def __init__(self, name: str, error: BaseException | None = None) -> None:
        self.name = name
        self.error = error
        self.launched: list[tuple[str, str | None]] = []

    def launch(self, name: str, policy: ReusePolicy, key: str | None = None, **kw: Any) -> Any:
        self.launched.append((name, key))
        if self.error is not None:
            raise self.error
        return f"{self.name} replica"


class FakeRegistry:
    def probe(self) -> None:
        pass


def make_launcher(tmp_path: Path, *, hosts: HostTable | None = None) -> ReplicaLauncher:
    config = SimpleNamespace(
        invocation_params=SimpleNamespace(dir=tmp_path),
        rootpath=tmp_path,
        inipath=None,
        _tmp_path_factory=SimpleNamespace(getbasetemp=lambda: tmp_path),
    )
    settings = settings_of()
    if hosts is not None:
        settings = replace(settings, hosts=hosts)
    launcher = ReplicaLauncher(
        cast(pytest.Config, config), queue.SimpleQueue(), execnet.Group(), settings=settings
    )
    launcher.registry_access = RegistryAccess(
        lambda: tmp_path, opener=lambda path: cast(Registry, FakeRegistry())
    )
    launcher.popen = cast(Any, FakeStrategy("popen"))
    return launcher


def test_a_run_scoped_environment_starts_popen_replicas(tmp_path: Path) -> None:
    launcher = make_launcher(tmp_path)
    assert launcher.strategy(ReusePolicy(scope="run"), None) is launcher.popen
    assert (
        cast(object, launcher.launch("default", ReusePolicy(scope="run"), None)) == "popen replica"
    )


def test_a_global_environment_leases_through_the_registry(tmp_path: Path) -> None:
    launcher = make_launcher(tmp_path)
    strategy = launcher.strategy(ReusePolicy(), "g-key")
    assert isinstance(strategy, DaemonStrategy)
    assert launcher.strategy(ReusePolicy(), "g-key") is strategy, "one daemon strategy a run"


def test_a_policy_on_hosts_starts_there_whatever_its_scope(tmp_path: Path) -> None:
    box = parse_spec("ssh=box", group="gpu", source="reuse_hosts line 1")
    launcher = make_launcher(tmp_path, hosts=HostTable(groups={"gpu": (box,)}))
    assert launcher.strategy(ReusePolicy(hosts="gpu"), "g-key") is launcher.hosts
    assert launcher.strategy(ReusePolicy(hosts="local"), "g-key") is not launcher.hosts
    assert launcher.on_hosts(ReusePolicy(hosts="gpu"))
    assert not launcher.on_hosts(ReusePolicy())


def test_a_broken_registry_means_popen_replicas_from_the_start(tmp_path: Path) -> None:
    launcher = make_launcher(tmp_path)

    def broken(path: Path) -> Registry:
        raise PermissionError(13, "Permission denied", str(path / "registry.json"))

    launcher.registry_access = RegistryAccess(lambda: tmp_path, opener=broken)
    assert launcher.strategy(ReusePolicy(), "g-key") is launcher.popen
    assert launcher.registry_problem is not None
    assert "registry.json" in launcher.registry_problem


@pytest.mark.parametrize(
    "error",
    [RegistryError("registry lock busy"), OSError(28, "No space left on device")],
    ids=["registry", "disk-full"],
)
def test_a_registry_failing_mid_run_falls_back_to_popen_for_the_rest(
    tmp_path: Path, error: BaseException
) -> None:
    launcher = make_launcher(tmp_path)
    daemons = launcher.strategy(ReusePolicy(), "g-key")
    failing = FakeStrategy("daemon", error)
    launcher._daemons = cast(Any, failing)
    assert daemons is not None

    assert cast(object, launcher.launch("default", ReusePolicy(), "g-key")) == "popen replica"
    assert failing.launched == [("default", "g-key")]
    assert cast(FakeStrategy, launcher.popen).launched == [("default", None)]
    assert launcher.registry_problem is not None
    # The rest of the run does without the registry: no second try, one warning.
    assert launcher.strategy(ReusePolicy(), "g-key") is launcher.popen
    assert launcher.registry_access.take_warning() is not None
    assert launcher.registry_access.take_warning() is None
