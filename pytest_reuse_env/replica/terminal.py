"""The replica's terminal reporter: kept for the plugins that write through it, silent.

A replica's pytest session has a terminal reporter like any other pytest session, and plugins
use it (``--setup-show`` writes through its writer, see ``perrun.py``). Nobody reads what it
prints, though: the controller replays every report into the user's terminal. Its per-test
progress (a report-status hook call, a write and a flush per phase), its header and its
end-of-session summary (where other plugins' ``pytest_terminal_summary`` run: hypothesis imports
itself there, 0.1 s) are time a replica spends on every test and at the end of every run, while
the controller waits. So this plugin of the replica's session takes those hooks off it.

Imports only pytest (see ``replica/__init__.py``).
"""

from __future__ import annotations

from typing import Final

import pytest

#: The reporter's hooks that only print (or feed what it prints at the end).
SILENCED: Final = (
    "pytest_sessionstart",
    "pytest_collection",
    "pytest_collectreport",
    "pytest_deselected",
    "pytest_collection_finish",
    "pytest_runtest_logstart",
    "pytest_runtest_logreport",
    "pytest_runtest_logfinish",
    "pytest_sessionfinish",
)

#: How the terminal plugin registers its reporter.
REPORTER: Final = "terminalreporter"


@pytest.hookimpl(trylast=True)  # after the terminal plugin registered its reporter
def pytest_configure(config: pytest.Config) -> None:
    silence(config.pluginmanager)


def silence(manager: pytest.PytestPluginManager) -> None:
    """Register the reporter again without its printing hooks (pluggy takes a plugin's hooks
    from its attributes when it is registered: an attribute that is no function is none)."""
    reporter = manager.get_plugin(REPORTER)
    if reporter is None:  # -p no:terminal
        return
    manager.unregister(reporter)
    for name in SILENCED:
        setattr(reporter, name, None)
    manager.register(reporter, REPORTER)
