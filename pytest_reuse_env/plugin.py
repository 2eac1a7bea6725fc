"""The pytest plugin ``reuse_env``: thin hooks that register the controller when reuse is on."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_reuse_env.commands import status_lines, stop_all
from pytest_reuse_env.config import MARKER_HELP, ReuseSettings, register_options
from pytest_reuse_env.controller import ReuseController
from pytest_reuse_env.launcher import registry_directory
from pytest_reuse_env.registry import Registry, RegistryError
from pytest_reuse_env.reporting import ReuseEnvWarning
from pytest_reuse_env.summary import ReuseSummary


def pytest_addoption(parser: pytest.Parser) -> None:
    register_options(parser)


def is_replica(config: pytest.Config) -> bool:
    """True inside a replica's own pytest session."""
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return bool(workerinput.get("reuse_replica"))


def is_xdist_controller(config: pytest.Config) -> bool:
    """True in the process that runs ``pytest -n N``: its workers run the tests, not it."""
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--reuse-status`` and ``--reuse-stop`` do their job and end the run."""
    if config.getoption("reuse_status") or config.getoption("reuse_stop"):
        from _pytest.main import wrap_session

        return wrap_session(config, _run_command)
    return None


def _run_command(config: pytest.Config, session: pytest.Session) -> int:
    try:
        registry: Registry | None = Registry(registry_directory(config))
        problem = None
    except RegistryError as exc:
        registry, problem = None, str(exc)
    writer = config.get_terminal_writer()
    if config.getoption("reuse_stop"):
        lines = stop_all(registry)
        for line in lines or ["reuse: no warm replicas to stop"]:
            writer.line(line)
    else:
        for line in status_lines(registry, problem):
            writer.line(line)
    return 0


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if is_replica(config):
        return
    # Validated in xdist's controller too: a bad ini value is one clean usage error, not one
    # per worker.
    settings = ReuseSettings.from_config(config)
    if not settings.enabled:
        return
    summary = None
    if not hasattr(config, "workerinput"):  # xdist workers hand their figures to the controller
        summary = ReuseSummary(config, config.getoption("reuse_report"))
        config.pluginmanager.register(summary, "reuse_summary")
    if is_xdist_controller(config) and config.getoption("reuse_verify_cold"):
        # xdist's controller prints the reports; nothing can annotate them afterwards.
        config.issue_config_time_warning(
            ReuseEnvWarning(
                "--reuse-verify-cold has no effect under pytest -n (xdist): run the failing "
                "tests without -n to check whether they fail only in a warm replica"
            ),
            stacklevel=2,
        )
    if not is_xdist_controller(config):
        controller = ReuseController(config, settings, summary)
        config.pluginmanager.register(controller, "reuse_controller")
