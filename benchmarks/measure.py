"""One timed pytest subprocess: wall time, outcomes from junitxml, fixture setups, memory.

Every process a run starts inherits ``REUSE_BENCH_MARKER``; after a run (and at exit) the harness
finds processes carrying it, including replicas that outlive their run by design, and stops them:
ask (SIGTERM), wait, kill.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.probe import last_error_line
from benchmarks.suites import SETUP_COUNTER_ENV

MARKER_ENV = "REUSE_BENCH_MARKER"
SAMPLE_INTERVAL = 0.05
STOP_GRACE = 3.0


@dataclass(frozen=True)
class RunResult:
    """What one subprocess run produced."""

    seconds: float
    returncode: int | None  # None: killed at the timeout
    outcomes: dict[str, str]
    setups: int
    setup_processes: int
    peak_rss: int | None  # bytes, summed over the process tree; None when not sampled
    peak_processes: int
    problem: str | None  # why the run does not count, or None


def junit_outcomes(path: Path) -> dict[str, str]:
    """``{nodeid-ish: outcome}`` from a junitxml file; raises ValueError when unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"no readable junitxml ({exc})") from exc
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                break
        # A test can appear twice (a teardown error after a pass): keep the worst.
        if outcomes.get(key, "passed") == "passed":
            outcomes[key] = outcome
    return outcomes


class TreeSampler:
    """Samples the summed resident memory of a process and its descendants every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        if total > self.peak_rss:
            self.peak_rss = total
            self.peak_processes = len(procs)


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER_ENV) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def stop_processes(procs: Sequence[psutil.Process]) -> None:
    """Ask, wait, kill."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=STOP_GRACE)


def stop_marked(marker: str) -> int:
    """Stop every process carrying ``marker``; returns how many there were."""
    procs = marked_processes(marker)
    if procs:
        stop_processes(procs)
    return len(procs)


def run_pytest(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    marker: str,
    timeout: float,
    sample_memory: bool = False,
) -> RunResult:
    """Run ``python -m pytest -p no:cacheprovider <args>`` in ``cwd`` and measure it."""
    with tempfile.TemporaryDirectory(prefix="reuse-bench-run-") as scratch_dir:
        scratch = Path(scratch_dir)
        # One junit file per suite and command, replaced each run: every round is the same
        # command, as when a user runs it again (the plugin's spares key on the command line).
        command_id = hashlib.sha256("\0".join(args).encode()).hexdigest()[:12]
        junit = cwd.parent / f".{cwd.name}-{command_id}-junit.xml"
        junit.unlink(missing_ok=True)
        # One counter file per suite, emptied per run: a warm replica keeps the environment it
        # started with, so a fixture it rebuilds writes where the first run said.
        counter = cwd.parent / f".{cwd.name}-setups.txt"
        counter.write_text("")
        full_env = {**os.environ, **env, MARKER_ENV: marker, SETUP_COUNTER_ENV: str(counter)}
        full_env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
        full_env.pop("PYTEST_ADDOPTS", None)
        # Bytecode caching on, as users have it (some CI images and sandboxes turn it off).
        full_env.pop("PYTHONDONTWRITEBYTECODE", None)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={junit}",
            *args,
        ]
        with open(scratch / "out.txt", "w+") as out, open(scratch / "err.txt", "w+") as err:
            started = time.perf_counter()
            proc = psutil.Popen(
                command, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
            sampler = TreeSampler(proc.pid)
            returncode: int | None
            with sampler if sample_memory else contextlib.nullcontext(sampler):
                try:
                    returncode = proc.wait(timeout=timeout)
                except psutil.TimeoutExpired:
                    returncode = None
                    stop_processes([*proc.children(recursive=True), proc])
            seconds = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        setup_pids = counter.read_text().split() if counter.exists() else []
        # Beside the suite, which may sit directly in the temporary directory: not left there.
        counter.unlink(missing_ok=True)
        problem: str | None = None
        outcomes: dict[str, str] = {}
        if returncode is None:
            problem = f"timed out after {timeout:.0f} s"
        elif returncode not in (0, 1):
            problem = f"pytest exited {returncode}: {last_error_line(stderr, stdout)}"
        else:
            try:
                outcomes = junit_outcomes(junit)
            except ValueError as exc:
                problem = f"{exc}: {last_error_line(stderr, stdout)}"
        junit.unlink(missing_ok=True)
        return RunResult(
            seconds=seconds,
            returncode=returncode,
            outcomes=outcomes,
            setups=len(setup_pids),
            setup_processes=len(set(setup_pids)),
            peak_rss=sampler.peak_rss if sample_memory else None,
            peak_processes=sampler.peak_processes,
            problem=problem,
        )
