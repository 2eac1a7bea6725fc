"""Replicas on other machines: host specs, host groups, placement, and code verification.

A *host* is an execnet spec in pytest-xdist's syntax with a capacity (``3*ssh=user@box//
chdir=/srv/proj``): where replicas may run, and how many at once. Hosts come from the
``reuse_hosts`` ini key (one a line; ``NAME: SPEC`` puts a host in group ``NAME``) and the
repeatable ``--reuse-tx`` option (which replaces the ungrouped lines). A policy's ``hosts``
field picks a group; without it, a policy uses the ungrouped hosts, and with none configured
(or ``hosts=local``), replicas are local popen processes as without this module.

Placement: the launcher asks :class:`HostPool` for the host of a group with the most free
capacity; a host whose replica could not start (unreachable, refused, a missing import) is
dropped for the rest of the run and its share goes to the others.

The replica side uses only :func:`first_difference` and :func:`relocate` (standard library
only at import time: this module may run in a host's interpreter).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, final

from pytest_reuse_env.policy import MAX_WAIT_SECONDS, parse_number

__all__ = [
    "DEFAULT_GROUP",
    "LOCAL_GROUP",
    "HostPool",
    "HostSpec",
    "HostTable",
    "first_difference",
    "parse_hosts",
    "project_files",
    "relocate",
]

#: The group of ``reuse_hosts`` lines without a ``NAME:`` prefix (and of ``--reuse-tx``).
DEFAULT_GROUP: Final = "default"
#: Not a group of hosts: this machine, replicas as local popen processes.
LOCAL_GROUP: Final = "local"
#: Seconds to reach a host and bootstrap (or rsync to) it before it counts as unreachable.
DEFAULT_HOST_TIMEOUT: Final = 60.0
#: Spec keys a host may use; ``id`` is the launcher's, ``via``/``vagrant_ssh`` are unsupported.
_ALLOWED_KEYS: Final = frozenset(
    {"ssh", "socket", "popen", "python", "chdir", "ssh_config", "nice", "dont_write_bytecode"}
)
_SSH_OPTIONS: Final = (
    "-o BatchMode=yes -o ConnectTimeout=15 -o ServerAliveInterval=10 -o ServerAliveCountMax=3"
)
_COUNT_RE: Final = re.compile(r"(\d+)\*(.*)")
_GROUP_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):\s+(\S.*)")
#: What ``--reuse-rsync`` never sends: version control, caches and virtual environments.
RSYNC_IGNORE: Final = (
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".nox",
    ".venv",
    "venv",
    "*.egg-info",
)
#: Variables that describe this machine, never forwarded to a replica on another host.
_LOCAL_ONLY_VARS: Final = frozenset({"PATH", "PYTHONPATH", "VIRTUAL_ENV", "HOME"})


class HostSpecError(ValueError):
    """A host spec breaks a rule; the message names the spec and the rule."""


@final
@dataclass(frozen=True)
class HostSpec:
    """One host: an execnet spec (without the count) and how many replicas it takes."""

    spec: str
    """The execnet spec, e.g. ``ssh=user@box//python=python3//chdir=/srv/proj``."""
    capacity: int
    """Replicas it runs at once (the ``N*`` prefix; 1 without one)."""
    group: str
    """``default`` for ungrouped lines and ``--reuse-tx``."""
    source: str
    """Where it was configured: ``reuse_hosts line 2`` or ``--reuse-tx``."""
    kind: str
    """``ssh``, ``socket`` or ``popen``."""
    name: str
    """Short label, unique in the run: the ssh host, ``HOST:PORT``, or ``popen``."""
    chdir: str | None = None
    python: str | None = None

    @property
    def same_machine(self) -> bool:
        """A popen host: the controller's paths are valid there."""
        return self.kind == "popen"

    @property
    def relocated(self) -> bool:
        """The project lives at ``chdir`` there, not at the controller's rootdir path."""
        return self.chdir is not None

    def gateway_spec(self, gateway_id: str, marker: str, ssh_log: str | None = None) -> str:
        """The spec for ``makegateway``: our id, and ``-X marker`` on the interpreter so a
        launch that hangs can find and kill its own process by command line. ssh never
        prompts, notices a dead connection within 30 s, and logs to ``ssh_log``."""
        python = self.python or ("python3" if self.kind == "ssh" else None)
        parts = []
        for part in self.spec.split("//"):
            if part.startswith("python="):
                continue
            if part.startswith("ssh="):
                options = _SSH_OPTIONS + (f" -E {ssh_log}" if ssh_log else "")
                part = f"ssh={options} {part[4:]}"
            parts.append(part)
        if self.kind != "socket":
            interpreter = python if python is not None else _local_python()
            parts.append(f"python={interpreter} -X {marker}")
        return "//".join([*parts, f"id={gateway_id}"])

    def describe(self) -> str:
        count = f"{self.capacity}*" if self.capacity != 1 else ""
        return f"{count}{self.spec} ({self.source})"


