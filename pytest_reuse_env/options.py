"""Ini keys, command-line options and ``@pytest.mark.reuse`` resolution.

Everything a user can get wrong here becomes a :class:`pytest.UsageError` that names where the
value came from (ini key, ``-o`` override, command-line option or marker with its nodeid), the
bad value and the rule, so pytest stops with exit code 4 before any replica starts.
This module knows nothing of processes.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

import pytest

from pytest_reuse_env import hostspec as _hosts
from pytest_reuse_env.fingerprint import DEFAULT_ENV_VARS
from pytest_reuse_env.policy import PolicyError, ReusePolicy, parse_field

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
    "to run the test in the pytest process even under --reuse-all. fields (replicas, idle_ttl, "
    "concurrency, scaledown_ttl, scope, prewarm, timeout, hosts) override that policy's values."
)

# Names that cannot be given to a named policy: they already mean something to reuse_all.
_RESERVED_NAMES: Final = ("default", "off")

# Default-policy fields settable from ini (key) and command line (flag, dest); ini order matters
# only for which error is reported first.
_SCALAR_FIELDS: Final = (
    ("replicas", "reuse_replicas", "--reuse-replicas", "reuse_cli_replicas"),
    ("idle_ttl", "reuse_idle_ttl", "--reuse-idle-ttl", "reuse_cli_idle_ttl"),
    ("concurrency", "reuse_concurrency", "--reuse-concurrency", "reuse_cli_concurrency"),
    ("scaledown_ttl", "reuse_scaledown_ttl", "--reuse-scaledown-ttl", "reuse_cli_scaledown_ttl"),
    ("scope", "reuse_scope", "--reuse-scope", "reuse_cli_scope"),
    ("timeout", "reuse_timeout", None, None),
    ("max_tests_per_replica", "reuse_max_tests_per_replica", None, None),
    ("max_memory_per_replica", "reuse_max_memory_per_replica", None, None),
)

_INI_HELP: Final = {  # the "string" keys of the default policy
    "reuse_replicas": "replicas of the default reuse policy: N or (MIN, MAX); each >= 0, "
    "MIN <= MAX, MAX >= 1 (default: 2)",
    "reuse_idle_ttl": "shut an environment's replicas down after it has been idle this long: "
    "seconds or a duration like 5m, 1h30m; at least 30 s (default: 30)",
    "reuse_concurrency": "tests one replica runs at once, >= 1 (default: 1)",
    "reuse_scaledown_ttl": "delay before one idle replica above the minimum is removed: "
    "seconds or a duration; at least 30 s (default: 30)",
    "reuse_scope": "'global' (replicas outlive the run) or 'run' (default: global)",
    "reuse_timeout": "per-test timeout in seconds for tests run in replicas, > 0 (default: none)",
    "reuse_max_tests_per_replica": "recycle a replica after this many tests (plus up to 10 % "
    "jitter), checked between tests: an int >= 1 (default: none)",
    "reuse_max_memory_per_replica": "recycle a replica whose resident size passes this many MiB, "
    "checked between tests: an int >= 1 (default: none)",
}


def register_options(parser: pytest.Parser) -> None:
    """Declare the ``reuse_*`` ini keys and the ``reuse-env`` command-line options."""
    for key, description in _INI_HELP.items():
        # Empty default = "not set": the defaults live in ReusePolicy, in one place.
        parser.addini(key, description, type="string", default="")
    parser.addini(
        "reuse_prewarm",
        "session fixtures a new replica sets up before its first test: fixture names "
        "(default: none)",
        type="args",
        default=[],
    )
    parser.addini(
        "reuse_policies",
        "named reuse policies, one a line: 'NAME: key=value ...' (keys as in the reuse_* ini "
        "keys, without the prefix); fields not given come from the default policy "
        "(default: none)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "reuse_env_vars",
        "environment variables whose values a warm replica (scope=global) must share with the "
        "run that uses it; a trailing * matches a prefix (default: PATH PYTHONPATH "
        "PYTHONHASHSEED PYTEST_ADDOPTS PYTEST_PLUGINS VIRTUAL_ENV LANG LC_ALL TZ "
        "PYTEST_REUSE_ENV_*)",
        type="args",
        default=[],
    )
    parser.addini(
        "reuse_leaks",
        "what a replica does when a test leaves state behind (environment variables, working "
        "directory, sys.path, threads, open files, child processes, asyncio tasks, memory): "
        "'warn' (a warning on that test), 'recycle' (warn and replace the replica), 'fail' "
        "(the test fails), or 'off' (default: warn)",
        type="string",
        default="warn",
    )
    parser.addini(
        "reuse_leaks_ignore",
        "leaks not to report, one a line: env:NAME, env:PREFIX_*, thread:NAME*, cwd, sys.path, "
        "fds, children, tasks, memory (default: none)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "reuse_leak_memory_mib",
        "resident memory growth over one test that counts as a leak, in MiB (default: 64)",
        type="string",
        default="64",
    )
    parser.addini(
        "reuse_teardown_timeout",
        "seconds a replica may spend tearing its fixtures down when it ends before it is "
        "killed (default: 60)",
        type="string",
        default="60",
    )
    parser.addini(
        "reuse_max_restarts",
        "replica crashes an environment survives before its remaining tests are reported as "
        "not run: an int >= 0 (default: 4 x the policy's max replicas)",
        type="string",
        default="",
    )
    parser.addini(
        "reuse_start_timeout",
        "seconds a replica may take to start and collect before it is killed and its tests "
        "fail: a number > 0 (default: 300)",
        type="string",
        default="",
    )
    parser.addini(
        "reuse_reload",
        "'on': a warm replica re-imports edited project and test modules (and rebuilds the "
        "fixtures that depend on them) instead of being replaced; 'off': any edit means a "
        "fresh replica (default: on)",
        type="string",
        default="on",
    )
    parser.addini(
        "reuse_reload_exclude",
        "files whose change always means a fresh replica rather than a re-import: glob "
        "patterns, relative to the invocation directory or absolute, one a line "
        "(default: none)",
        type="linelist",
        default=[],
    )
    parser.addini(
        "reuse_all",
        "name of a reuse policy ('default' for the default one) applied to every test without "
        "a reuse marker; empty or 'off' means none (default: empty)",
        type="string",
        default="",
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
    for field_name, ini_key, flag, dest in _SCALAR_FIELDS:
        if flag is None:
            continue
        group.addoption(
            flag,
            dest=dest,
            metavar=field_name.upper(),
            default=None,
            help=f"overrides the {ini_key} ini key for the default policy",
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
            start_timeout=_positive_number(
                config, "reuse_start_timeout", default=DEFAULT_START_TIMEOUT, unit=" of seconds"
            ),
            env_vars=tuple(config.getini("reuse_env_vars")) or DEFAULT_ENV_VARS,
            leaks=_choice(config, "reuse_leaks", ("off", "warn", "recycle", "fail")),
            leaks_ignore=tuple(config.getini("reuse_leaks_ignore")),
            leak_memory_mib=_positive_number(config, "reuse_leak_memory_mib"),
            teardown_timeout=_positive_number(config, "reuse_teardown_timeout"),
            hosts=table,
            reload=_choice(config, "reuse_reload", ("on", "off")),
        )

    def known_names(self) -> list[str]:
        """Every name a marker or ``reuse_all`` may use, for error messages."""
        return ["default", *self.named, "off"]


def _max_restarts(config: pytest.Config) -> int | None:
    text = _ini_text(config, "reuse_max_restarts")
    if not text:
        return None
    if not text.isdigit():
        raise pytest.UsageError(
            f"reuse_max_restarts must be an int >= 0, got {text!r} "
            f"({_ini_source(config, 'reuse_max_restarts')})"
        )
    return int(text)


def _choice(config: pytest.Config, key: str, choices: tuple[str, ...]) -> str:
    text = _ini_text(config, key).strip()
    if text not in choices:
        raise pytest.UsageError(
            f"{key} must be one of {', '.join(choices)}, got {text!r} ({_ini_source(config, key)})"
        )
    return text


def _positive_number(
    config: pytest.Config, key: str, *, default: float | None = None, unit: str = ""
) -> float:
    """An ini value that must be a finite number > 0 (``default`` when the key is empty)."""
    text = _ini_text(config, key).strip()
    if not text and default is not None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise pytest.UsageError(
            f"{key} must be a number{unit} > 0, got {text!r} ({_ini_source(config, key)})"
        )
    return value


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
    policy = ReusePolicy()
    for field_name, ini_key, flag, dest in _SCALAR_FIELDS:
        cli_value = config.getoption(dest) if dest is not None else None
        if cli_value is not None:
            text, name, source = str(cli_value), str(flag), f"command-line option {flag}"
        else:
            text, name = _ini_text(config, ini_key), ini_key
            if not text.strip():
                continue
            source = _ini_source(config, ini_key)
        try:
            policy = policy.with_changes(**{field_name: parse_field(field_name, text)})
        except PolicyError as error:
            raise pytest.UsageError(f"{name}: {error} ({source})") from None
    prewarm: list[str] = config.getini("reuse_prewarm")
    if prewarm:
        try:
            policy = policy.with_changes(prewarm=tuple(prewarm))
        except PolicyError as error:
            source = _ini_source(config, "reuse_prewarm")
            raise pytest.UsageError(f"reuse_prewarm: {error} ({source})") from None
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


def resolve_item_policy(item: pytest.Item, settings: ReuseSettings) -> ReusePolicy | None:
    """The policy of ``item``, or None if it runs in the pytest process.

    The closest ``reuse`` marker decides (function over class over module); an item without
    one gets ``settings.apply_all``. Bad marker arguments raise ``pytest.UsageError`` naming
    the item's nodeid.
    """
    if not settings.enabled:
        return None
    marker = item.get_closest_marker("reuse")
    if marker is None:
        return settings.apply_all
    where = f"@pytest.mark.reuse at {item.nodeid}"
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
    for item in items:
        policy = resolve_item_policy(item, settings)
        if policy is not None:
            policies[item.nodeid] = policy
    return policies
