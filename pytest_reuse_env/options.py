"""Ini keys, command-line options and ``@pytest.mark.reuse`` resolution.

Everything a user can get wrong here becomes a :class:`pytest.UsageError` that names where the
value came from (ini key, ``-o`` override, command-line option or marker with its nodeid), the
bad value and the rule, so pytest stops with exit code 4 before any replica starts.
This module knows nothing of processes.
"""

from __future__ import annotations

import math
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, final

import pytest

from pytest_reuse_env import hostspec as _hosts
from pytest_reuse_env import protocol
from pytest_reuse_env.fingerprint import DEFAULT_ENV_VARS
from pytest_reuse_env.policy import (
    FIELDS,
    MAX_WAIT_SECONDS,
    PolicyError,
    ReusePolicy,
    parse_field,
    parse_number,
)

__all__ = [
    "MARKER_HELP",
    "ReuseSettings",
    "register_options",
    "resolve_item_policy",
    "resolve_policies",
]

#: Seconds a replica may take to start and collect before it is killed.
DEFAULT_START_TIMEOUT: Final = 300.0

MARKER_HELP: Final = (
    "reuse(policy='default', **fields): run this test in a warm, reusable replica process. "
    "policy: a name from the reuse_policies ini key, 'default', a ReusePolicy, or 'off'/False "
    "to run the test in the pytest process even under --reuse-all. fields "
    f"({', '.join(spec.name for spec in FIELDS)}) override that policy's values."
)

# Names that cannot be given to a named policy: they already mean something to reuse_all.
_RESERVED_NAMES: Final = ("default", "off")
# An ini value read as an int is ASCII digits: int() would also take "²"-like digits of any script.
_COUNT_RE: Final = re.compile(r"[0-9]+")
# A reuse_env_vars entry: a variable name, or a prefix then "*".
_ENV_VAR_RE: Final = re.compile(r"[^=*\s\x00]+\*?")


@final
@dataclass(frozen=True)
class IniKey:
    """A ``reuse_*`` ini key that is not a field of the default policy (those come from
    ``policy.FIELDS``); its value is read and checked in :meth:`ReuseSettings.from_config`."""

    name: str
    type: Literal["string", "args", "linelist"]
    help: str
    default: str = ""
    """For a "string" key; "" means not set. List keys default to an empty list."""


#: Every ini key besides the policy fields' (``reuse_hosts`` and ``reuse_host_timeout`` are
#: declared with the host table, in ``hostspec``).
INI_KEYS: Final = (
    IniKey(
        "reuse_policies",
        "linelist",
        "named reuse policies, one a line: 'NAME: key=value ...' (keys as in the reuse_* ini "
        "keys, without the prefix); fields not given come from the default policy "
        "(default: none)",
    ),
    IniKey(
        "reuse_env_vars",
        "args",
        "environment variables whose values a warm replica (scope=global) must share with the "
        "run that uses it; a trailing * matches a prefix (default: PATH PYTHONPATH "
        "PYTHONHASHSEED PYTEST_ADDOPTS PYTEST_PLUGINS VIRTUAL_ENV LANG LC_ALL TZ "
        "PYTEST_REUSE_ENV_*)",
    ),
    IniKey(
        "reuse_leaks",
        "string",
        "what a replica does when a test leaves state behind (environment variables, working "
        "directory, sys.path, threads, open files, child processes, asyncio tasks, memory): "
        "'warn' (a warning on that test), 'recycle' (warn and replace the replica), 'fail' "
        "(the test fails), or 'off' (default: warn)",
        default="warn",
    ),
    IniKey(
        "reuse_leaks_ignore",
        "linelist",
        "leaks not to report, one a line: env:NAME, env:PREFIX_*, thread:NAME*, cwd, sys.path, "
        "fds, children, tasks, memory (default: none)",
    ),
    IniKey(
        "reuse_leak_memory_mib",
        "string",
        "resident memory growth over one test that counts as a leak, in MiB (default: 64)",
        default="64",
    ),
    IniKey(
        "reuse_teardown_timeout",
        "string",
        "seconds a replica may spend tearing its fixtures down when it ends before it is "
        "killed (default: 60)",
        default="60",
    ),
    IniKey(
        "reuse_max_restarts",
        "string",
        "replica crashes an environment survives before its remaining tests are reported as "
        "not run: an int >= 0 (default: 4 x the policy's max replicas)",
    ),
    IniKey(
        "reuse_replica_limit",
        "string",
        "the most replicas one environment runs at once on this machine: a policy asking for "
        "more is clamped, with a note in the summary; an int >= 1 (default: the machine's "
        "cores)",
    ),
    IniKey(
        "reuse_start_timeout",
        "string",
        "seconds a replica may take to start and collect before it is killed and its tests "
        "fail: a number > 0 (default: 300)",
    ),
    IniKey(
        "reuse_reload",
        "string",
        "'on': a warm replica re-imports edited project and test modules (and rebuilds the "
        "fixtures that depend on them) instead of being replaced; 'off': any edit means a "
        "fresh replica (default: on)",
        default="on",
    ),
    IniKey(
        "reuse_reload_exclude",
        "linelist",
        "files whose change always means a fresh replica rather than a re-import: glob "
        "patterns, relative to the invocation directory or absolute, one a line "
        "(default: none)",
    ),
    IniKey(
        "reuse_all",
        "string",
        "name of a reuse policy ('default' for the default one) applied to every test without "
        "a reuse marker; empty or 'off' means none (default: empty)",
    ),
)


