"""The warning categories the plugin issues, for users to filter on
(``filterwarnings = ignore::pytest_reuse_env.ReuseLeakWarning``).

Failures are not exceptions raised at the user: a replica that crashes, hangs or cannot start
fails the tests it held with the reason (see ``controller/outcomes``), and a user's mistake is a
``pytest.UsageError`` naming the option or marker.
"""

from __future__ import annotations

import pytest


class ReuseEnvWarning(pytest.PytestWarning):
    """Something about a replica the user should know, that is not a test's outcome."""


class ReuseLeakWarning(pytest.PytestWarning):
    """A test left state behind in a reused process (``reuse_leaks``)."""