def _local_python() -> str:
    import sys

    return sys.executable


def parse_spec(text: str, *, group: str, source: str) -> HostSpec:
    """One host from ``[N*]SPEC``; :class:`HostSpecError` names the rule it breaks."""
    text = text.strip()
    capacity = 1
    counted = _COUNT_RE.fullmatch(text)
    if counted is not None:
        capacity, text = int(counted[1]), counted[2].strip()
        if capacity < 1:
            raise HostSpecError(f"the count before '*' must be at least 1, got {capacity}")
    values: dict[str, str | bool] = {}
    for part in text.split("//"):
        key, eq, value = part.partition("=")
        if not key:
            raise HostSpecError(f"empty key in {text!r} (parts are separated by '//')")
        if key.startswith("env:"):
            values[key] = value
            continue
        if key not in _ALLOWED_KEYS:
            known = ", ".join(sorted(_ALLOWED_KEYS | {"env:NAME"}))
            raise HostSpecError(f"unsupported key {key!r} in {text!r}; supported: {known}")
        if key in values:
            raise HostSpecError(f"duplicate key {key!r} in {text!r}")
        values[key] = value if eq else True
    kinds = [k for k in ("ssh", "socket", "popen") if k in values]
    if len(kinds) != 1:
        raise HostSpecError(
            f"{text!r} must name exactly one of ssh=TARGET, socket=HOST:PORT or popen"
        )
    kind = kinds[0]
    given = values[kind]
    if kind in ("ssh", "socket") and (given is True or not str(given).strip()):
        raise HostSpecError(f"{kind}= needs a value in {text!r}")
    if kind == "popen" and given is not True:
        raise HostSpecError(f"popen takes no value in {text!r} (use popen//python=PATH)")
    value = str(given)
    if kind == "socket":
        host, colon, port = value.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise HostSpecError(f"socket= must be HOST:PORT, got {value!r}")
        name = str(value)
    elif kind == "ssh":
        target = str(value).split()[-1]
        name = target.rpartition("@")[2] or target
    else:
        name = "popen"
    for key in ("python", "chdir", "ssh_config"):
        if values.get(key) is True or values.get(key) == "":
            raise HostSpecError(f"{key}= needs a value in {text!r}")
    python, chdir = values.get("python"), values.get("chdir")
    return HostSpec(
        spec=text,
        capacity=capacity,
        group=group,
        source=source,
        kind=kind,
        name=name,
        chdir=str(chdir) if isinstance(chdir, str) else None,
        python=str(python) if isinstance(python, str) else None,
    )


@final
@dataclass(frozen=True)
class HostTable:
    """Every configured host by group, and how to reach them."""

    groups: Mapping[str, tuple[HostSpec, ...]] = field(default_factory=dict, hash=False)
    rsync: bool = False
    """``--reuse-rsync``: send the rootdir to each relocated host before its first replica."""
    timeout: float = DEFAULT_HOST_TIMEOUT
    """``reuse_host_timeout``: bound on reaching, bootstrapping and rsyncing a host."""

    def known_groups(self) -> list[str]:
        return [DEFAULT_GROUP, *(g for g in self.groups if g != DEFAULT_GROUP), LOCAL_GROUP]

    def hosts_for(self, group: str | None) -> tuple[HostSpec, ...] | None:
        """The hosts of a policy's ``hosts`` field; None: local popen replicas."""
        if group == LOCAL_GROUP:
            return None
        return self.groups.get(group or DEFAULT_GROUP) or None

    def check_group(self, group: str | None, where: str) -> None:
        """A ``pytest.UsageError`` naming ``where`` if ``group`` is not configured."""
        if group is None or group in (DEFAULT_GROUP, LOCAL_GROUP) or group in self.groups:
            return
        import pytest

        raise pytest.UsageError(
            f"{where}: hosts={group!r} names no host group; known groups: "
            f"{', '.join(self.known_groups())} (define one with 'NAME: SPEC' lines in the "
            "reuse_hosts ini key)"
        )


