"""What a warm replica was built from, and whether that still holds.

Two questions, two halves:

- **Environment fingerprint** (asked by the run before it attaches to a replica that outlived an
  earlier run): the interpreter, the installed distributions, the pytest arguments that shape
  collection, the rootdir, the ini file, selected environment variables and the plugins. Each
  component is a short hex digest or a readable string, so ``describe_difference`` can say which
  one changed. :func:`environment_key` hashes a policy and a fingerprint into the key under which
  the registry files replicas: a changed component means another environment, never a stale
  replica.
- **Import snapshot** (asked by a replica before it serves a run): the project files it has
  imported and their state then. :func:`changed_files` lists the ones that differ now.

  The rule: compare ``(mtime_ns, size)`` from ``os.stat``; a difference, or a file that is gone,
  is a change. Equal stat values mean unchanged, except for *racy* files (git's term): a file
  whose mtime was no more than :data:`RACY_WINDOW_NS` (2 s) before the snapshot, or after it,
  could be edited again within the filesystem's timestamp granularity without its stat values
  moving. For those the snapshot also keeps a blake2b digest of the content, and the check reads
  and compares it. So checks cost one ``stat`` per file plus one read per racy file. Two limits:
  a file edited between its import and the snapshot is recorded as edited (take the snapshot
  right after collection), and a tool that restores an older mtime on a same-size edit of a file
  that was not racy (``cp -p``, ``rsync -t``) goes unseen.

Pure functions over plain values: this module does not import pytest (the caller extracts what it
needs from pytest's config) and imports nothing from the rest of the package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final, TypeAlias, final

__all__ = [
    "COMPONENTS",
    "DEFAULT_ENV_VARS",
    "RACY_WINDOW_NS",
    "FileState",
    "ImportSnapshot",
    "changed_files",
    "describe_difference",
    "distributions_digest",
    "environment_fingerprint",
    "environment_key",
    "file_changed",
    "file_state",
    "installed_distributions_digest",
    "selected_variables",
    "snapshot_modules",
]

#: Environment variables a replica must share with the run that attaches to it (the ini key
#: ``reuse_env_vars`` replaces the list). An entry ending in ``*`` selects every variable with
#: that prefix. Chosen because they change what is imported (PATH, PYTHONPATH, VIRTUAL_ENV), how
#: pytest is configured (PYTEST_ADDOPTS, PYTEST_PLUGINS), or values tests observe
#: (PYTHONHASHSEED, LANG, LC_ALL, TZ); PYTEST_REUSE_ENV_* is the project's own opt-in namespace.
DEFAULT_ENV_VARS: Final[tuple[str, ...]] = (
    "PATH",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "VIRTUAL_ENV",
    "LANG",
    "LC_ALL",
    "TZ",
    "PYTEST_REUSE_ENV_*",
)

#: The fingerprint's components, in the order :func:`describe_difference` reports them.
COMPONENTS: Final[tuple[str, ...]] = (
    "python",
    "distributions",
    "args",
    "rootdir",
    "ini",
    "env",
    "plugins",
)

_CHANGED: Final[Mapping[str, str]] = {
    "python": "the Python interpreter changed",
    "distributions": "installed distributions changed",
    "args": "pytest arguments changed",
    "rootdir": "the rootdir changed",
    "ini": "the ini file changed",
    "env": "environment variables changed",
    "plugins": "pytest plugins changed",
}

#: Stands for a selected variable that is not set (a set variable has a hex digest).
_UNSET: Final[str] = "unset"

#: A file modified this close to its snapshot (or later) is "racy": also compare its content.
RACY_WINDOW_NS: Final[int] = 2_000_000_000


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _digest_json(value: object) -> str:
    return _digest(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8"))


# -- environment fingerprint -----------------------------------------------------------------


def environment_fingerprint(
    *,
    python: str,
    args: Sequence[str],
    rootdir: str,
    inifile: str | None,
    env: Mapping[str, str],
    env_vars: Sequence[str],
    plugins: Sequence[str] = (),
) -> dict[str, str]:
    """The named components of what a replica is built from (see :data:`COMPONENTS`).

    ``python`` is the interpreter the replicas run, normally ``sys.executable``: the component
    pairs it with this process's ``sys.version`` and installed distributions, so replicas must run
    the caller's interpreter. ``args`` are the invocation arguments that shape collection and
    fixtures, already filtered by the caller; their order counts. ``plugins`` are names; their
    order does not count.
    """
    return {
        "python": f"{python} {' '.join(sys.version.split())}",
        "distributions": installed_distributions_digest(),
        "args": _digest_json(list(args)),
        "rootdir": rootdir,
        "ini": _file_digest(inifile),
        "env": json.dumps(selected_variables(env, env_vars), sort_keys=True),
        "plugins": _digest_json(sorted(set(plugins))),
    }


def environment_key(policy_text: str, fingerprint: Mapping[str, str]) -> str:
    """A stable 16-hex key for a policy (its human form) built from ``fingerprint``."""
    return _digest_json([policy_text, sorted(fingerprint.items())])


@functools.cache
def installed_distributions_digest() -> str:
    """Digest of every installed distribution; computed once per process.

    A distribution with a ``RECORD`` (every one pip installs, editable ones too) stands for
    itself by that file's digest: it lists a hash of each installed file, the ``METADATA`` that
    holds its name and version among them, so a new version, or the same version reinstalled
    with new code, changes it. Reading the name and version instead parses each ``METADATA``
    as an e-mail message, about 0.5 ms a distribution on every run. One with no ``RECORD`` (an
    egg-info, a hand-made distribution) stands by its name and version.
    """
    return distributions_digest(
        _distribution_entry(dist) for dist in importlib.metadata.distributions()
    )


def _distribution_entry(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    try:
        record = dist.read_text("RECORD")
    except OSError:
        record = None
    if record is None:
        return str(dist.name), f"{dist.version} no-record"
    return "record", _digest(record.encode("utf-8", "surrogateescape"))


def distributions_digest(distributions: Iterable[tuple[str, str]]) -> str:
    """Digest of ``(name, version)`` pairs, whatever their order."""
    return _digest(
        "\n".join(sorted(f"{name}=={version}" for name, version in distributions)).encode()
    )


def selected_variables(env: Mapping[str, str], env_vars: Sequence[str]) -> dict[str, str]:
    """Each selected variable's value digest, or ``"unset"``; ``NAME*`` selects by prefix."""
    selected: dict[str, str] = {}
    for entry in env_vars:
        if entry.endswith("*"):
            prefix = entry[:-1]
            names = [name for name in env if name.startswith(prefix)]
        else:
            names = [entry]
        for name in names:
            value = env.get(name)
            selected[name] = (
                _UNSET if value is None else _digest(value.encode("utf-8", "surrogateescape"))
            )
    return selected