def register_options(parser: pytest.Parser) -> None:
    """Declare the ``reuse_*`` ini keys and the ``reuse-env`` command-line options."""
    for spec in FIELDS:
        if spec.ini_key is not None:
            # Not set = empty: the defaults live in ReusePolicy, in one place.
            parser.addini(
                spec.ini_key,
                f"{spec.help} (default: {spec.default_text})",
                type=spec.ini,
                default="" if spec.ini == "string" else [],
            )
    for key in INI_KEYS:
        parser.addini(
            key.name,
            key.help,
            type=key.type,
            default=key.default if key.type == "string" else [],
        )

    group = parser.getgroup("reuse-env", "run tests in warm, reusable replica processes")
    _hosts.register_options(parser)
    group.addoption(
        "--reuse",
        choices=("on", "off"),
        default="on",
        dest="reuse",
        help="'off' runs plain pytest: reuse markers and reuse_* ini keys are ignored "
        "(default: on)",
    )
    group.addoption(
        "--reuse-status",
        action="store_true",
        default=False,
        help="list this project's warm replicas (scope=global) and exit",
    )
    group.addoption(
        "--reuse-stop",
        action="store_true",
        default=False,
        help="stop this project's warm replicas (their finalizers run) and exit",
    )
    group.addoption(
        "--reuse-fresh",
        action="store_true",
        default=False,
        help="stop this project's warm replicas before the run, so it starts cold",
    )
    group.addoption(
        "--reuse-verify-cold",
        action="store_true",
        default=False,
        help="re-run each test that failed in a warm replica once in a fresh one, and say in "
        "its report whether it fails only when warm (the outcome stays the original)",
    )
    group.addoption(
        "--reuse-watch",
        action="store_true",
        default=False,
        help="run the selection, then watch the rootdir: on every save re-run the tests it "
        "affects (and the last failures) first, then the rest, in the same warm replicas; "
        "keys: Enter all, f failures, p file pattern, k -k expression, q quit",
    )
    group.addoption(
        "--reuse-watch-affected",
        action="store_true",
        default=False,
        help="with --reuse-watch: after a save run only the affected tests and the last "
        "failures, not the rest of the selection",
    )
    group.addoption(
        "--reuse-report",
        dest="reuse_report",
        metavar="PATH",
        default=None,
        help="write what reuse did (replicas, setup times, warm and cold tests) to PATH as "
        "JSON; schema in pytest_reuse_env/summary.py",
    )
    group.addoption(
        "--reuse-all",
        dest="reuse_cli_all",
        metavar="NAME",
        default=None,
        help="reuse policy for every test without a reuse marker; overrides the reuse_all ini "
        "key ('default', a name from reuse_policies, or 'off')",
    )
    for spec in FIELDS:
        if spec.flag is not None:
            group.addoption(
                spec.flag,
                dest=spec.dest,
                metavar=spec.name.upper(),
                default=None,
                help=f"overrides the {spec.ini_key} ini key for the default policy",
            )


