"""Runtime failures of the plugin: one base class, each carrying the replica id."""

from __future__ import annotations

from typing import final


class ReuseEnvError(Exception):
    """Base of every runtime failure raised by pytest-reuse-env."""

    def __init__(
        self, message: str, *, replica_id: str | None = None, remote_traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.replica_id = replica_id
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text = f"{text}\n{self.remote_traceback}"
        return text


@final
class ReplicaStartError(ReuseEnvError):
    """A replica could not start: its session failed before it was ready."""


@final
class ReplicaCrashed(ReuseEnvError):
    """A replica process ended while it held work."""