def _file_digest(path: str | None) -> str:
    if path is None:
        return "none"
    try:
        with open(path, "rb") as stream:
            return _digest(stream.read())
    except OSError as error:
        return f"unreadable: {os.strerror(error.errno) if error.errno else error}"


def describe_difference(old: Mapping[str, str], new: Mapping[str, str]) -> str | None:
    """One sentence naming the first component that differs, or None if none does."""
    extra = sorted((set(old) | set(new)) - set(COMPONENTS))
    for name in (*COMPONENTS, *extra):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if name == "env":
            variables = _changed_variables(before, after)
            if variables:
                return f"environment variables changed: {', '.join(variables)}"
        return _CHANGED.get(name, f"fingerprint component {name!r} changed")
    return None


def _changed_variables(before: str | None, after: str | None) -> list[str]:
    old, new = _variables(before), _variables(after)
    return sorted(
        name for name in set(old) | set(new) if old.get(name, _UNSET) != new.get(name, _UNSET)
    )


def _variables(component: str | None) -> dict[str, str]:
    try:
        value = json.loads(component or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(name): str(digest) for name, digest in value.items()}


# -- import snapshot ---------------------------------------------------------------------------


@final
@dataclass(frozen=True)
class FileState:
    """One imported file as it was at snapshot time."""

    mtime_ns: int
    size: int
    #: Content digest, kept only for racy files (see the module docstring).
    digest: str | None = None


