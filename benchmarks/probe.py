"""What of pytest-reuse-env this interpreter can run, and how to switch it on and off.

The plugin is measured as installed (the ``reuse_env`` pytest11 entry point, loaded with
``-p reuse_env``) or, when it is not installed, from this checkout's source, through a
temporary entry point on ``PYTHONPATH``. A short ``pytest --help``
probe decides whether it loads and knows ``--reuse``; if not, every plugin contender reports
"not available" with the probe's error, and the baselines run without the plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ENTRY_POINT = "reuse_env"
SOURCE_MODULE = "pytest_reuse_env.plugin"
REPO_ROOT = Path(__file__).resolve().parent.parent
PROBE_TIMEOUT = 60.0


@dataclass(frozen=True)
class PluginSetup:
    """How contenders load the plugin (``on_args``) or keep it out (``off_args``).

    ``env`` applies to every contender: with the plugin from source, the baselines see it too and
    turn it off with ``--reuse=off``, as they would with it installed.
    """

    on_args: tuple[str, ...]
    off_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    origin: str = ""
    unavailable: str | None = None


def last_error_line(*texts: str) -> str:
    """The last line that names an error, searching each text in turn (stderr first)."""
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("NOTE:"):
                continue
            if "Error" in line or "error:" in line or "ERROR" in line:
                return line[:300]
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return "no output"


def probe_help(args: tuple[str, ...], env: dict[str, str]) -> str | None:
    """None when ``pytest <args> --help`` loads the plugin and lists ``--reuse``, else why not."""
    full_env = {**os.environ, **env}
    full_env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    full_env.pop("PYTEST_ADDOPTS", None)
    with tempfile.TemporaryDirectory(prefix="reuse-bench-probe-") as cwd:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--help"],
                cwd=cwd,
                env=full_env,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"pytest --help with the plugin timed out after {PROBE_TIMEOUT:.0f} s"
    if done.returncode != 0:
        return last_error_line(done.stderr, done.stdout)
    if "--reuse" not in done.stdout:
        return "the plugin loads but has no --reuse option"
    return None


def source_shim(directory: Path) -> dict[str, str]:
    """Environment that makes this checkout's plugin loadable as ``-p reuse_env`` uninstalled.

    A minimal ``.dist-info`` on ``PYTHONPATH`` declares the same pytest11 entry point as
    pyproject.toml, so pytest, and every replica the plugin starts, loads it as if installed.
    """
    info = directory / "pytest_reuse_env_bench_shim-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: pytest-reuse-env-bench-shim\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(f"[pytest11]\n{ENTRY_POINT} = {SOURCE_MODULE}\n")
    path = [str(directory), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}


def detect(scratch: Path) -> PluginSetup:
    """Find the plugin; ``scratch`` is a directory that lives as long as the benchmarks.

    Probed in subprocesses run from an empty directory: the harness's own ``sys.path`` (which
    holds the checkout, and any ``.egg-info`` in it) is not what a contender sees.
    """
    on = ("-p", ENTRY_POINT)
    installed_problem = probe_help(on, {})
    if installed_problem is None:
        return PluginSetup(on_args=on, off_args=("--reuse=off",), origin="installed")
    env = source_shim(scratch)
    source_problem = probe_help(on, env)
    if source_problem is None:
        return PluginSetup(on_args=on, off_args=("--reuse=off",), env=env, origin="source checkout")
    # Baselines then run without the shim and with the plugin blocked, should it be installed.
    return PluginSetup(
        on_args=on,
        off_args=("-p", f"no:{ENTRY_POINT}"),
        origin="unavailable",
        unavailable=f"installed: {installed_problem}; from source: {source_problem}",
    )


IMPORT_COST_ROUNDS = 11
_IMPORT_COST = f"""
import time
import pytest
started = time.perf_counter()
import {SOURCE_MODULE}
print(time.perf_counter() - started)
"""


def plugin_import_cost(plugin: PluginSetup) -> float | None:
    """Seconds the plugin's own modules take to import into an interpreter that has already
    imported pytest (as every pytest run has), median of fresh interpreters, bytecode caching
    on; None if it cannot be measured."""
    env = {**os.environ, **plugin.env}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for _ in range(IMPORT_COST_ROUNDS):
        try:
            done = subprocess.run(
                [sys.executable, "-c", _IMPORT_COST],
                env=env,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                check=True,
            )
            times.append(float(done.stdout.strip()))
        except (subprocess.SubprocessError, ValueError):
            return None
    times.sort()
    return times[len(times) // 2]
