"""Spare replicas for a command that started run-scoped replicas the last time it ran.

A run-scoped replica costs a whole pytest start-up before its first test: the interpreter,
pytest's imports, the plugins, the conftests and the collection. It starts once the first
routed test is collected, so a run of quick tests waits on it. When the same command (the same
interpreter, directory and arguments) started run-scoped replicas last time, the plugin starts
as many *spare* interpreters as soon as pytest has read its configuration, before the conftests
are loaded: they import pytest and the replica side while this process still starts up and
collects, then wait. A launch hands a spare its START instead of starting a process
(``controller/launch/spare.py``); spares nothing took are ended once collection is done, and a
command that started none forgets its hint.

The hints are one small file in the registry directory (``<cache_dir>/reuse/prestart.json``):
a count per command, for the last ``MAX_COMMANDS`` commands. A run of a command with no hint
reads that file and nothing more; a run that routes nothing and had no hint never touches it.

A second file, ``every-file.json``, names per command the environments that had a routed test
in every file its last run collected (their policies' ini form, ``ReusePolicy.describe``). They
start their replicas at session start, before this process collects (the plugin's ``Router``),
and those collect the run's arguments alongside it, as under ``reuse_all``: their list of files
would have been every file anyway, and waiting for it put the replicas' collection after this
process's. A hint gone stale costs only time: a policy no longer used starts replicas that get
no test and end with the run; a test file added since, with no test of that environment, is
collected by its replicas too, as under ``reuse_all``.

A third file, ``whole-run.json``, names per command the environments whose run-scoped
replicas collect every file of the run rather than only their tests' (``whole_run``): a
replica with its list could not serve one of that command's runs, and each later run would
pay for finding it out again.

The pytest process, before the controller exists: standard library and pytest only (the
registry's directory helpers once a hint is written).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Final

import pytest

from pytest_reuse_env.protocol import REPLICA_ENV_VAR
from pytest_reuse_env.warm import registry_directory

if TYPE_CHECKING:
    from pytest_reuse_env.controller.launch.spare import Spares

HINTS_FILE: Final = "prestart.json"
#: Environments with a routed test in every file, per command (``every_file``).
EVERY_FILE_FILE: Final = "every-file.json"
#: Environments whose replicas collect every file, per command (``whole_run``).
WHOLE_RUN_FILE: Final = "whole-run.json"
#: Commands remembered; the oldest hint goes first.
MAX_COMMANDS: Final = 32
#: The spares started this run (``controller/launch/spare.py``), for the launcher to take.
SPARES: Final[pytest.StashKey[Spares]] = pytest.StashKey()
#: Spares to fork once pytest has loaded its plugins (``fork_spares``).
FORK_PENDING: Final[pytest.StashKey[int]] = pytest.StashKey()
#: This command's ``every_file`` entry, once read.
EVERY_FILE: Final[pytest.StashKey[list[str]]] = pytest.StashKey()


def command_key(config: pytest.Config) -> str:
    """What identifies "the same command": interpreter, directory and arguments (with
    ``PYTEST_ADDOPTS``)."""
    params = config.invocation_params
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    text = json.dumps([sys.executable, str(params.dir), list(params.args), addopts])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _limit() -> int:
    return max(1, os.cpu_count() or 1)


def _load(config: pytest.Config, name: str) -> dict[str, Any]:
    """One hints file's commands (empty when it is missing, unreadable or not an object)."""
    try:
        with open(registry_directory(config) / name, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read(config: pytest.Config) -> dict[str, int]:
    data = _load(config, HINTS_FILE)
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int)}


def hinted(config: pytest.Config) -> int:
    """How many spares to start for this command (0: none), never more than the machine has
    cores (the controller's own limit on replicas)."""
    return min(max(_read(config).get(command_key(config), 0), 0), _limit())


def start_spares(config: pytest.Config) -> None:
    """Start the spares this command's hint asks for, as early as the plugin is registered;
    they end with the run (``config.add_cleanup``, else at exit) if no launch takes them. Not
    in a replica's or an xdist worker's own pytest (their commands are never hinted; this
    saves the read).
    A command that starts no replica (``--reuse=off``, ``--collect-only``, ``--reuse-status``)
    has no hint: its runs never start spares.
    Where spares may be forked from this process (``controller/launch/fork.py``), they are
    forked a little later, once pytest has loaded every plugin and before it loads a
    conftest (``fork_spares``): a forked spare needs none of those imports again."""
    if os.environ.get(REPLICA_ENV_VAR) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    count = hinted(config)
    if not count:
        return
    from pytest_reuse_env.controller.launch.fork import why_not_fork

    if why_not_fork() is None:
        config.stash[FORK_PENDING] = count
    else:
        _start(config, count, fork=False)


