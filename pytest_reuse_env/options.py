"""The declaration of every ``reuse_*`` ini key and ``reuse-env`` command-line option, and the
marker's help text.

Loaded by every pytest run that has the plugin (``plugin.py``'s ``pytest_addoption``), in the
pytest process the user started and in each replica's own pytest session. The policy fields'
keys and options are generated from ``policy.FIELDS``; the other keys are :data:`INI_KEYS`.
Their values are read and checked in ``settings.py``. This module knows nothing of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, final

import pytest

from pytest_reuse_env import hostspec as _hosts
from pytest_reuse_env.policy import FIELDS

__all__ = [
    "INI_KEYS",
    "MARKER_HELP",
    "IniKey",
    "register_options",
]

MARKER_HELP: Final = (
    "reuse(policy='default', **fields): run this test in a warm, reusable replica process. "
    "policy: a name from the reuse_policies ini key, 'default', a ReusePolicy, or 'off'/False "
    "to run the test in the pytest process even under --reuse-all. fields "
    f"({', '.join(spec.name for spec in FIELDS)}) override that policy's values."
)


@final
@dataclass(frozen=True)
class IniKey:
    """A ``reuse_*`` ini key that is not a field of the default policy (those come from
    ``policy.FIELDS``); its value is read and checked in ``settings.ReuseSettings.from_config``."""

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
