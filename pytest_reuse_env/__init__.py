"""pytest-reuse-env: run marked tests in warm, reusable replica processes.

The public API: :class:`ReusePolicy` (and :class:`PolicyError`, raised for a bad one) and the
warning categories. Everything else is private to the plugin.

PYTEST_DONT_REWRITE: replicas import this package before their pytest session starts, and
pytest would otherwise warn that it cannot rewrite its asserts (an error under
``filterwarnings = error``).
"""

from __future__ import annotations

import time

#: When this process first imported the package: in a replica, the start of its life as one
#: (a replica's setup cost is counted from here).
STARTED = time.monotonic()

# The start time above is taken before the package's own imports, on purpose.
from pytest_reuse_env.errors import ReuseEnvWarning, ReuseLeakWarning  # noqa: E402
from pytest_reuse_env.policy import PolicyError, ReusePolicy  # noqa: E402

__all__ = [
    "PolicyError",
    "ReuseEnvWarning",
    "ReuseLeakWarning",
    "ReusePolicy",
]
