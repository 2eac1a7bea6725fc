"""Watch mode's two inputs: saved files (``watchfiles``, on its own thread) and keys (the
terminal, read by the main thread only while it waits between rounds).

``watchfiles`` is imported here only, and this module only in watch mode.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, final

#: Quiet time after the last change of a burst before the burst is handed over (ms): editors
#: save in several writes (a temporary file, a rename, a chmod).
DEBOUNCE_STEP_MS: Final = 30
#: How long one wait on the watcher or the terminal lasts before the loop looks around.
POLL_SECONDS: Final = 0.02
#: Folders never watched, besides watchfiles' own list (VCS, caches, .venv, __pycache__).
IGNORED_DIRECTORIES: Final = (
    "venv",
    "env",
    ".nox",
    ".eggs",
    ".ruff_cache",
    ".pytest_cache",
    "site-packages",
    "dist-packages",
    "build",
    "dist",
)
#: How long stopping the watcher thread may take.
STOP_SECONDS: Final = 2.0


def _python_filter(ini_path: str | None, known: Callable[[str], bool] = lambda path: False) -> Any:
    import watchfiles

    class PythonFiles(watchfiles.DefaultFilter):
        """Python files, the ini file and the data files ``known`` names, outside caches, VCS
        folders and virtualenvs."""

        ignore_dirs = (*watchfiles.DefaultFilter.ignore_dirs, *IGNORED_DIRECTORIES)

        def __call__(self, change: Any, path: str) -> bool:
            if path != ini_path and not path.endswith(".py") and not known(path):
                return False
            return bool(super().__call__(change, path))

    return PythonFiles()


@final
class FileChanges:
    """Saved files under ``root``: bursts of paths, debounced, on a queue."""

    def __init__(
        self,
        root: Path,
        ini_path: Path | None,
        known: Callable[[str], bool] = lambda path: False,
    ) -> None:
        self.root = root
        self.ini_path = str(ini_path) if ini_path is not None else None
        #: Other files to hear: data files the watching process read at import (its reloader's).
        self.known = known
        self.bursts: queue.Queue[set[str]] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="reuse-watch", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> FileChanges:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(STOP_SECONDS)

    def _watch(self) -> None:
        import watchfiles

        try:
            for changes in watchfiles.watch(
                self.root,
                watch_filter=_python_filter(self.ini_path, self.known),
                step=DEBOUNCE_STEP_MS,
                stop_event=self._stop,
                rust_timeout=500,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                self._ready.set()
                if changes:
                    self.bursts.put({os.path.realpath(path) for _, path in changes})
        except BaseException as exc:  # reported by the loop, never lost on this thread
            self.error = exc
            self.bursts.put(set())

    def take(self, timeout: float) -> set[str] | None:
        """Every path saved since the last call (waiting up to ``timeout`` for the first)."""
        try:
            paths = self.bursts.get(timeout=timeout) if timeout else self.bursts.get_nowait()
        except queue.Empty:
            return None
        while True:
            try:
                paths |= self.bursts.get_nowait()
            except queue.Empty:
                return paths


@final
class Keys:
    """Single key presses from the terminal, while the loop waits; off without a terminal.

    pytest's capture keeps fd 0 on /dev/null between tests: it is handed back to the terminal
    for the wait (as pdb does) and taken again before the next round."""

    def __init__(self, capture: Any) -> None:
        self._capture = capture
        self._saved: Any = None
        self.fd = -1
        self.tty = False

    def __enter__(self) -> Keys:
        if self._capture is not None:
            self._capture.suspend_global_capture(in_=True)
        try:
            self.fd = sys.stdin.fileno()
            self.tty = os.isatty(self.fd)
        except (AttributeError, OSError, ValueError):
            self.tty = False
        if self.tty:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)  # one key at a time, no echo; Ctrl-C still interrupts
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
        if self._capture is not None:
            self._capture.resume_global_capture()
            self._capture.suspend_global_capture(in_=False)

    def _restore(self) -> None:
        if self._saved is not None:
            import termios

            with contextlib.suppress(OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> str | None:
        """One key, or None after ``timeout`` (at once without a terminal)."""
        if not self.tty:
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 1)
        return data.decode(errors="replace") if data else None

    def line(self, prompt: str, write: Any) -> str:
        """A line typed after ``prompt``, echoed as usual (for ``p`` and ``k``)."""
        self._restore()
        try:
            write(prompt)
            return sys.stdin.readline().strip()
        finally:
            if self.tty:
                import tty

                tty.setcbreak(self.fd)
