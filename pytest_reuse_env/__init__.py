"""pytest-reuse-env: run marked tests in warm, reusable replica processes."""

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
