"""``ReuseSettings``: the reuse configuration of one run, read from the ini keys and
command-line options that ``options.py`` declares.

Everything a user can get wrong here becomes a :class:`pytest.UsageError` that names where the
value came from (ini key, ``-o`` override or command-line option), the bad value and the rule,
so pytest stops with exit code 4 before any replica starts. Read once at configure time in the
pytest process the user started (``plugin.py``); the controller reads its values. This module
knows nothing of processes.
"""

from __future__ import annotations

import math
import os
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, final

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
    "DEFAULT_START_TIMEOUT",
    "ReuseSettings",
    "machine_cores",
]

#: Seconds a replica may take to start and collect before it is killed.
DEFAULT_START_TIMEOUT: Final = 300.0

# Names that cannot be given to a named policy: they already mean something to reuse_all.
_RESERVED_NAMES: Final = ("default", "off")
# An ini value read as an int is ASCII digits: int() would also take "²"-like digits of any script.
_COUNT_RE: Final = re.compile(r"[0-9]+")
# A reuse_env_vars entry: a variable name, or a prefix then "*".
_ENV_VAR_RE: Final = re.compile(r"[^=*\s\x00]+\*?")


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
