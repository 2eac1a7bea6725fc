"""The warning categories the plugin issues, for users to filter on
(``filterwarnings = ignore::pytest_reuse_env.ReuseLeakWarning``).

Failures are not exceptions raised at the user: a replica that crashes, hangs or cannot start
fails the tests it held with the reason (see ``controller/outcomes``), and a user's mistake is a
``pytest.UsageError`` naming the option or marker.
"""

from __future__ import annotations

import warnings

import pytest


class ReuseEnvWarning(pytest.PytestWarning):
    """Something about a replica the user should know, that is not a test's outcome."""


class ReuseLeakWarning(pytest.PytestWarning):
    """A test left state behind in a reused process (``reuse_leaks``)."""


def record_warning(config: pytest.Config, message: str, *, when: str) -> None:
    """``message`` in pytest's warnings summary, about the run rather than one test. Recorded,
    never raised: a warning raised would meet the user's ``filterwarnings = error``."""
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={
            "warning_message": warnings.WarningMessage(
                ReuseEnvWarning(message), ReuseEnvWarning, "pytest-reuse-env", 0
            ),
            "when": when,
            "nodeid": "",
            "location": None,
        }
    )
