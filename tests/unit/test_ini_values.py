"""Every ini value is checked: junk is a ``pytest.UsageError`` naming the key, the value and the
rule, never a silent default, a value read from another script's digits, or an INTERNALERROR
later (an OverflowError in a wait, a leak rule that can never match)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pytest_reuse_env import protocol
from pytest_reuse_env.policy import SHORT_TTL_ENV
from pytest_reuse_env.replica import hygiene
from tests.unit.fakeconfig import settings_of


@pytest.fixture(autouse=True)
def _long_ttl_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHORT_TTL_ENV, raising=False)


def usage_error(key: str, value: object) -> str:
    with pytest.raises(pytest.UsageError) as excinfo:
        settings_of({key: value})
    return str(excinfo.value)


SOURCE = "(ini key {key} in tox.ini)"
LEAK_RULE = "env:PATTERN, thread:PATTERN, cwd, sys.path, fds, children, tasks or memory, one a line"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # int() takes any script's digits, and "²".isdigit() is True though int("²") fails.
        ("reuse_max_restarts", "²", "reuse_max_restarts must be an int >= 0, got '²'"),
        ("reuse_max_restarts", "\u0663", "reuse_max_restarts must be an int >= 0, got '\u0663'"),
        ("reuse_max_restarts", "+3", "reuse_max_restarts must be an int >= 0, got '+3'"),
        ("reuse_max_restarts", "3.0", "reuse_max_restarts must be an int >= 0, got '3.0'"),
        # float() takes Arabic-Indic digits, "1_000", "inf" and "nan".
        (
            "reuse_start_timeout",
            "\u0661\u0660",
            "reuse_start_timeout must be a number of seconds > 0, got '\u0661\u0660'",
        ),
        (
            "reuse_start_timeout",
            "1_000",
            "reuse_start_timeout must be a number of seconds > 0, got '1_000'",
        ),
        (
            "reuse_start_timeout",
            "inf",
            "reuse_start_timeout must be a number of seconds > 0, got 'inf'",
        ),
        # Waits past a year overflow threading's, faulthandler's and select's clocks.
        (
            "reuse_start_timeout",
            "1e300",
            "reuse_start_timeout must be a number of seconds > 0 and at most 31536000 (a year),"
            " got '1e300'",
        ),
        (
            "reuse_teardown_timeout",
            "1e10",
            "reuse_teardown_timeout must be a number > 0 and at most 31536000 (a year), got '1e10'",
        ),
        ("reuse_leak_memory_mib", "nan", "reuse_leak_memory_mib must be a number > 0, got 'nan'"),
        (
            "reuse_leak_memory_mib",
            "\u0666\u0664",
            "reuse_leak_memory_mib must be a number > 0, got '\u0666\u0664'",
        ),
        (
            "reuse_host_timeout",
            "\u0661",
            "reuse_host_timeout must be a number of seconds > 0, got '\u0661'",
        ),
        (
            "reuse_host_timeout",
            "1e300",
            "reuse_host_timeout must be a number of seconds > 0 and at most 31536000 (a year),"
            " got '1e300'",
        ),
        ("reuse_leaks", "WARN", "reuse_leaks must be one of off, warn, recycle, fail, got 'WARN'"),
        # A line hygiene cannot match would ignore nothing, silently.
        ("reuse_leaks_ignore", ["bogus:thing"], f"reuse_leaks_ignore must be {LEAK_RULE}"),
        ("reuse_leaks_ignore", ["cwd:/tmp"], f"reuse_leaks_ignore must be {LEAK_RULE}"),
        ("reuse_leaks_ignore", ["env:"], f"reuse_leaks_ignore must be {LEAK_RULE}"),
        ("reuse_leaks_ignore", ["fds", "thread"], None),  # thread alone is fine: next one
        ("reuse_leaks_ignore", ["sys.path", "memory:*"], f"reuse_leaks_ignore must be {LEAK_RULE}"),
        ("reuse_leaks_ignore", ["ENV:PATH"], f"reuse_leaks_ignore must be {LEAK_RULE}"),
        ("reuse_leaks_ignore", [3], "reuse_leaks_ignore must be a list of strings, got 3"),
        (
            "reuse_env_vars",
            ["PATH", "A=B"],
            "reuse_env_vars must be variable names, each maybe ending in * to match a prefix",
        ),
        ("reuse_env_vars", ["*"], "reuse_env_vars must be variable names"),
        ("reuse_env_vars", ["MY_*_VAR"], "reuse_env_vars must be variable names"),
        # The default policy's keys read ASCII only, and a TTL must fit a timedelta.
        (
            "reuse_concurrency",
            "\u0663",
            "reuse_concurrency: concurrency must be an int, got '\u0663'",
        ),
        ("reuse_replicas", "(\u0661, 3)", "reuse_replicas: replicas must be an int or (min, max)"),
        ("reuse_replicas", "\u0662", "reuse_replicas: replicas must be an int or (min, max)"),
        (
            "reuse_idle_ttl",
            "\u0663\u0660\u0660",
            "reuse_idle_ttl: idle_ttl must be a duration like 300, 300s, 5m or 1h30m,"
            " got '\u0663\u0660\u0660'",
        ),
        (
            "reuse_idle_ttl",
            "99999999999999999999",
            "reuse_idle_ttl: idle_ttl must be at most 999999999 days, got 99999999999999999999",
        ),
        (
            "reuse_scaledown_ttl",
            "99999999999h",
            "reuse_scaledown_ttl: scaledown_ttl must be a duration like 300, 300s, 5m or 1h30m,"
            " got '99999999999h'",
        ),
        (
            "reuse_timeout",
            "\u0663",
            "reuse_timeout: timeout must be a number of seconds, a duration or none, got '\u0663'",
        ),
        (
            "reuse_max_tests_per_replica",
            "\u0661\u0660\u0660",
            "reuse_max_tests_per_replica: max_tests_per_replica must be an int or none",
        ),
        ("reuse_prewarm", ["db", 3], "reuse_prewarm must be a list of strings, got 3"),
    ],
)
def test_junk_is_a_usage_error(key: str, value: object, message: str | None) -> None:
    if message is None:
        settings_of({key: value})
        return
    text = usage_error(key, value)
    assert text.startswith(message)
    assert text.endswith(SOURCE.format(key=key))


def test_the_usage_error_quotes_the_bad_line() -> None:
    text = usage_error("reuse_leaks_ignore", ["env:HOME", "bogus:thing"])
    assert text == f"reuse_leaks_ignore must be {LEAK_RULE}, got 'bogus:thing' " + SOURCE.format(
        key="reuse_leaks_ignore"
    )


def test_good_values_are_read() -> None:
    settings = settings_of(
        {
            "reuse_max_restarts": "0",
            "reuse_start_timeout": "2.5e2",
            "reuse_teardown_timeout": "31536000",
            "reuse_leak_memory_mib": ".5",
            "reuse_leaks_ignore": [
                "env:CACHE_*",
                "# a comment",
                "env",
                "thread:pool-*",
                "cwd",
                "sys.path",
                "fds",
                "children",
                "tasks",
                "memory",
            ],
            "reuse_env_vars": ["PATH", "MY_APP_*"],
            "reuse_host_timeout": "10",
        }
    )
    assert settings.max_restarts == 0
    assert settings.start_timeout == 250.0
    assert settings.teardown_timeout == 31536000.0
    assert settings.leak_memory_mib == 0.5
    assert settings.leaks_ignore == (
        "env:CACHE_*",
        "env",
        "thread:pool-*",
        "cwd",
        "sys.path",
        "fds",
        "children",
        "tasks",
        "memory",
    )
    assert settings.env_vars == ("PATH", "MY_APP_*")
    assert settings.hosts.timeout == 10.0


# The kinds settings.py accepts (protocol.LEAK_KINDS) are the kinds hygiene checks: each one,
# ignored, silences exactly its own leak.
BEFORE = hygiene.ProcessState(
    environ={"KEEP": "1"},
    cwd="/project",
    sys_path=("/project",),
    threads=frozenset({(1, "MainThread")}),
    fds=frozenset(),
    children=frozenset(),
    tasks=0,
    rss=0,
)


def after_leaking(kind: str, fd: int) -> hygiene.ProcessState:
    changes: dict[str, dict[str, Any]] = {
        "env": {"environ": {"KEEP": "1", "LEAKED": "1"}},
        "thread": {"threads": BEFORE.threads | {(2, "pool-1")}},
        "cwd": {"cwd": "/elsewhere"},
        "sys.path": {"sys_path": ("/project", "/added")},
        "fds": {"fds": frozenset({fd})},
        "children": {"children": frozenset({4242})},
        "tasks": {"tasks": 1},
        "memory": {"rss": 2**30},
    }
    return BEFORE._replace(**changes[kind])


@pytest.mark.parametrize("kind", list(protocol.LEAK_KINDS))
def test_each_accepted_kind_is_one_hygiene_checks(kind: str) -> None:
    fd = os.open(os.devnull, os.O_RDONLY)  # hygiene reports only descriptors still open
    try:
        after = after_leaking(kind, fd)
        pattern = {"env": "env:LEAK*", "thread": "thread:pool-*"}.get(kind, kind)
        assert hygiene.leaks(BEFORE, after, hygiene.LeakRules()), "the leak is seen"
        assert hygiene.leaks(BEFORE, after, hygiene.LeakRules((pattern,))) == []
        if protocol.LEAK_KINDS[kind]:
            other = f"{kind}:no-such-name"
            assert hygiene.leaks(BEFORE, after, hygiene.LeakRules((other,)))
        settings_of({"reuse_leaks_ignore": [pattern]})  # and settings accepts the pattern
    finally:
        os.close(fd)


def test_leak_modes_are_hygienes() -> None:
    assert hygiene.MODES == protocol.LEAK_MODES
