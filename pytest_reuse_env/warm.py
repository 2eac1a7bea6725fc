"""Where the registry of warm replicas lives, and a cheap look at it for a run that does not
use it (``--reuse=off``): warm replicas of the project may hold ports and files that a plain
run needs, and the user should know.

Imported by the plugin in every run, so it imports nothing heavy at module level: the registry
module (psutil, filelock) only once ``registry.json`` is known to exist.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["registry_directory", "warm_replicas_note"]


def registry_directory(config: pytest.Config) -> Path:
    """``<cache_dir>/reuse``, where pytest's cache lives (``.pytest_cache`` by default)."""
    try:
        configured = str(config.getini("cache_dir"))
    except ValueError:  # -p no:cacheprovider: the key is not even declared
        configured = ".pytest_cache"
    cache_dir = Path(os.path.expanduser(os.path.expandvars(configured)))
    return (cache_dir if cache_dir.is_absolute() else config.rootpath / cache_dir) / "reuse"


def warm_replicas_note(directory: Path) -> str | None:
    """One line if warm replicas of the registry at ``directory`` still run, else None.

    Reads ``registry.json`` without the lock (it is replaced whole, never written in place)
    and checks each pid: no pruning, no writing, milliseconds."""
    records_path = directory / "registry.json"
    if not records_path.is_file():
        return None
    from pytest_reuse_env.registry import live_pids

    pids = live_pids(records_path)
    if not pids:
        return None
    count = len(pids)
    return (
        f"reuse: off for this run, but {count} warm replica{'s' if count != 1 else ''} of this "
        f"project {'are' if count != 1 else 'is'} still running (pid{'s' if count != 1 else ''} "
        f"{', '.join(map(str, pids))}) and may hold resources such as ports or files; stop "
        f"{'them' if count != 1 else 'it'} with: pytest --reuse-stop"
    )