@final
@dataclass(frozen=True)
class ReuseSettings:
    """The reuse configuration of one pytest run, read once at configure time."""

    enabled: bool
    """False with ``--reuse=off``: the plugin does nothing."""
    default_policy: ReusePolicy
    """Built from the ``reuse_*`` ini keys, command-line options over ini."""
    named: Mapping[str, ReusePolicy] = field(default_factory=dict, hash=False)
    """Policies from ``reuse_policies`` by name; stored as a read-only copy."""
    apply_all: ReusePolicy | None = None
    """Policy for tests without a reuse marker (``reuse_all``), or None to run them locally."""
    max_restarts: int | None = None
    """Replica crashes an environment survives (``reuse_max_restarts``); None: 4 x max."""
    start_timeout: float = DEFAULT_START_TIMEOUT
    """Seconds a replica may take to become ready (``reuse_start_timeout``)."""
    replica_limit: int | None = None
    """``reuse_replica_limit``: most replicas of one environment on this machine; None: its
    cores."""
    env_vars: tuple[str, ...] = DEFAULT_ENV_VARS
    """Variables a warm replica must share with the run (``reuse_env_vars``)."""
    leaks: str = "warn"
    """``reuse_leaks``: off, warn, recycle or fail."""
    leaks_ignore: tuple[str, ...] = ()
    """``reuse_leaks_ignore`` patterns."""
    leak_memory_mib: float = 64.0
    """``reuse_leak_memory_mib``."""
    teardown_timeout: float = 60.0
    """``reuse_teardown_timeout``: bound on a retiring replica's finalizers."""
    hosts: _hosts.HostTable = field(default_factory=_hosts.HostTable)
    """Where replicas run (``reuse_hosts``, ``--reuse-tx``); empty: this machine."""
    reload: str = "on"
    """``reuse_reload``: on (warm replicas re-import edits) or off (any edit: fresh replica).
    Read again by each replica (replica/reload.py); validated here."""

    def __post_init__(self) -> None:
        # A read-only copy: the caller's dict may change later, the settings must not.
        object.__setattr__(self, "named", types.MappingProxyType(dict(self.named)))

    @classmethod
    def from_config(cls, config: pytest.Config) -> ReuseSettings:
        """Read ini keys and options; ``pytest.UsageError`` for any bad value.

        With ``--reuse=off`` nothing else is read or validated, so plain pytest runs exactly
        as it would without the plugin, even over a broken reuse configuration.
        """
        if config.getoption("reuse") == "off":
            return cls(enabled=False, default_policy=ReusePolicy())
        default = _default_policy(config)
        named = _named_policies(config, default)
        table = _hosts.from_config(
            config, _ini_source(config, "reuse_hosts"), _ini_source(config, "reuse_host_timeout")
        )
        for name, policy in named.items():
            where = f"reuse_policies policy {name!r} ({_ini_source(config, 'reuse_policies')})"
            table.check_group(policy.hosts, where)
        return cls(
            enabled=True,
            default_policy=default,
            named=named,
            apply_all=_apply_all(config, default, named),
            max_restarts=_max_restarts(config),
            replica_limit=_replica_limit(config),
            start_timeout=_positive_number(
                config,
                "reuse_start_timeout",
                default=DEFAULT_START_TIMEOUT,
                unit=" of seconds",
                wait=True,
            ),
            env_vars=_env_vars(config) or DEFAULT_ENV_VARS,
            leaks=_choice(config, "reuse_leaks", protocol.LEAK_MODES),
            leaks_ignore=_leaks_ignore(config),
            leak_memory_mib=_positive_number(config, "reuse_leak_memory_mib"),
            teardown_timeout=_positive_number(config, "reuse_teardown_timeout", wait=True),
            hosts=table,
            reload=_choice(config, "reuse_reload", ("on", "off")),
        )

    def known_names(self) -> list[str]:
        """Every name a marker or ``reuse_all`` may use, for error messages."""
        return ["default", *self.named, "off"]


def _usage_error(config: pytest.Config, key: str, rule: str, value: object) -> pytest.UsageError:
    return pytest.UsageError(f"{key} must be {rule}, got {value!r} ({_ini_source(config, key)})")


def _max_restarts(config: pytest.Config) -> int | None:
    text = _ini_text(config, "reuse_max_restarts").strip()
    if not text:
        return None
    if not _COUNT_RE.fullmatch(text):
        raise _usage_error(config, "reuse_max_restarts", "an int >= 0", text)
    return int(text)


def _replica_limit(config: pytest.Config) -> int | None:
    text = _ini_text(config, "reuse_replica_limit").strip()
    if not text:
        return None
    if not _COUNT_RE.fullmatch(text) or int(text) < 1:
        raise _usage_error(config, "reuse_replica_limit", "an int >= 1", text)
    return int(text)