#: Absolute (symlink-resolved) source path -> its state when the snapshot was taken. Entries are
#: independent, so snapshots taken at different times merge with ``dict.update``.
ImportSnapshot: TypeAlias = dict[str, FileState]

_EXCLUDED_DIRECTORY_NAMES: Final[frozenset[str]] = frozenset({"site-packages", "dist-packages"})


def snapshot_modules(
    modules: Mapping[str, ModuleType],
    roots: Sequence[str],
    *,
    extra_files: Iterable[str] = (),
    now_ns: int | None = None,
) -> ImportSnapshot:
    """The project files behind ``modules`` (``sys.modules``) and ``extra_files``, as they are now.

    A file counts if it lies under one of ``roots`` but not in a virtualenv (a directory with a
    ``pyvenv.cfg``, or this interpreter's prefixes) nor in ``site-packages``/``dist-packages``.
    A ``.pyc`` stands for its source when there is one. conftest.py files and test packages'
    ``__init__.py`` are modules in ``sys.modules`` like any other. ``now_ns`` (wall clock) is for
    tests; it decides which files are racy.
    """
    now = time.time_ns() if now_ns is None else now_ns
    real_roots = tuple(_as_directory(root) for root in roots)
    prefixes = tuple({_as_directory(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)})
    filenames = {getattr(module, "__file__", None) for module in list(modules.values())}
    filenames.update(extra_files)
    virtualenv_directories: dict[str, bool] = {}
    snapshot: ImportSnapshot = {}
    for filename in filenames:
        if not isinstance(filename, str) or not filename:
            continue
        path = _source_path(os.path.realpath(filename))
        root = next((root for root in real_roots if path.startswith(root)), None)
        if root is None or path.startswith(prefixes) or path in snapshot:
            continue
        relative = path[len(root) :].split(os.sep)
        if _EXCLUDED_DIRECTORY_NAMES.intersection(relative[:-1]):
            continue
        if _in_virtualenv(os.path.dirname(path), root, virtualenv_directories):
            continue
        state = file_state(path, now)
        if state is not None:
            snapshot[path] = state
    return snapshot


def changed_files(snapshot: Mapping[str, FileState]) -> list[str]:
    """Absolute paths of the snapshot's files that changed or are gone, sorted."""
    return sorted(path for path, state in snapshot.items() if file_changed(path, state))


def file_changed(path: str, state: FileState) -> bool:
    """Whether the file differs from ``state`` (or is gone): the module docstring's rule."""
    try:
        info = os.stat(path)
    except OSError:
        return True
    if (info.st_mtime_ns, info.st_size) != (state.mtime_ns, state.size):
        return True
    return state.digest is not None and _content_digest(path) != state.digest


def _as_directory(path: str) -> str:
    """``path`` resolved, with a trailing separator so prefix tests match whole names."""
    return os.path.join(os.path.realpath(path), "")


def _source_path(path: str) -> str:
    if not path.endswith(".pyc"):
        return path
    try:
        source = importlib.util.source_from_cache(path)
    except ValueError:  # a pyc outside __pycache__: sourceless, or legacy layout
        source = path[:-1]
    return source if os.path.exists(source) else path


def _in_virtualenv(directory: str, root: str, known: dict[str, bool]) -> bool:
    """Whether ``directory`` or an ancestor below ``root`` holds a ``pyvenv.cfg``."""
    if not directory.startswith(root):
        return False
    if directory not in known:
        known[directory] = os.path.exists(os.path.join(directory, "pyvenv.cfg")) or _in_virtualenv(
            os.path.dirname(directory), root, known
        )
    return known[directory]


def file_state(path: str, now_ns: int, *, digest_limit: int | None = None) -> FileState | None:
    """The regular file's state now (None: gone or not a regular file); racy files get a
    content digest, unless larger than ``digest_limit`` bytes (then stat values alone)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    digest = None
    small = digest_limit is None or info.st_size <= digest_limit
    if small and info.st_mtime_ns >= now_ns - RACY_WINDOW_NS:
        digest = _content_digest(path)
    return FileState(info.st_mtime_ns, info.st_size, digest)


def _content_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as stream:
            return hashlib.blake2b(stream.read(), digest_size=16).hexdigest()
    except OSError:
        return None
