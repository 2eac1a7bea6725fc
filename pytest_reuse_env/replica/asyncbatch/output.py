"""Where a task's output goes while async tests interleave (``batch.py``).

``sys.stdout``/``sys.stderr`` are replaced by routers, and a handler sits on the root logger,
that send text and records to the test the running code belongs to: ``CURRENT``, a context
variable that tasks a test spawns (and ``asyncio.to_thread``) inherit. Text written while no
test is current goes through to pytest's global capture. ``TaskCapsys`` is ``capsys`` for one
test. Imports the standard library and pytest only: it runs inside a replica.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol, TextIO, cast, final

import pytest
from _pytest.capture import CaptureResult


class OutputOwner(Protocol):
    """The test that output belongs to (its warnings too: ``recorded``)."""

    recorded: list[warnings.WarningMessage]

    def write(self, stream: str, text: str) -> bool: ...

    def log(self, record: logging.LogRecord) -> None: ...


#: The test the running code belongs to (inherited by tasks it spawns).
CURRENT: Final[contextvars.ContextVar[OutputOwner | None]] = contextvars.ContextVar(
    "pytest_reuse_env_current_test", default=None
)


@final
class TaskCapsys:
    """``capsys``/``capsysbinary`` for one test: what the test's task wrote since the last read."""

    def __init__(
        self, paused: Callable[[], contextlib.AbstractContextManager[None]], *, binary: bool
    ) -> None:
        self._paused = paused
        self._binary = binary
        self._buffers = {"stdout": io.StringIO(), "stderr": io.StringIO()}
        self.active = True

    def write(self, stream: str, text: str) -> None:
        self._buffers[stream].write(text)

    def readouterr(self) -> CaptureResult[Any]:
        out, err = (self._take(name) for name in ("stdout", "stderr"))
        if self._binary:
            return CaptureResult(out.encode(), err.encode())
        return CaptureResult(out, err)

    def _take(self, name: str) -> str:
        text = self._buffers[name].getvalue()
        self._buffers[name] = io.StringIO()
        return text

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Write straight through (to pytest's global capture's underlying streams)."""
        self.active = False
        try:
            with self._paused():
                yield
        finally:
            self.active = True


# -- process-wide plumbing ------------------------------------------------------------


@final
class StreamRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: text goes to the current test, else through."""

    def __init__(self, name: str, through: TextIO) -> None:
        super().__init__()
        self._name = name
        self.through = through

    def write(self, text: str) -> int:
        run = CURRENT.get()
        if run is None or not run.write(self._name, text):
            self.through.write(text)
        return len(text)

    def flush(self) -> None:
        self.through.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.through, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.through.fileno()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.through, name)


@final
class Streams:
    """sys.stdout/sys.stderr routers on top of pytest's global capture (resumed meanwhile)."""

    def __init__(self, config: pytest.Config) -> None:
        self._capman: Any = config.pluginmanager.getplugin("capturemanager")
        self._saved: tuple[TextIO, TextIO] | None = None
        self.unattributed: list[str] = []

    def install(self) -> None:
        if self._capman is not None:
            self._capman.resume_global_capture()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = cast(TextIO, StreamRouter("stdout", sys.stdout))
        sys.stderr = cast(TextIO, StreamRouter("stderr", sys.stderr))

    def uninstall(self) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._capman is not None:
            self._capman.suspend_global_capture(in_=False)
            out, err = self._capman.read_global_capture()
            self.unattributed.extend(text for text in (out, err) if text)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Global capture off and the real streams back (to call reporting hooks)."""
        self.uninstall()
        try:
            yield
        finally:
            self.install()

    def take_unattributed(self) -> str:
        text = "".join(self.unattributed)
        self.unattributed.clear()
        return text


@final
class LogRouter(logging.Handler):
    """On the root logger for the batch: a record goes to the test that logged it."""

    def handle(self, record: logging.LogRecord) -> bool:
        run = CURRENT.get()
        if run is not None:
            run.log(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() decides
        pass