def parse_hosts(
    lines: Sequence[str],
    cli_specs: Sequence[str],
    *,
    source: str,
    rsync: bool = False,
    timeout: float = DEFAULT_HOST_TIMEOUT,
) -> HostTable:
    """The host table from ``reuse_hosts`` lines and ``--reuse-tx`` specs.

    ``source`` says where the lines came from, for messages. Raises ``pytest.UsageError``
    naming the line (or option), the value and the rule.
    """
    import pytest

    groups: dict[str, list[HostSpec]] = {}
    hosts: list[HostSpec] = []
    entries: list[tuple[str, str, str, str]] = []  # (group, spec text, where, short source)
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        grouped = _GROUP_RE.fullmatch(line)
        group, text = (grouped[1], grouped[2]) if grouped else (DEFAULT_GROUP, line)
        where = f"reuse_hosts line {number} {line!r}"
        if group == LOCAL_GROUP:
            raise pytest.UsageError(
                f"{where}: group name 'local' is reserved (it means this machine) ({source})"
            )
        if cli_specs and group == DEFAULT_GROUP:
            continue  # --reuse-tx replaces the ungrouped lines
        entries.append((group, text, f"{where} ({source})", f"reuse_hosts line {number}"))
    entries += [(DEFAULT_GROUP, spec, f"--reuse-tx {spec!r}", "--reuse-tx") for spec in cli_specs]
    for group, text, where, short in entries:
        try:
            host = parse_spec(text, group=group, source=short)
        except HostSpecError as error:
            raise pytest.UsageError(f"{where}: {error}") from None
        if rsync and host.kind != "popen" and host.chdir is None:
            raise pytest.UsageError(
                f"{where}: --reuse-rsync needs chdir=PATH on every ssh and socket host (the "
                "directory the project is sent to)"
            )
        groups.setdefault(group, []).append(host)
        hosts.append(host)
    # Labels must tell hosts apart: a second "127.0.0.1" becomes "127.0.0.1#2".
    seen: dict[str, int] = {}
    renamed: dict[int, HostSpec] = {}
    for host in hosts:
        seen[host.name] = seen.get(host.name, 0) + 1
        if seen[host.name] > 1:
            renamed[id(host)] = _replace_name(host, f"{host.name}#{seen[host.name]}")
    final_groups = {
        group: tuple(renamed.get(id(h), h) for h in members) for group, members in groups.items()
    }
    return HostTable(groups=final_groups, rsync=rsync, timeout=timeout)


def _replace_name(host: HostSpec, name: str) -> HostSpec:
    import dataclasses

    return dataclasses.replace(host, name=name)


# -- placement ---------------------------------------------------------------------------------

T = TypeVar("T")


@final
class HostPool(Generic[T]):
    """Which replica runs on which host, which hosts are dropped, and where the next goes.

    ``occupies(replica)`` says whether a replica still holds its host's capacity.
    """

    def __init__(self, occupies: Callable[[T], bool]) -> None:
        self._occupies = occupies
        self._replicas: dict[HostSpec, list[T]] = {}
        #: Hosts dropped for this run, with why.
        self.down: dict[HostSpec, str] = {}

    def used(self, host: HostSpec) -> int:
        return sum(1 for r in self._replicas.get(host, []) if self._occupies(r))

    def pick(self, hosts: Iterable[HostSpec]) -> HostSpec | None:
        """The usable host with the most free capacity (first configured on a tie), or None
        when every usable host is full."""
        best: HostSpec | None = None
        best_free = 0
        for host in hosts:
            free = host.capacity - self.used(host)
            if host not in self.down and free > best_free:
                best, best_free = host, free
        return best

    def add(self, host: HostSpec, replica: T) -> None:
        self._replicas.setdefault(host, []).append(replica)

    def host_of(self, replica: T) -> HostSpec | None:
        for host, replicas in self._replicas.items():
            if any(r is replica for r in replicas):
                return host
        return None

    def drop(self, host: HostSpec, reason: str) -> None:
        self.down.setdefault(host, reason)

    def usable(self, hosts: Iterable[HostSpec]) -> list[HostSpec]:
        return [h for h in hosts if h not in self.down]


# -- what the replica must have: files and paths -----------------------------------------------


def digest(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def project_files(
    rootdir: Path, test_files: Iterable[Path], conftests: Iterable[str], inifile: Path | None
) -> dict[str, str]:
    """``{path relative to rootdir: sha256}`` of the test modules, conftests and ini file."""
    found: dict[str, str] = {}
    for path in [*test_files, *map(Path, conftests), *([inifile] if inifile else [])]:
        try:
            relative = Path(path).resolve().relative_to(rootdir.resolve())
            found[relative.as_posix()] = digest(path)
        except (ValueError, OSError):
            continue  # outside the rootdir (a plugin's conftest) or gone: not the project's
    return dict(sorted(found.items()))


def first_difference(root: str, expected: Mapping[str, str]) -> str | None:
    """The first project file (sorted) missing or different under ``root``, said in words."""
    for relative, wanted in sorted(expected.items()):
        path = os.path.join(root, relative)
        try:
            if digest(path) != wanted:
                return f"{relative} differs from the controller's copy"
        except OSError:
            return f"{relative} is missing"
    return None


def forwarded_environ(environ: Mapping[str, str], env_vars: Sequence[str]) -> dict[str, str]:
    """The ``reuse_env_vars`` worth sending to another machine (not PATH-like ones)."""
    sent = {}
    for name, value in environ.items():
        if name in _LOCAL_ONLY_VARS:
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in env_vars):
            sent[name] = value
    return sent


