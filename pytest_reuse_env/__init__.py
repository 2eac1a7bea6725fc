"""pytest-reuse-env: run marked tests in warm, reusable replica processes.

PYTEST_DONT_REWRITE: replicas import this package before their pytest session starts, and
pytest would otherwise warn that it cannot rewrite its asserts (an error under
``filterwarnings = error``).
"""

from __future__ import annotations

from pytest_reuse_env.errors import ReplicaCrashed, ReplicaStartError, ReuseEnvError
from pytest_reuse_env.policy import PolicyError, ReusePolicy

__all__ = [
    "PolicyError",
    "ReplicaCrashed",
    "ReplicaStartError",
    "ReuseEnvError",
    "ReusePolicy",
]
