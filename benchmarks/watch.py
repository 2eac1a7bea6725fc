"""Watch mode's figure: the time from a file save to the summary line of the tests it affects.

``python -m benchmarks.watch``: the edit-loop suite (a 2 s session fixture; 40 quick tests in
4 modules, each importing a module of its own), 10 saves of a test module and 10 of the code
under test it imports, each affecting 10 tests. Contenders, each one long-lived process fed
the same saves:

- ``pytest --reuse-watch --reuse-watch-affected``: the affected tests only, warm;
- ``pytest --reuse-watch``: the affected tests first, then the rest of the selection;
- pytest-watcher (``ptw``, if installed): a new plain pytest per save, as its users have it
  (``--delay 0.05``, closest to watch mode's own 30 ms debounce; ``--patterns *.py,**/*.py``,
  since its default pattern misses files in sub-folders under watchdog 6+).

Every read of a contender's output has a deadline; every process is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

if not __package__:  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.suites import FIXTURE_SECONDS_ENV, append_edit, watch_suite, write_suite

TESTS: Final = 40
FIXTURE_SECONDS: Final = 2.0
SAVES: Final = 10
#: The issue's goal for a save that affects 10 quick tests (seconds).
GOAL: Final = 0.3
#: Longest wait for one expected line (a first run builds the 2 s fixture, under load).
READ_SECONDS: Final = 120.0
SUMMARY: Final = re.compile(rb"\d+ (?:passed|failed)[^\n]* in [0-9.]+s")
#: pytest-watcher's options: its default pattern (*.py) misses app/*.py under watchdog 6+.
PTW_OPTIONS: Final = ("--now", "--delay", "0.05", "--patterns", "*.py,**/*.py")
NOISE_OFF: Final = (
    *("-p", "no:asyncio", "-p", "no:randomly", "-p", "no:cacheprovider"),
    # The bench extra installs it for the async scenario; it runs the tests itself.
    *("-p", "no:asyncio-cooperative"),
)


@dataclass
class Contender:
    name: str
    command: list[str]
    #: Output that says the contender is idle again after a run (None: its summary line).
    idle: re.Pattern[bytes] | None
    #: What every timed round's output must show (the tests it ran), or the figure is void.
    expected: re.Pattern[bytes]
    latencies: dict[str, list[float]] = field(default_factory=dict)
    problem: str | None = None


class Driven:
    """One long-lived contender process and its output, read with deadlines."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its whole tree is stopped by the group's id at the end
        )
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        self.output = b""
        self.seen = 0

    def wait_for(self, pattern: re.Pattern[bytes], seconds: float = READ_SECONDS) -> float:
        """When ``pattern`` showed up in output not matched before (perf_counter)."""
        deadline = time.perf_counter() + seconds
        while True:
            found = pattern.search(self.output, self.seen)
            if found:
                self.seen = found.end()
                return time.perf_counter()
            left = deadline - time.perf_counter()
            if left <= 0 or self.process.poll() is not None:
                tail = self.output[-2000:].decode(errors="replace")
                raise TimeoutError(f"no {pattern.pattern!r} within {seconds:g} s:\n{tail}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                self.output += os.read(self.fd, 65536)

    def stop(self) -> None:
        """SIGINT (as Ctrl-C), then SIGKILL to the whole group after a bound."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


def contenders() -> list[Contender]:
    pytest = [sys.executable, "-m", "pytest", *NOISE_OFF, "-q", "-o", "reuse_scope=run"]
    waiting = re.compile(rb"waiting for changes")
    found = [
        Contender(
            "reuse --reuse-watch-affected",
            [*pytest, "--reuse-watch", "--reuse-watch-affected"],
            waiting,
            re.compile(rb"changed: 10 tests affected\n(.|\n)*\b10 passed in "),
        ),
        Contender(
            "reuse --reuse-watch",
            [*pytest, "--reuse-watch"],
            waiting,
            re.compile(rb"changed: 10 tests affected, then 30 more\n(.|\n)*\b40 passed in "),
        ),
    ]
    ptw = shutil.which("ptw", path=os.path.dirname(sys.executable)) or shutil.which("ptw")
    runner = shutil.which("pytest", path=os.path.dirname(sys.executable))
    if ptw and runner:
        plain = [*NOISE_OFF, "-q", "--reuse=off"]
        found.append(
            Contender(
                "pytest-watcher (a new pytest per save)",
                [ptw, *PTW_OPTIONS, "--runner", runner, ".", *plain],
                None,
                re.compile(rb"\b40 passed in "),  # a full run per save
            )
        )
    else:
        found.append(Contender("pytest-watcher", [], None, SUMMARY, problem="ptw is not installed"))
    return found


def measure(contender: Contender, saves: int) -> None:
    with tempfile.TemporaryDirectory(prefix="reuse-bench-watch-") as scratch:
        root = Path(scratch)
        write_suite(root, watch_suite(TESTS))
        env = {**os.environ, FIXTURE_SECONDS_ENV: str(FIXTURE_SECONDS), "PY_COLORS": "0"}
        env["PYTHONUNBUFFERED"] = "1"  # a pipe: every contender's lines as they are written
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caching on, as users have it
        env.pop("PYTEST_ADDOPTS", None)
        driven = Driven(contender.command, root, env)
        serial = 0
        try:
            driven.wait_for(SUMMARY)  # the first run: replicas start, the fixture is built
            if contender.idle is not None:
                driven.wait_for(contender.idle)
            for name in ("test_core_0.py", "app/part0.py"):
                times = contender.latencies.setdefault(name, [])
                for _ in range(saves):
                    time.sleep(0.3)  # idle, as between two saves of a person
                    serial += 1
                    before = driven.seen
                    saved = time.perf_counter()
                    append_edit(root, name, serial)
                    times.append(driven.wait_for(SUMMARY) - saved)
                    if not contender.expected.search(driven.output, before, driven.seen):
                        shown = driven.output[before : driven.seen].decode(errors="replace")
                        raise TimeoutError(f"not the expected round after a save:\n{shown}")
                    if contender.idle is not None:
                        driven.wait_for(contender.idle)
        except TimeoutError as exc:
            contender.problem = str(exc).splitlines()[0]
        finally:
            driven.stop()


def render(found: list[Contender], saves: int = SAVES) -> str:
    lines = [
        f"watch: {TESTS} tests in 4 modules, {FIXTURE_SECONDS:g} s session fixture; save -> the "
        f"summary line, median (min-max) of {saves} saves each; goal < {GOAL} s for 10 affected",
        f"{'contender':<40} {'test module saved':>22} {'code under test saved':>24}",
    ]
    for contender in found:
        if contender.problem and not contender.latencies:
            lines.append(f"{contender.name:<40} not available: {contender.problem}")
            continue
        cells = []
        for name in ("test_core_0.py", "app/part0.py"):
            times = contender.latencies.get(name) or []
            if times:
                cells.append(
                    f"{statistics.median(times):.3f} s ({min(times):.2f}-{max(times):.2f})"
                )
            else:
                cells.append("-")
        lines.append(f"{contender.name:<40} {cells[0]:>22} {cells[1]:>24}")
        if contender.problem:
            lines.append(f"  stopped early: {contender.problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=SAVES, help="saves of each file")
    args = parser.parse_args(argv)
    found = contenders()
    for contender in found:
        if contender.problem is None:
            print(f"measuring {contender.name} ...", file=sys.stderr, flush=True)
            measure(contender, args.saves)
    print(render(found, args.saves))
    return 0


if __name__ == "__main__":
    sys.exit(main())