def machine_cores() -> int:
    """The cores this process may run on: the default ``reuse_replica_limit``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _choice(config: pytest.Config, key: str, choices: tuple[str, ...]) -> str:
    text = _ini_text(config, key).strip()
    if text not in choices:
        raise _usage_error(config, key, f"one of {', '.join(choices)}", text)
    return text


def _positive_number(
    config: pytest.Config,
    key: str,
    *,
    default: float | None = None,
    unit: str = "",
    wait: bool = False,
) -> float:
    """An ini value that must be a finite number > 0 (``default`` when the key is empty); a
    ``wait`` in seconds is also at most :data:`MAX_WAIT_SECONDS`."""
    text = _ini_text(config, key).strip()
    if not text and default is not None:
        return default
    try:
        value = parse_number(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise _usage_error(config, key, f"a number{unit} > 0", text)
    if wait and value > MAX_WAIT_SECONDS:
        rule = f"a number{unit} > 0 and at most {MAX_WAIT_SECONDS:.0f} (a year)"
        raise _usage_error(config, key, rule, text)
    return value


def _list_entries(config: pytest.Config, key: str) -> list[str]:
    """A list key's entries; a TOML list may hold numbers or tables, which no entry is."""
    entries: list[object] = list(config.getini(key))
    for entry in entries:
        if not isinstance(entry, str):
            raise _usage_error(config, key, "a list of strings", entry)
    return [str(entry) for entry in entries]


