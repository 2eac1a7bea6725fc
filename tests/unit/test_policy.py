"""ReusePolicy: defaults, normalization, every validation rule, the ini form and its parser."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from pytest_reuse_env.policy import (
    SHORT_TTL_ENV,
    PolicyError,
    ReusePolicy,
    format_duration,
    parse_duration,
    parse_field,
)


@pytest.fixture(autouse=True)
def _long_ttl_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell may export the test-only variable; these tests need the real rules.
    monkeypatch.delenv(SHORT_TTL_ENV, raising=False)


def test_defaults() -> None:
    policy = ReusePolicy()
    assert policy.replicas == (2, 2)
    assert policy.idle_ttl == timedelta(seconds=30)
    assert policy.concurrency == 1
    assert policy.scaledown_ttl == timedelta(seconds=30)
    assert policy.scope == "global"
    assert policy.prewarm == ()
    assert policy.timeout is None
    assert (policy.min_replicas, policy.max_replicas) == (2, 2)
    assert policy.idle_ttl_seconds == 30.0
    assert policy.scaledown_ttl_seconds == 30.0


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (ReusePolicy(replicas=2), ReusePolicy(replicas=(2, 2))),
        (ReusePolicy(replicas=(1, 3)), ReusePolicy(replicas=[1, 3])),  # type: ignore[arg-type]
        (ReusePolicy(idle_ttl=30), ReusePolicy(idle_ttl=timedelta(seconds=30))),
        (ReusePolicy(scaledown_ttl=90), ReusePolicy(scaledown_ttl=timedelta(minutes=1.5))),
        (ReusePolicy(prewarm=("db",)), ReusePolicy(prewarm=["db"])),  # type: ignore[arg-type]
        (ReusePolicy(timeout=5), ReusePolicy(timeout=5.0)),
        (ReusePolicy(), ReusePolicy.parse("")),
    ],
)
def test_equal_forms_are_equal_and_hash_equal(left: ReusePolicy, right: ReusePolicy) -> None:
    assert left == right
    assert hash(left) == hash(right)
    assert len({left, right}) == 1


def test_stored_values_are_normalized() -> None:
    policy = ReusePolicy(
        replicas=[0, 4],  # type: ignore[arg-type]
        idle_ttl=120,
        scaledown_ttl=timedelta(minutes=2),
        prewarm=["db", "model"],  # type: ignore[arg-type]
        timeout=3,
    )
    assert policy.replicas == (0, 4)
    assert isinstance(policy.replicas, tuple)
    assert policy.idle_ttl == timedelta(seconds=120)
    assert policy.scaledown_ttl_seconds == 120.0
    assert policy.prewarm == ("db", "model")
    assert isinstance(policy.timeout, float)


def test_policies_that_differ_are_unequal() -> None:
    assert ReusePolicy(scope="run") != ReusePolicy()
    assert ReusePolicy(replicas=(1, 2)) != ReusePolicy(replicas=(2, 2))


def test_is_frozen() -> None:
    policy = ReusePolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.concurrency = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        # replicas
        ({"replicas": 0}, "replicas", "replicas must be at least 1, got 0"),
        ({"replicas": -1}, "replicas", "replicas must be at least 1, got -1"),
        ({"replicas": (-1, 2)}, "replicas", "replicas min must be >= 0, got (-1, 2)"),
        ({"replicas": (3, 1)}, "replicas", "replicas min must be <= max, got (3, 1)"),
        ({"replicas": (0, 0)}, "replicas", "replicas max must be at least 1, got (0, 0)"),
        (
            {"replicas": "2"},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got '2' (str)",
        ),
        (
            {"replicas": True},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got True (bool)",
        ),
        (
            {"replicas": 2.0},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got 2.0 (float)",
        ),
        (
            {"replicas": (1, 2, 3)},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got (1, 2, 3) (tuple)",
        ),
        (
            {"replicas": (1, True)},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got (1, True) (tuple)",
        ),
        (
            {"replicas": (1.0, 2)},
            "replicas",
            "replicas must be an int or a (min, max) pair of ints, got (1.0, 2) (tuple)",
        ),
        # idle_ttl
        ({"idle_ttl": 10}, "idle_ttl", "idle_ttl must be at least 30 seconds, got 10"),
        ({"idle_ttl": 29}, "idle_ttl", "idle_ttl must be at least 30 seconds, got 29"),
        ({"idle_ttl": -30}, "idle_ttl", "idle_ttl must be at least 30 seconds, got -30"),
        (
            {"idle_ttl": timedelta(seconds=29.5)},
            "idle_ttl",
            "idle_ttl must be at least 30 seconds, got timedelta(seconds=29.5)",
        ),
        (
            {"idle_ttl": 30.0},
            "idle_ttl",
            "idle_ttl must be an int number of seconds or a timedelta, got 30.0 (float)",
        ),
        (
            {"idle_ttl": True},
            "idle_ttl",
            "idle_ttl must be an int number of seconds or a timedelta, got True (bool)",
        ),
        (
            {"idle_ttl": "300"},
            "idle_ttl",
            "idle_ttl must be an int number of seconds or a timedelta, got '300' (str)",
        ),
        # scaledown_ttl
        ({"scaledown_ttl": 0}, "scaledown_ttl", "scaledown_ttl must be at least 30 seconds, got 0"),
        (
            {"scaledown_ttl": 45.0},
            "scaledown_ttl",
            "scaledown_ttl must be an int number of seconds or a timedelta, got 45.0 (float)",
        ),
        (
            {"scaledown_ttl": False},
            "scaledown_ttl",
            "scaledown_ttl must be an int number of seconds or a timedelta, got False (bool)",
        ),
        # concurrency
        ({"concurrency": 0}, "concurrency", "concurrency must be at least 1, got 0"),
        ({"concurrency": "3"}, "concurrency", "concurrency must be an int, got '3' (str)"),
        ({"concurrency": True}, "concurrency", "concurrency must be an int, got True (bool)"),
        ({"concurrency": 2.0}, "concurrency", "concurrency must be an int, got 2.0 (float)"),
        ({"concurrency": None}, "concurrency", "concurrency must be an int, got None (NoneType)"),
        # scope
        ({"scope": "session"}, "scope", "scope must be 'global' or 'run', got 'session'"),
        ({"scope": "GLOBAL"}, "scope", "scope must be 'global' or 'run', got 'GLOBAL'"),
        ({"scope": None}, "scope", "scope must be 'global' or 'run', got None"),
        # prewarm
        (
            {"prewarm": "db"},
            "prewarm",
            "prewarm must be a tuple of fixture names, got 'db' (str)",
        ),
        (
            {"prewarm": ("db", 3)},
            "prewarm",
            "prewarm must be a tuple of fixture names, got ('db', 3) (tuple)",
        ),
        (
            {"prewarm": ("db", "not-a-name")},
            "prewarm",
            "prewarm must hold fixture names (Python identifiers), got 'not-a-name'",
        ),
        (
            {"prewarm": ("class",)},
            "prewarm",
            "prewarm must hold fixture names (Python identifiers), got 'class'",
        ),
        (
            {"prewarm": ("db", "db")},
            "prewarm",
            "prewarm must not repeat a name, got ('db', 'db')",
        ),
        # timeout
        ({"timeout": 0}, "timeout", "timeout must be a finite number of seconds > 0, got 0"),
        ({"timeout": -1.5}, "timeout", "timeout must be a finite number of seconds > 0, got -1.5"),
        (
            {"timeout": float("inf")},
            "timeout",
            "timeout must be a finite number of seconds > 0, got inf",
        ),
        (
            {"timeout": float("nan")},
            "timeout",
            "timeout must be a finite number of seconds > 0, got nan",
        ),
        (
            {"timeout": True},
            "timeout",
            "timeout must be a number of seconds or None, got True (bool)",
        ),
        (
            {"timeout": "5"},
            "timeout",
            "timeout must be a number of seconds or None, got '5' (str)",
        ),
    ],
)
def test_invalid_field_raises_policy_error(
    kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(PolicyError) as excinfo:
        ReusePolicy.from_mapping(kwargs)
    error = excinfo.value
    assert str(error) == message
    assert error.field == field
    assert error.rule in message
    assert isinstance(error, ValueError)


def test_policy_error_carries_value_and_rule() -> None:
    with pytest.raises(PolicyError) as excinfo:
        ReusePolicy(idle_ttl=10)
    assert (excinfo.value.field, excinfo.value.value, excinfo.value.rule) == (
        "idle_ttl",
        10,
        "must be at least 30 seconds",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"replicas": 1},
        {"replicas": (0, 1)},
        {"replicas": (0, 5)},
        {"replicas": (5, 5)},
        {"idle_ttl": 30},
        {"idle_ttl": timedelta(hours=2)},
        {"scaledown_ttl": timedelta(seconds=30)},
        {"concurrency": 8},
        {"scope": "run"},
        {"prewarm": ("db", "_private", "model2")},
        {"timeout": 0.001},
        {"timeout": None},
    ],
)
def test_valid_values_are_accepted(kwargs: dict[str, object]) -> None:
    policy = ReusePolicy.from_mapping(kwargs)
    for name, value in kwargs.items():
        assert getattr(ReusePolicy.from_mapping({name: value}), name) == getattr(policy, name)


class TestShortTtlEscapeHatch:
    def test_short_ttls_are_rejected_without_it(self) -> None:
        with pytest.raises(PolicyError, match="at least 30 seconds"):
            ReusePolicy(idle_ttl=timedelta(milliseconds=200))

    def test_short_ttls_are_allowed_with_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, "1")
        policy = ReusePolicy(
            idle_ttl=timedelta(milliseconds=200), scaledown_ttl=timedelta(milliseconds=100)
        )
        assert policy.idle_ttl_seconds == pytest.approx(0.2)
        assert policy.scaledown_ttl_seconds == pytest.approx(0.1)
        assert ReusePolicy(idle_ttl=1).idle_ttl_seconds == 1.0

    @pytest.mark.parametrize("field", ["idle_ttl", "scaledown_ttl"])
    def test_short_minimum_is_still_enforced(
        self, monkeypatch: pytest.MonkeyPatch, field: str
    ) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, "1")
        with pytest.raises(PolicyError, match=rf"^{field} must be at least 0\.1 seconds, got"):
            ReusePolicy.from_mapping({field: timedelta(milliseconds=50)})

    def test_floats_are_still_rejected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, "1")
        with pytest.raises(PolicyError, match="must be an int number of seconds or a timedelta"):
            ReusePolicy(idle_ttl=0.5)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", ["0", "", "true", "yes"])
    def test_only_the_value_1_enables_it(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, value)
        with pytest.raises(PolicyError, match="at least 30 seconds"):
            ReusePolicy(idle_ttl=1)

    def test_it_is_read_at_validation_time(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, "1")
        ReusePolicy(idle_ttl=1)
        monkeypatch.delenv(SHORT_TTL_ENV)
        with pytest.raises(PolicyError):
            ReusePolicy(idle_ttl=1)


class TestWithChanges:
    def test_changes_the_given_fields_only(self) -> None:
        base = ReusePolicy(replicas=(1, 3), scope="run")
        changed = base.with_changes(concurrency=4, idle_ttl=60)
        assert changed == ReusePolicy(replicas=(1, 3), scope="run", concurrency=4, idle_ttl=60)
        assert base.concurrency == 1

    def test_revalidates(self) -> None:
        with pytest.raises(PolicyError, match=r"replicas min must be <= max, got \(3, 1\)"):
            ReusePolicy().with_changes(replicas=(3, 1))

    def test_unknown_field(self) -> None:
        with pytest.raises(PolicyError, match="unknown policy field 'replica'") as excinfo:
            ReusePolicy().with_changes(replica=2)
        assert excinfo.value.field == "replica"
        assert "known fields are replicas, idle_ttl" in str(excinfo.value)


class TestFromMapping:
    def test_uses_base(self) -> None:
        base = ReusePolicy(scope="run", prewarm=("db",))
        policy = ReusePolicy.from_mapping({"replicas": 1}, base=base)
        assert policy == ReusePolicy(replicas=1, scope="run", prewarm=("db",))

    def test_defaults_without_base(self) -> None:
        assert ReusePolicy.from_mapping({}) == ReusePolicy()

    def test_unknown_key(self) -> None:
        with pytest.raises(PolicyError, match="unknown policy field 'ttl'"):
            ReusePolicy.from_mapping({"ttl": 60})


class TestDescribe:
    def test_example(self) -> None:
        policy = ReusePolicy(replicas=(1, 3), idle_ttl=300)
        assert policy.describe() == (
            "replicas=(1, 3) idle_ttl=300 concurrency=1 scaledown_ttl=30 scope=global"
        )

    def test_optional_fields_appear_when_set(self) -> None:
        policy = ReusePolicy(replicas=4, scope="run", prewarm=("db", "model"), timeout=2.5)
        assert policy.describe() == (
            "replicas=4 idle_ttl=30 concurrency=1 scaledown_ttl=30 scope=run"
            " prewarm=db,model timeout=2.5"
        )

    @pytest.mark.parametrize(
        "policy",
        [
            ReusePolicy(),
            ReusePolicy(replicas=(0, 1)),
            ReusePolicy(replicas=(1, 3), idle_ttl=300, concurrency=4, scope="run"),
            ReusePolicy(idle_ttl=timedelta(hours=1, minutes=30), scaledown_ttl=3600),
            ReusePolicy(idle_ttl=timedelta(seconds=30, milliseconds=250)),
            ReusePolicy(idle_ttl=timedelta(seconds=30, microseconds=7)),
            ReusePolicy(prewarm=("db",), timeout=5),
            ReusePolicy(timeout=0.125),
            ReusePolicy(timeout=1e-7),
            ReusePolicy(timeout=1e20),
        ],
    )
    def test_round_trips_through_parse(self, policy: ReusePolicy) -> None:
        assert ReusePolicy.parse(policy.describe()) == policy

    def test_short_ttls_round_trip(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(SHORT_TTL_ENV, "1")
        policy = ReusePolicy(idle_ttl=timedelta(milliseconds=200))
        assert "idle_ttl=200ms" in policy.describe()
        assert ReusePolicy.parse(policy.describe()) == policy


class TestParse:
    def test_full_example(self) -> None:
        policy = ReusePolicy.parse(
            "replicas=(1, 3) idle_ttl=300 concurrency=1 scope=run prewarm=db,model timeout=5"
        )
        assert policy == ReusePolicy(
            replicas=(1, 3),
            idle_ttl=300,
            concurrency=1,
            scope="run",
            prewarm=("db", "model"),
            timeout=5,
        )

    @pytest.mark.parametrize(
        ("text", "replicas"),
        [
            ("replicas=3", (3, 3)),
            ("replicas=(1,3)", (1, 3)),
            ("replicas=( 1 ,  3 )", (1, 3)),
            ("  replicas=(0, 2)  ", (0, 2)),
            ("\treplicas=(0, 2)\n", (0, 2)),
        ],
    )
    def test_replicas_forms(self, text: str, replicas: tuple[int, int]) -> None:
        assert ReusePolicy.parse(text).replicas == replicas

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("300", 300),
            ("300s", 300),
            ("5m", 300),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1h0m15s", 3615),
            ("2m30s", 150),
            ("30s500ms", 30.5),
        ],
    )
    def test_durations(self, text: str, seconds: float) -> None:
        policy = ReusePolicy.parse(f"idle_ttl={text} scaledown_ttl={text}")
        assert policy.idle_ttl_seconds == seconds
        assert policy.scaledown_ttl_seconds == seconds

    def test_base_supplies_unspecified_fields(self) -> None:
        base = ReusePolicy(scope="run", concurrency=2, prewarm=("db",))
        policy = ReusePolicy.parse("replicas=1", base=base)
        assert policy == ReusePolicy(replicas=1, scope="run", concurrency=2, prewarm=("db",))

    def test_empty_prewarm_clears_base(self) -> None:
        base = ReusePolicy(prewarm=("db",))
        assert ReusePolicy.parse("prewarm=", base=base).prewarm == ()

    def test_timeout_none_clears_base(self) -> None:
        base = ReusePolicy(timeout=5)
        assert ReusePolicy.parse("timeout=none", base=base).timeout is None

    @pytest.mark.parametrize(("text", "seconds"), [("5", 5.0), ("2.5", 2.5), ("1m", 60.0)])
    def test_timeout_forms(self, text: str, seconds: float) -> None:
        assert ReusePolicy.parse(f"timeout={text}").timeout == seconds

    @pytest.mark.parametrize(
        ("text", "field", "message"),
        [
            ("abc", "policy", "malformed token 'abc': expected key=value"),
            ("=3", "policy", "malformed token '=3': expected key=value"),
            ("replicas = 3", "policy", "malformed token 'replicas': expected key=value"),
            ("replicas=(1,", "policy", "malformed token 'replicas=(1,': expected key=value"),
            (
                "replicas=(1, 3)x",
                "policy",
                "malformed token 'replicas=(1, 3)x': expected key=value",
            ),
            (
                "replicas=(1, 3 idle_ttl=60",
                "policy",
                "malformed token 'replicas=(1, 3 idle_ttl=60': expected key=value",
            ),
            ("replicas=3)", "policy", "malformed token 'replicas=3)': expected key=value"),
            ("ttl=30", "ttl", "unknown key 'ttl' in 'ttl=30': known keys are replicas,"),
            ("replicas=2 replicas=3", "replicas", "duplicate key 'replicas' in 'replicas=3'"),
            (
                "replicas=two",
                "replicas",
                "replicas must be an int or (min, max), e.g. 2 or (1, 3), got 'two'",
            ),
            (
                "replicas=(1, 2, 3)",
                "replicas",
                "replicas must be an int or (min, max), e.g. 2 or (1, 3), got '(1, 2, 3)'",
            ),
            ("replicas=", "replicas", "replicas must be an int or (min, max)"),
            ("replicas=(3, 1)", "replicas", "replicas min must be <= max, got (3, 1)"),
            ("replicas=(0, 0)", "replicas", "replicas max must be at least 1, got (0, 0)"),
            ("idle_ttl=10", "idle_ttl", "idle_ttl must be at least 30 seconds, got 10"),
            ("idle_ttl=10s", "idle_ttl", "idle_ttl must be at least 30 seconds, got 10"),
            (
                "idle_ttl=5x",
                "idle_ttl",
                "idle_ttl must be a duration like 300, 300s, 5m or 1h30m, got '5x'",
            ),
            ("idle_ttl=1.5m", "idle_ttl", "idle_ttl must be a duration like"),
            ("idle_ttl=30m1h", "idle_ttl", "idle_ttl must be a duration like"),
            ("idle_ttl=", "idle_ttl", "idle_ttl must be a duration like"),
            (
                "scaledown_ttl=29",
                "scaledown_ttl",
                "scaledown_ttl must be at least 30 seconds, got 29",
            ),
            ("concurrency=x", "concurrency", "concurrency must be an int, got 'x'"),
            ("concurrency=0", "concurrency", "concurrency must be at least 1, got 0"),
            ("scope=session", "scope", "scope must be 'global' or 'run', got 'session'"),
            ("prewarm=db,,model", "prewarm", "prewarm must hold fixture names"),
            ("prewarm=db,db", "prewarm", "prewarm must not repeat a name"),
            ("timeout=0", "timeout", "timeout must be a finite number of seconds > 0, got 0"),
            ("timeout=nan", "timeout", "timeout must be a number of seconds, a duration or none"),
            ("timeout=soon", "timeout", "timeout must be a number of seconds, a duration or none"),
        ],
    )
    def test_malformed_text(self, text: str, field: str, message: str) -> None:
        with pytest.raises(PolicyError) as excinfo:
            ReusePolicy.parse(text)
        assert str(excinfo.value).startswith(message)
        assert excinfo.value.field == field


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("45", timedelta(seconds=45)),
        ("45s", timedelta(seconds=45)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("5ms", timedelta(milliseconds=5)),
        ("7us", timedelta(microseconds=7)),
        ("1m1s1ms1us", timedelta(minutes=1, seconds=1, milliseconds=1, microseconds=1)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "s", "1.5s", "-5", "5 m", "5d", "1m1h", "5sm"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=30), "30"),
        (timedelta(hours=1), "3600"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(microseconds=1500), "1500us"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_parse_field_unknown_key() -> None:
    with pytest.raises(PolicyError, match="unknown key 'nope'"):
        parse_field("nope", "1")