def relocate(start: dict[str, Any], host: Mapping[str, Any]) -> str:
    """Rewrite a START payload for the machine it arrived on (runs inside the replica).

    The controller's rootdir becomes this host's project root (its working directory after
    ``chdir``); interpreter paths outside the project are dropped (the host has its own);
    temporary files go to a fresh local directory unless the controller's paths are valid
    here too. Returns the project root here.
    """
    old_root = host["controller_root"]
    new_root = os.getcwd() if host["relocated"] else old_root

    def move(text: str) -> str:
        return text.replace(old_root, new_root) if host["relocated"] else text

    def inside(path: str) -> bool:
        return path == old_root or path.startswith(old_root.rstrip("/") + "/")

    start["args"] = [move(a) for a in start["args"]]
    start["invocation_dir"] = move(start["invocation_dir"])
    start["sys_path"] = [move(p) for p in start["sys_path"] if inside(p)]
    if not host["same_machine"]:
        scratch = tempfile.mkdtemp(prefix=f"pytest-reuse-{start['replica_id'].split('@')[0]}-")
        start["basetemp"] = os.path.join(scratch, "basetemp")
        start["log_path"] = os.path.join(scratch, "replica.log")
        start["option_overrides"]["basetemp"] = start["basetemp"]
    os.environ.update(host["environ"])
    return new_root


def scratch_of(start: Mapping[str, Any], host: Mapping[str, Any]) -> str | None:
    """The directory ``relocate`` made for this replica's log and temporary files on another
    machine (removed when the replica ends: nothing on that machine reads it after), or None."""
    return None if host["same_machine"] else os.path.dirname(start["log_path"])


# -- configuration -----------------------------------------------------------------------------


def register_options(parser: Any) -> None:
    """Declare ``reuse_hosts``, ``reuse_host_timeout``, ``--reuse-tx`` and ``--reuse-rsync``."""
    parser.addini(
        "reuse_hosts",
        "where replicas run, one execnet spec a line as in pytest-xdist's --tx: "
        "[N*]ssh=USER@HOST//python=python3//chdir=PATH, [N*]popen//python=PATH, "
        "[N*]socket=HOST:PORT (trusted networks only); N is the host's capacity; 'GROUP: SPEC' "
        "puts a host in a group for policies with hosts=GROUP (default: none, replicas are "
        "local processes)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "reuse_host_timeout",
        "seconds to reach a host, start its interpreter and (with --reuse-rsync) send it the "
        "project before it counts as unreachable: a number > 0 (default: 60)",
        type="string",
        default="",
    )
    group = parser.getgroup("reuse-env")
    group.addoption(
        "--reuse-tx",
        action="append",
        dest="reuse_tx",
        default=[],
        metavar="SPEC",
        help="a host for replicas ([N*]ssh=..., popen//python=..., socket=HOST:PORT), "
        "repeatable; replaces the ungrouped reuse_hosts lines",
    )
    group.addoption(
        "--reuse-rsync",
        action="store_true",
        default=False,
        help="send the rootdir (without VCS folders, caches and virtual environments) to each "
        "host's chdir before its first replica starts",
    )


def from_config(config: Any, hosts_source: str, timeout_source: str) -> HostTable:
    """The host table of a run; ``pytest.UsageError`` for any bad value."""
    import pytest

    text = str(config.getini("reuse_host_timeout")).strip()
    timeout = DEFAULT_HOST_TIMEOUT
    if text:
        try:
            timeout = parse_number(text)
        except ValueError:
            timeout = float("nan")
        rule = "a number of seconds > 0"
        if timeout > MAX_WAIT_SECONDS:
            rule += f" and at most {MAX_WAIT_SECONDS:.0f} (a year)"
        if not (0 < timeout <= MAX_WAIT_SECONDS):
            raise pytest.UsageError(
                f"reuse_host_timeout must be {rule}, got {text!r} ({timeout_source})"
            )
    return parse_hosts(
        config.getini("reuse_hosts"),
        config.getoption("reuse_tx") or [],
        source=hosts_source,
        rsync=bool(config.getoption("reuse_rsync")),
        timeout=timeout,
    )
