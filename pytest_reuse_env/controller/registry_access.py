"""A run's access to the registry of warm replicas: opened and checked once, on first use, and
given up for the rest of the run at the first problem, with one warning.

Any registry, lock, log or socket-directory problem (a file where a directory belongs, a lock
another process holds, a read-only or full file system, a socket directory another user
created) means "run without the registry this time": ``scope="global"`` environments get
run-scoped replicas, and the user is told once what went wrong, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import final

from pytest_reuse_env.registry import Registry, RegistryError, registry_error


def describe_problem(error: BaseException) -> str:
    """The problem in one line: the path, what went wrong, the fix."""
    if isinstance(error, OSError) and not isinstance(error, RegistryError):
        return str(registry_error(error, "use"))
    return str(error)


@final
class RegistryAccess:
    """The registry while it works, then None for the rest of the run."""

    def __init__(
        self, directory: Callable[[], Path], *, opener: Callable[[Path], Registry] = Registry
    ) -> None:
        self._directory = directory
        self._open = opener
        self._registry: Registry | None = None
        #: Why this run does without the registry; None while it works.
        self.problem: str | None = None
        self._warned = False

    @property
    def registry(self) -> Registry | None:
        """Opened and probed on first use; None once a problem was met."""
        if self._registry is None and self.problem is None:
            try:
                registry = self._open(self._directory())
                registry.probe()
            except (RegistryError, OSError) as error:
                self.give_up(error)
                return None
            self._registry = registry
        return self._registry

    def give_up(self, error: BaseException) -> None:
        """A registry operation failed: do without it for the rest of the run (the first
        problem is the one reported)."""
        if self.problem is None:
            self.problem = describe_problem(error)
        self._registry = None

    def take_warning(self) -> str | None:
        """The warning about the fallback, the first time it is asked for after a problem."""
        if self.problem is None or self._warned:
            return None
        self._warned = True
        return (
            "scope=global is unavailable in this run, so its replicas end with the run: "
            f"{self.problem}"
        )