def fork_spares(config: pytest.Config) -> None:
    """The spares ``start_spares`` left to fork: forked now (pytest has loaded its plugins
    and not yet its conftests), or popen ones where forking is no longer safe."""
    _start_pending(config, fork=True)


def start_pending(config: pytest.Config) -> None:
    """Spares still waiting to be forked at configure time (the plugin was registered too late
    for ``fork_spares``, from a conftest): popen ones now."""
    _start_pending(config, fork=False)


def _start_pending(config: pytest.Config, *, fork: bool) -> None:
    count = config.stash.get(FORK_PENDING, 0)
    if count:
        del config.stash[FORK_PENDING]
        _start(config, count, fork=fork)


def _start(config: pytest.Config, count: int, *, fork: bool) -> None:
    from pytest_reuse_env.controller.launch.spare import Spares

    spares = config.stash[SPARES] = Spares(count, fork=fork)
    config.add_cleanup(spares.end)
    # A start that fails before pytest would run the config's cleanups (a conftest that
    # cannot be imported): still ended, by pid, before this process exits.
    atexit.register(spares.end)


def remember(config: pytest.Config, started: int) -> None:
    """Record how many run-scoped replicas this command started by the end of collection
    (0 forgets it). A hint that cannot be written is only a slower next start: no error."""
    key = command_key(config)
    hints = _read(config)
    if hints.get(key, 0) == started:
        return
    hints.pop(key, None)
    if started > 0:
        hints[key] = started  # last: the newest
    _write(config, HINTS_FILE, hints)


def every_file(config: pytest.Config) -> list[str]:
    """The environments (policies' ini form) that had a routed test in every file this
    command's last run collected: their replicas start at session start and collect the run's
    arguments. Read only for a command with a hint."""
    return _every_file(config) if hinted(config) else []


def _every_file(config: pytest.Config) -> list[str]:
    """This command's ``every_file`` entry, read once a run."""
    described = config.stash.get(EVERY_FILE, None)
    if described is None:
        entry = _load(config, EVERY_FILE_FILE).get(command_key(config))
        listed = entry if isinstance(entry, list) else []
        described = config.stash[EVERY_FILE] = [d for d in listed if isinstance(d, str)]
    return described


def remember_every_file(config: pytest.Config, described: list[str]) -> None:
    """Record this run's ``every_file`` environments where they changed; none forgets the
    command's entry. Like ``remember``, no error when it cannot be written."""
    if described == _every_file(config):
        return
    config.stash[EVERY_FILE] = described
    data = _load(config, EVERY_FILE_FILE)
    key = command_key(config)
    data.pop(key, None)
    if described:
        data[key] = described  # last: the newest
    _write(config, EVERY_FILE_FILE, data)


def whole_run(config: pytest.Config) -> dict[str, str]:
    """Environments whose run-scoped replicas collect every file of this command's runs (a
    replica that collected only its tests' files could not serve one of them: see
    ``controller/launch/collect.py``) -> why."""
    reasons = _load(config, WHOLE_RUN_FILE).get(command_key(config))
    if not isinstance(reasons, dict):
        return {}
    return {k: v for k, v in reasons.items() if isinstance(k, str) and isinstance(v, str)}


def remember_whole_run(config: pytest.Config, reasons: dict[str, str]) -> None:
    """Add environments that fell back to every file in this run (``whole_run``)."""
    data = _load(config, WHOLE_RUN_FILE)
    key = command_key(config)
    known = data.pop(key, None)
    data[key] = {**(known if isinstance(known, dict) else {}), **reasons}  # last: the newest
    _write(config, WHOLE_RUN_FILE, data)


def _write(config: pytest.Config, name: str, data: dict[str, Any]) -> None:
    """Replace one hints file (the last ``MAX_COMMANDS`` commands' entries); one that cannot
    be written is only a slower next run: no error."""
    from pytest_reuse_env.registry_files import RegistryError, private_directory

    while len(data) > MAX_COMMANDS:
        del data[next(iter(data))]
    directory = registry_directory(config)
    temporary = directory / f"{name}.{os.getpid()}"
    try:
        private_directory(directory)
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temporary, directory / name)
    except (OSError, RegistryError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