def _leaks_ignore(config: pytest.Config) -> tuple[str, ...]:
    """``reuse_leaks_ignore``: each line a kind hygiene checks, with a name pattern for the
    kinds that have names (a line it cannot match would silently ignore nothing)."""
    patterns = []
    for line in _list_entries(config, "reuse_leaks_ignore"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, colon, name = line.partition(":")
        named = protocol.LEAK_KINDS.get(kind)
        if named is None or (colon and not (named and name)):
            kinds = [f"{k}:PATTERN" if n else k for k, n in protocol.LEAK_KINDS.items()]
            rule = f"{', '.join(kinds[:-1])} or {kinds[-1]}, one a line"
            raise _usage_error(config, "reuse_leaks_ignore", rule, line)
        patterns.append(line)
    return tuple(patterns)


def _env_vars(config: pytest.Config) -> tuple[str, ...]:
    entries = _list_entries(config, "reuse_env_vars")
    for entry in entries:
        if not _ENV_VAR_RE.fullmatch(entry):
            raise _usage_error(
                config,
                "reuse_env_vars",
                "variable names, each maybe ending in * to match a prefix (PYTEST_REUSE_ENV_*)",
                entry,
            )
    return tuple(entries)


def _ini_source(config: pytest.Config, key: str) -> str:
    overrides: list[str] = config.getoption("override_ini") or []
    if any(item.split("=", 1)[0] == key for item in overrides):
        return f"ini key {key} from -o/--override-ini"
    where = config.inipath.name if config.inipath is not None else "the configuration file"
    return f"ini key {key} in {where}"


def _ini_text(config: pytest.Config, key: str) -> str:
    value = config.getini(key)
    # A TOML table may hold a number where ini files hold text: read it as its text.
    return value if isinstance(value, str) else str(value)


def _default_policy(config: pytest.Config) -> ReusePolicy:
    """The default policy from each field's ini key, or its command-line option over it."""
    policy = ReusePolicy()
    for spec in FIELDS:
        if spec.ini_key is None:
            continue
        cli_value = config.getoption(spec.dest) if spec.dest is not None else None
        raw: str | tuple[str, ...]
        if cli_value is not None:
            name, source, raw = str(spec.flag), f"command-line option {spec.flag}", str(cli_value)
        else:
            name, source = spec.ini_key, _ini_source(config, spec.ini_key)
            if spec.ini == "args":  # already split by pytest: each entry is one value
                raw = tuple(_list_entries(config, spec.ini_key))
            else:
                raw = _ini_text(config, spec.ini_key).strip()
            if not raw:
                continue
        try:
            value = parse_field(spec.name, raw) if isinstance(raw, str) else raw
            policy = policy.with_changes(**{spec.name: value})
        except PolicyError as error:
            raise pytest.UsageError(f"{name}: {error} ({source})") from None
    return policy


def _named_policies(config: pytest.Config, default: ReusePolicy) -> dict[str, ReusePolicy]:
    lines: list[str] = config.getini("reuse_policies")
    source = _ini_source(config, "reuse_policies")
    named: dict[str, ReusePolicy] = {}
    first_line: dict[str, int] = {}
    # Line numbers count the key's non-blank lines, which is what getini("...linelist") keeps.
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"reuse_policies line {number} {line!r}"
        name, colon, text = line.partition(":")
        name = name.strip()
        if not colon:
            raise pytest.UsageError(
                f"{where}: expected 'NAME: key=value ...', e.g. 'ml: replicas=(1, 3)' ({source})"
            )
        if not name.isidentifier():
            raise pytest.UsageError(
                f"{where}: policy name must be a Python identifier, got {name!r} ({source})"
            )
        if name in _RESERVED_NAMES:
            raise pytest.UsageError(
                f"{where}: {name!r} is reserved and cannot name a policy ({source})"
            )
        if name in named:
            raise pytest.UsageError(
                f"{where}: policy {name!r} is already defined on line {first_line[name]} ({source})"
            )
        try:
            named[name] = ReusePolicy.parse(text, base=default)
        except PolicyError as error:
            raise pytest.UsageError(f"{where}: {error} ({source})") from None
        first_line[name] = number
    return named


def _apply_all(
    config: pytest.Config, default: ReusePolicy, named: Mapping[str, ReusePolicy]
) -> ReusePolicy | None:
    cli_value: str | None = config.getoption("reuse_cli_all")
    if cli_value is not None:
        name, label, source = cli_value.strip(), "--reuse-all", "command-line option --reuse-all"
    else:
        name, label = _ini_text(config, "reuse_all").strip(), "reuse_all"
        source = _ini_source(config, "reuse_all")
    if name in ("", "off"):
        return None
    if name == "default":
        return default
    if name in named:
        return named[name]
    known = ", ".join(["default", *named, "off"])  # ReuseSettings.known_names, not built yet
    raise pytest.UsageError(
        f"{label}: unknown policy name {name!r}; known names: {known} ({source})"
    )


def resolve_item_policy(
    item: pytest.Item,
    settings: ReuseSettings,
    known: dict[int, tuple[pytest.Mark, ReusePolicy | None]] | None = None,
) -> ReusePolicy | None:
    """The policy of ``item``, or None if it runs in the pytest process.

    The closest ``reuse`` marker decides (function over class over module); an item without
    one gets ``settings.apply_all``. Bad marker arguments raise ``pytest.UsageError`` naming
    the item's nodeid. ``known`` remembers markers already read (a module's ``pytestmark`` is
    one object shared by all its tests).
    """
    if not settings.enabled:
        return None
    marker = item.get_closest_marker("reuse")
    if marker is None:
        return settings.apply_all
    if known is not None:
        seen = known.get(id(marker))
        if seen is not None and seen[0] is marker:
            return seen[1]
    policy = _marker_policy(marker, settings, f"@pytest.mark.reuse at {item.nodeid}")
    if known is not None:
        known[id(marker)] = (marker, policy)  # the marker is kept: its id is not reused
    return policy


def _marker_policy(marker: pytest.Mark, settings: ReuseSettings, where: str) -> ReusePolicy | None:
    if len(marker.args) > 1:
        raise pytest.UsageError(
            f"{where}: takes at most one positional argument (a policy name, a ReusePolicy "
            f"or False), got {len(marker.args)}: {marker.args!r}"
        )
    base = settings.default_policy
    if marker.args:
        arg = marker.args[0]
        if arg is False or (isinstance(arg, str) and arg == "off"):
            if marker.kwargs:
                raise pytest.UsageError(
                    f"{where}: {arg!r} runs the test in the pytest process and takes no policy "
                    f"fields, got {', '.join(sorted(marker.kwargs))}"
                )
            return None
        base = _marker_base(arg, settings, where)
    try:
        policy = ReusePolicy.from_mapping(marker.kwargs, base=base)
    except PolicyError as error:
        raise pytest.UsageError(f"{where}: {error}") from None
    settings.hosts.check_group(policy.hosts, where)
    return policy


def _marker_base(arg: object, settings: ReuseSettings, where: str) -> ReusePolicy:
    if isinstance(arg, ReusePolicy):
        return arg
    if isinstance(arg, str):
        if arg == "default":
            return settings.default_policy
        if arg in settings.named:
            return settings.named[arg]
        raise pytest.UsageError(
            f"{where}: unknown policy name {arg!r}; known names: "
            f"{', '.join(settings.known_names())} (define names in the reuse_policies ini key)"
        )
    raise pytest.UsageError(
        f"{where}: the positional argument must be a policy name, a ReusePolicy or False, "
        f"got {arg!r} ({type(arg).__name__})"
    )


def resolve_policies(
    items: Sequence[pytest.Item], settings: ReuseSettings
) -> dict[str, ReusePolicy]:
    """``{nodeid: policy}`` for the items that run in replicas; raises on the first bad marker.

    Every item is resolved before the caller starts anything, so a bad marker anywhere stops
    the run before any replica exists. Empty when reuse is off.
    """
    policies: dict[str, ReusePolicy] = {}
    if not settings.enabled:
        return policies
    known: dict[int, tuple[pytest.Mark, ReusePolicy | None]] = {}
    for item in items:
        policy = resolve_item_policy(item, settings, known)
        if policy is not None:
            policies[item.nodeid] = policy
    return policies
